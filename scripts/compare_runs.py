"""Learning curves of several runs in one figure, from each run folder's metrics.jsonl (TRAIN.EVAL_KIMG > 0) or
another file of the same format (--file curve.jsonl, written by scripts/learning_curve.py).

    python scripts/compare_runs.py runs/curve/icnr-00000 runs/curve/icnr-recon-100-00000 --out docs/diagnosis_curves.png
    python scripts/compare_runs.py "faithful=runs/synthface_faithful-00000" "default=runs/synthface-00000" \
        --file curve.jsonl --panels quality --out docs/quality_curves.png

One panel per measure, one line per run, the default run's targets dashed. --panels layout (the default): mask
pixel accuracy, mask mIoU, black hair obeyed, region texture / real; --panels quality: mask accuracy and mIoU,
each colour attribute obeyed, seed spread, sharpness / data and the parser-space distance. A run is labelled by
its folder name, or by NAME=FOLDER.
"""
import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pixelface.core import cli  # noqa: E402

PANEL_SETS = {
    "layout": [("mask pixel accuracy", "mask_pixel_acc", (0.85,)), ("mask mIoU", "mask_miou", (0.45,)),
               ("black hair obeyed", "attr_acc/hair_color/black", (0.9,)),
               ("region texture / real", "texture_ratio", (1.5,))],
    "quality": [("mask pixel accuracy", "mask_pixel_acc", (0.95,)), ("mask mIoU", "mask_miou", (0.55,)),
                ("hair colour obeyed", "attr_acc/hair_color", (0.9,)), ("lipstick obeyed", "attr_acc/lipstick", (0.8,)),
                ("heavy makeup obeyed", "attr_acc/heavy_makeup", (0.8,)),
                ("rosy cheeks obeyed", "attr_acc/rosy_cheeks", (0.8,)), ("pale skin obeyed", "attr_acc/pale_skin", (0.8,)),
                ("beard obeyed", "attr_acc/beard", (0.8,)), ("seed spread / data", "seed_spread", (0.7,)),
                ("sharpness / data", "sharpness_ratio", (0.8, 1.25)), ("parser-space FD", "fid_parser", ())],
}


def read_run(spec: str, name: str = "metrics.jsonl") -> tuple[str, list[dict]]:
    label, _, folder = spec.rpartition("=")
    path = Path(folder) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (was the run trained with TRAIN.EVAL_KIMG > 0, or "
                                f"scripts/learning_curve.py run on it?)")
    return label or Path(folder).name, [json.loads(line) for line in path.read_text().splitlines()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders, or NAME=FOLDER")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--file", default="metrics.jsonl", help="file of each run folder to read")
    parser.add_argument("--panels", default="layout", choices=sorted(PANEL_SETS), help="which measures to plot")
    args = parser.parse_args(argv)
    return cli.run(plot, args)


def plot(args) -> None:
    runs = [read_run(spec, args.file) for spec in args.runs]
    panels = PANEL_SETS[args.panels]
    columns = min(len(panels), 4)
    rows_count = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows_count, columns, figsize=(3.2 * columns, 2.8 * rows_count), squeeze=False)
    axes = axes.ravel()
    for ax in axes[len(panels):]:
        ax.axis("off")
    for ax, (title, key, targets) in zip(axes, panels):
        for label, rows in runs:
            points = [(r["kimg"], r[key]) for r in rows if key in r]
            if points:
                ax.plot(*zip(*points), marker=".", label=label)
        for target in targets:
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
