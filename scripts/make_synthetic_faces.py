"""Render the synthetic face dataset (synthface) in the MMCelebA layout.

    python scripts/make_synthetic_faces.py --out data/synthface --num 5000 --size 64 --seed 0

A relative --out (or --preview) is taken relative to the project home (pixelface.core.config.project_home: the
checkout root in a checkout). An --out folder that is not empty is left alone unless --force is given.
`--preview docs/synthface_grid.png` writes only the README figure (8 varied faces of --seed at 128 px with
their masks and first captions).
"""
import argparse
import sys
import time
from pathlib import Path

from pixelface.core import cli
from pixelface.core.config import default_config, project_home
from pixelface.core.files import atomic_write
from pixelface.data.synthface import preview_grid, write_dataset


def _from_home(path: str) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_home() / path


def main(argv=None) -> int:
    data = default_config().DATA
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/synthface", help="dataset folder (relative: to the project home)")
    parser.add_argument("--num", type=int, default=data.SYNTH_NUM, help="number of faces")
    parser.add_argument("--size", type=int, default=data.SYNTH_SIZE, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=data.SYNTH_SEED, help="renderer seed")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes")
    parser.add_argument("--force", action="store_true", help="render into a non-empty --out")
    parser.add_argument("--preview", metavar="PNG", help="write only a preview figure to this file")
    args = parser.parse_args(argv)
    return cli.run(preview if args.preview else render, args)


def preview(args) -> None:
    target = _from_home(args.preview)
    atomic_write(target, lambda tmp: preview_grid(args.seed).save(tmp, format="PNG"))
    print(f"wrote {target}")


def render(args) -> None:
    out = _from_home(args.out)
    start = time.perf_counter()
    write_dataset(out, args.num, args.size, args.seed, workers=args.workers, force=args.force)
    print(f"wrote {args.num} faces of {args.size} px to {out} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
