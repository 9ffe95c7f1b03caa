"""Export a trained generator for sharing: G_ema as safetensors plus its config as JSON, no pickle.

    pixelface-export --ckpt runs/synthface-00000/checkpoints/ckpt-000024000.pt --out models/synthface_g

(in a checkout also `python scripts/export_model.py ...`). The folder holds g_ema.safetensors and pixelface.json
(the run's config, which pins the CLIP weights file by sha256, and where it came from). Every --ckpt option
(sample.py, manipulate.py, evaluate.py) accepts such a folder wherever it takes a training checkpoint. Existing
files are kept unless --force is given.
"""
import sys

from pixelface.commands.launch import launch
from pixelface.core import cli
from pixelface.networks.checkpoint import export_model


def execute(args) -> int:
    """Run the command on parsed arguments (pixelface.commands.parsers.export) -> exit code."""
    return cli.run(export, args)


def export(args) -> None:
    # Once the checkpoint is read, the folder is claimed until we exit: another export into it stops.
    written = export_model(args.ckpt, args.out, overwrite=args.force,
                           before_writing=lambda targets: cli.check_free(targets, args.force))
    print("wrote " + " and ".join(str(p) for p in written))


def main(argv=None) -> int:
    return launch("export", argv)


if __name__ == "__main__":
    sys.exit(main())
