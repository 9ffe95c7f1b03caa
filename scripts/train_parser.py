"""Train a compact U-Net face parser on a dataset's (image, mask) pairs.

    python scripts/train_parser.py --cfg cfg/synthface.yml --out models/parser_synthface.pt

Prints the parser's pixel accuracy and mean IoU on the real test images: the ceiling for the mask accuracy
of generated faces. scripts/evaluate.py looks for models/parser_<DATA.NAME>.pt by default. An existing file
is never overwritten unless --force is given.
"""
import argparse
import sys

from pixelface.commands.parsers import DEVICE_HELP
from pixelface.core import cli
from pixelface.core.config import load_config
from pixelface.core.devices import resolve_device
from pixelface.evaluation.parser import train_parser


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", help="config file (its DATA section picks the dataset); default: the defaults")
    parser.add_argument("--out", required=True, help="parser file to write, e.g. models/parser_synthface.pt")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--epochs", type=int, default=3, help="passes over the train images")
    parser.add_argument("--batch", type=int, default=8, help="images per step")
    parser.add_argument("--lr", type=float, default=1e-2, help="peak Adam learning rate (cosine decay to 0)")
    parser.add_argument("--width", type=int, default=8, help="channels of the first U-Net level")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--force", action="store_true", help="overwrite an existing parser file")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch < 1 or args.lr <= 0 or args.width < 1:
        parser.error("need --epochs >= 1, --batch >= 1, --lr > 0 and --width >= 1")
    return cli.run(train, args)


def train(args) -> None:
    cfg = load_config(args.cfg, args.set)
    metrics = train_parser(cfg, args.out, epochs=args.epochs, batch_size=args.batch, lr=args.lr,
                           width=args.width, device=resolve_device(args.device), overwrite=args.force)
    print(f"test split: pixel accuracy {metrics['test_pixel_acc']:.4f}, mIoU {metrics['test_miou']:.4f} "
          f"({metrics['train_seconds']:.0f} s of training); saved {args.out}")


if __name__ == "__main__":
    sys.exit(main())
