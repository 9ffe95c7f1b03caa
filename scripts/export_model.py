"""Export a trained generator for sharing: G_ema as safetensors plus its config as JSON, no pickle.

    python scripts/export_model.py --ckpt runs/synthface-00000/checkpoints/ckpt-000018000.pt --out models/synthface_g

The folder holds g_ema.safetensors and pixelface.json (the run's config, which pins the CLIP weights file
by sha256, and where it came from). Every --ckpt option (sample.py, manipulate.py, evaluate.py) accepts
such a folder wherever it takes a training checkpoint. Existing files are kept unless --force is given.
"""
import argparse
import sys

from pixelface.core import cli
from pixelface.networks.checkpoint import export_model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="training checkpoint (its G_ema and config are exported)")
    parser.add_argument("--out", required=True, help="folder to write g_ema.safetensors and pixelface.json into")
    parser.add_argument("--force", action="store_true", help="replace an earlier export in --out")
    args = parser.parse_args(argv)
    return cli.run(lambda: print("wrote " + " and ".join(
        str(p) for p in export_model(args.ckpt, args.out, overwrite=args.force))))


if __name__ == "__main__":
    sys.exit(main())
