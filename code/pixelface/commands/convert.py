"""Convert the official PixelFace+ checkpoint (the reference trainer's ckpt_XXXX.pth) into a checkpoint of
this project, usable by sample.py, manipulate.py, evaluate.py and code/main.py --resume.

    pixelface-convert --in ckpt_0150.pth --out models/pixelface_mmceleba256.pt

(in a checkout also `python scripts/convert_reference.py ...`, the same command).

The file is read weights-only (a pickle carrying code is refused). Every key must be accounted for:
a missing, unknown or mis-shaped one stops the conversion with one error naming them.
"""
import sys
from pathlib import Path

from pixelface.commands.launch import launch
from pixelface.core import cli, errors
from pixelface.core.config import load_config
from pixelface.training.convert import convert_file


def execute(args) -> int:
    """Run the command on parsed arguments (pixelface.commands.parsers.convert) -> exit code."""
    return cli.run(convert, args)


def main(argv=None) -> int:
    return launch("convert", argv)


def convert(args) -> None:
    if Path(args.out).resolve() == Path(args.src).resolve():
        raise errors.InputError(f"--out {args.out} is the official file being converted (--in); write the converted "
                                f"checkpoint to another file")
    if Path(args.out).exists() and not args.force:        # before the (slow) conversion; again at the claim
        raise FileExistsError(f"{args.out} exists; pass --force to overwrite it")
    # Once the official file is read and converted, --out's folder is claimed until we exit.
    summary = convert_file(args.src, args.out, load_config(args.cfg, args.set),
                           before_writing=lambda dst: cli.check_free([dst], args.force))
    print(f"converted {args.src} -> {args.out}")
    for line in summary.lines():
        print(f"  {line}")


if __name__ == "__main__":
    sys.exit(main())
