"""Learning curves of several runs in one figure, from each run folder's metrics.jsonl (TRAIN.EVAL_KIMG > 0).

    python scripts/compare_runs.py runs/curve/icnr-00000 runs/curve/icnr-recon-100-00000 --out docs/diagnosis_curves.png

One panel per measure (mask pixel accuracy, mask mIoU, black hair obeyed, region texture / real), one line per run,
the default run's targets dashed. A run is labelled by its folder name, or by NAME=FOLDER.
"""
import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pixelface import cli  # noqa: E402

PANELS = [("mask pixel accuracy", "mask_pixel_acc", 0.85), ("mask mIoU", "mask_miou", 0.45),
          ("black hair obeyed", "attr_acc/hair_color/black", 0.9), ("region texture / real", "texture_ratio", 1.5)]


def read_run(spec: str) -> tuple[str, list[dict]]:
    label, _, folder = spec.rpartition("=")
    path = Path(folder) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (was the run trained with TRAIN.EVAL_KIMG > 0?)")
    return label or Path(folder).name, [json.loads(line) for line in path.read_text().splitlines()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders, or NAME=FOLDER")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    return cli.run(plot, args)


def plot(args) -> None:
    runs = [read_run(spec) for spec in args.runs]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(3.2 * len(PANELS), 2.8))
    for ax, (title, key, target) in zip(axes, PANELS):
        for label, rows in runs:
            points = [(r["kimg"], r[key]) for r in rows if key in r]
            if points:
                ax.plot(*zip(*points), marker=".", label=label)
        ax.axhline(target, ls="--", c="gray", lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("kimg", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    plt.close(fig)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
