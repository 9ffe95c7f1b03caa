"""Figures of a training run: mask | caption | sample at the start | sample at the end, loss curves, and
the learning curve of the periodic evaluation.

    python scripts/report_run.py runs/synthface-00000 --out docs/default_run

writes <out>_samples.png and <out>_losses.png from the run folder's samples/ and stats.jsonl, and
<out>_metrics.png from metrics.jsonl when the run evaluated itself (TRAIN.EVAL_KIMG > 0).
"""
import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from pixelface.core import cli, errors  # noqa: E402

GRID_PAD = 2  # torchvision.utils.make_grid's default padding, used by trainer.save_grid


def grid_cells(path: Path, count: int, rows: int = 1) -> list[list[np.ndarray]]:
    """Split a make_grid PNG of `rows` rows x `count` columns back into its images."""
    grid = np.asarray(Image.open(path).convert("RGB"))
    size = (grid.shape[1] - GRID_PAD) // count - GRID_PAD
    cell = lambda r, c: grid[GRID_PAD + r * (size + GRID_PAD):][:size, GRID_PAD + c * (size + GRID_PAD):][:, :size]
    return [[cell(r, c) for c in range(count)] for r in range(rows)]


def samples_figure(run: Path, out: Path, items: int) -> None:
    samples = run / "samples"
    captions = (samples / "captions.txt").read_text().splitlines()
    fakes = sorted(samples.glob("fakes-*.png"))
    if len(fakes) < 2:
        raise errors.InputError(f"{samples} holds fewer than two fakes-*.png grids")
    n = len(captions)
    masks, reals = grid_cells(samples / "reals.png", n, rows=2)
    start, end = grid_cells(fakes[0], n)[0], grid_cells(fakes[-1], n)[0]
    kimg = lambda p: int(p.stem.split("-")[1]) / 1000
    items = min(items, n)
    fig, axes = plt.subplots(items, 5, figsize=(11, 1.9 * items),
                             gridspec_kw={"width_ratios": [1, 1, 1, 1, 2.6]})
    titles = ["input mask", "real (reference)", f"G_ema at {kimg(fakes[0]):g} kimg",
              f"G_ema at {kimg(fakes[-1]):g} kimg", "caption"]
    for i in range(items):
        for j, img in enumerate([masks[i], reals[i], start[i], end[i]]):
            axes[i, j].imshow(img)
        axes[i, 4].text(0, 0.5, _wrap(captions[i], 48), va="center", fontsize=9)
        for j in range(5):
            axes[i, j].axis("off")
            if i == 0:
                axes[i, j].set_title(titles[j], fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _label(ax, title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("kimg", fontsize=8)
    ax.tick_params(labelsize=7)


def losses_figure(run: Path, out: Path) -> None:
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    keys = [k for k in ("loss/D", "loss/G", "loss/CLIP", "loss/recon", "loss/R1", "loss/PL", "scores/real",
                              "scores/fake")
            if any(k in r for r in rows)]
    fig, axes = plt.subplots(1, len(keys), figsize=(2.6 * len(keys), 2.4))
    for ax, key in zip(np.atleast_1d(axes), keys):
        pts = [(r["kimg"], r[key]) for r in rows if key in r]
        ax.plot(*zip(*pts))
        _label(ax, key)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


# Learning-curve panels: (title, metrics.jsonl keys, the ceiling or target drawn as a dashed line)
METRIC_PANELS = [
    ("mask pixel accuracy", ["mask_pixel_acc"], 0.85),
    ("mask mIoU", ["mask_miou"], 0.45),
    ("hair colour obeyed", ["attr_acc/hair_color/black", "attr_acc/hair_color/brown",
                            "attr_acc/hair_color/blond", "attr_acc/hair_color/gray"], 0.9),
    ("attributes obeyed (attr_acc)", ["attr_acc"], None),
    ("region texture / real", ["texture_ratio"], 1.5),
    ("fid_clip", ["fid_clip"], None),
]


def metrics_figure(run: Path, out: Path) -> None:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    panels = [p for p in METRIC_PANELS if any(k in r for r in rows for k in p[1])]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.7 * len(panels), 2.6))
    for ax, (title, keys, target) in zip(np.atleast_1d(axes), panels):
        for key in keys:
            pts = [(r["kimg"], r[key]) for r in rows if key in r]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=key.rsplit("/", 1)[-1] if len(keys) > 1 else None)
        if target is not None:
            ax.axhline(target, ls="--", c="gray", lw=0.8)
        if len(keys) > 1:
            ax.legend(fontsize=6)
        _label(ax, title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _wrap(text: str, width: int) -> str:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join(lines + [line])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="run folder (runs/<name>-NNNNN)")
    p.add_argument("--out", type=Path, required=True, help="output prefix, e.g. docs/default_run")
    p.add_argument("--items", type=int, default=6, help="test items in the samples figure")
    args = p.parse_args(argv)
    return cli.run(report, args)


def report(args) -> None:
    for needed in ("samples/captions.txt", "samples/reals.png", "stats.jsonl"):
        if not (args.run / needed).is_file():
            raise errors.InputError(f"{args.run / needed} is missing (is {args.run} a run folder?)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    samples_figure(args.run, Path(f"{args.out}_samples.png"), args.items)
    losses_figure(args.run, Path(f"{args.out}_losses.png"))
    written = [f"{args.out}_samples.png", f"{args.out}_losses.png"]
    if (args.run / "metrics.jsonl").is_file():
        metrics_figure(args.run, Path(f"{args.out}_metrics.png"))
        written.append(f"{args.out}_metrics.png")
    print("wrote " + ", ".join(written))


if __name__ == "__main__":
    sys.exit(main())
