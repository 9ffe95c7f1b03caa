"""Build the MM-CelebA-HQ layout (images/, masks/, dataset2.json) from the raw downloads.

    python scripts/prepare_mmceleba.py --celeba-hq CelebAMask-HQ/CelebA-HQ-img \
        --parts CelebAMask-HQ/CelebAMask-HQ-mask-anno --index dataset2.zip --out data/mmceleba

Re-running resumes: finished files are kept. Exits non-zero listing the ids left incomplete.
"""
import argparse
import os
import sys

from pixelface.core import cli
from pixelface.data.datasets import prepare_mmceleba


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--celeba-hq", required=True, help="folder of CelebA-HQ images {id}.jpg, any size")
    parser.add_argument("--parts", required=True,
                        help="CelebAMask-HQ-mask-anno folder, searched recursively for {id:05d}_{part}.png")
    parser.add_argument("--index", required=True, help="dataset2.json, or a .zip holding it")
    parser.add_argument("--out", required=True, help="output folder (point DATA.ROOT here)")
    parser.add_argument("--size", type=int, default=256, help="side of the written images and masks")
    parser.add_argument("--mask-format", choices=("color", "label"), default="color",
                        help="'color': palette RGB PNGs (DATA.MASK_KIND color); 'label': label-id PNGs")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="worker processes")
    args = parser.parse_args(argv)
    return cli.run(prepare, args)


def prepare(args) -> None:
    summary = prepare_mmceleba(args.celeba_hq, args.parts, args.index, args.out, args.size, args.mask_format,
                               args.workers, progress=True)
    print(f"{args.out}: {summary.total} images complete ({summary.written} files written, "
          f"{summary.skipped} already present)")


if __name__ == "__main__":
    sys.exit(main())
