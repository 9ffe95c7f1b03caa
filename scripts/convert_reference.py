"""Convert the official PixelFace+ checkpoint (the reference trainer's ckpt_XXXX.pth) into a checkpoint of
this project, usable by sample.py, manipulate.py, evaluate.py and code/main.py --resume.

    python scripts/convert_reference.py --in ckpt_0150.pth --out models/pixelface_mmceleba256.pt

The file is read weights-only (a pickle carrying code is refused). Every key must be accounted for:
a missing, unknown or mis-shaped one stops the conversion with one error naming them.
"""
import argparse
import sys
from pathlib import Path

from pixelface.core import cli
from pixelface.core.config import load_config
from pixelface.training.convert import convert_file


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in", dest="src", required=True, help="the reference checkpoint (ckpt_XXXX.pth)")
    parser.add_argument("--out", required=True, help="the checkpoint to write (.pt)")
    parser.add_argument("--cfg", default="mmceleba",
                        help="config that builds the networks: a YAML file or a config name (default mmceleba)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.SUB=VALUE",
                        help="config override (repeatable)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")
    args = parser.parse_args(argv)

    return cli.run(convert, args)


def convert(args) -> None:
    if Path(args.out).exists() and not args.force:
        raise FileExistsError(f"{args.out} exists; pass --force to overwrite it")
    summary = convert_file(args.src, args.out, load_config(args.cfg, args.set))
    print(f"converted {args.src} -> {args.out}")
    for line in summary.lines():
        print(f"  {line}")


if __name__ == "__main__":
    sys.exit(main())
