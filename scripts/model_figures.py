"""Figures of a trained generator on a synthface-style dataset: what a person checks first.

    python scripts/model_figures.py --ckpt runs/synthface-00000/checkpoints/ckpt-000024000.pt --out docs/default_model

writes
  <out>_vs_data.png     16 test faces of the data beside G_ema's samples for their masks and captions (seed 0);
  <out>_seeds.png       one mask and caption, 8 seeds: what z changes (background, clothes, skin where the
                        caption leaves it free);
  <out>_attributes.png  one mask and seed, the caption with and without each colour attribute it can state
                        (hair colours, lipstick, heavy makeup, rosy cheeks, pale skin; beard on a man's mask).
Existing files are kept unless --force is given.
"""
import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from pixelface.core import cli, errors  # noqa: E402
from pixelface.core.config import resolve_path  # noqa: E402
from pixelface.core.files import atomic_write  # noqa: E402
from pixelface.data.datasets import FaceDataset  # noqa: E402
from pixelface.data.images import to_uint8  # noqa: E402
from pixelface.data.masks import color_tensor  # noqa: E402
from pixelface.networks.checkpoint import load_generator  # noqa: E402
from pixelface.networks.generation import image_seed, sample  # noqa: E402
from pixelface.networks.text_encoder import TextEncoder  # noqa: E402

SEED_STRIP = 8
# (column title, caption) for the attribute strip; {s} is the subject pronoun of the chosen face.
ATTRIBUTE_CAPTIONS = [
    ("as asked: brown hair", "{s} has brown hair"),
    ("+ lipstick", "{s} has brown hair and is wearing lipstick"),
    ("+ heavy makeup", "{s} has brown hair and is wearing heavy makeup"),
    ("+ rosy cheeks", "{s} has brown hair and rosy cheeks"),
    ("+ pale skin", "{s} has brown hair and pale skin"),
    ("black hair", "{s} has black hair"),
    ("blond hair", "{s} has blond hair"),
    ("gray hair", "{s} has gray hair"),
]
BEARD_CAPTIONS = [("he: no beard", "he has brown hair he has no beard"), ("he: + beard", "he has brown hair he has beard")]


def pick_face(dataset, attributes: dict, gender: str) -> int:
    """Index of the first test face of `gender` whose mask shows hair, both eyes and closed lips without glasses
    or a hat; else the first face of that gender; else the first face."""
    def clear(a):
        return a["hair_style"] != "bald" and not (a["eyeglasses"] or a["hat"] or a["mouth_open"])
    genders = [attributes[image_id]["gender"] for image_id in dataset.ids]
    for wanted in (lambda i: genders[i] == gender and clear(attributes[dataset.ids[i]]),
                   lambda i: genders[i] == gender):
        found = next((i for i in range(len(dataset)) if wanted(i)), None)
        if found is not None:
            return found
    return 0


def to_pictures(images: torch.Tensor) -> list:
    return list(to_uint8(images.clamp(-1, 1)).permute(0, 2, 3, 1).numpy())


def draw_rows(rows: list[tuple[str, list]], titles: list[str], out: Path, cell: float = 1.25) -> None:
    """A figure of labelled rows of equally sized pictures, with column titles."""
    columns = max(len(pictures) for _, pictures in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(cell * columns + 1.4, cell * len(rows) + 0.4),
                             squeeze=False)
    for r, (label, pictures) in enumerate(rows):
        for c in range(columns):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(pictures):
                ax.imshow(pictures[c])
            if r == 0 and c < len(titles):
                ax.set_title(titles[c], fontsize=7)
        axes[r, 0].text(-0.08, 0.5, label, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def vs_data_figure(g, text, cfg, dataset, out: Path, count: int = 16) -> None:
    items = [dataset[i % len(dataset)] for i in range(count)]
    masks = torch.stack([it["mask"] for it in items])
    captions = [it["caption"] for it in items]
    fakes = to_pictures(sample(g, text, cfg, masks, captions, [image_seed(0, k) for k in range(count)]))
    reals = to_pictures(torch.stack([it["image"] for it in items]))
    half = count // 2
    rows = [("data", reals[:half]), ("samples", fakes[:half]), ("data", reals[half:]), ("samples", fakes[half:])]
    draw_rows(rows, [], out)


def seeds_figure(g, text, cfg, item: dict, out: Path) -> None:
    masks = item["mask"][None].expand(SEED_STRIP, -1, -1, -1)
    fakes = to_pictures(sample(g, text, cfg, masks, [item["caption"]] * SEED_STRIP, list(range(SEED_STRIP))))
    mask, real = to_pictures(torch.stack([color_tensor(item["labels"]), item["image"]]))
    draw_rows([(_wrap(item["caption"]), [mask, real] + fakes)], ["mask", "data"] + [f"seed {s}" for s in range(SEED_STRIP)],
              out)


def attributes_figure(g, text, cfg, woman: dict, man: dict, out: Path, seed: int = 0) -> None:
    """Row 'she': the woman's mask, then one picture per ATTRIBUTE_CAPTIONS entry; row 'he': the man's mask,
    then his mask without and with a beard (BEARD_CAPTIONS). Same seed everywhere."""
    rows = []
    for label, item, captions in (("she", woman, [c.format(s="she") for _, c in ATTRIBUTE_CAPTIONS]),
                                  ("he: no beard, + beard", man, [c for _, c in BEARD_CAPTIONS])):
        masks = item["mask"][None].expand(len(captions), -1, -1, -1)
        fakes = to_pictures(sample(g, text, cfg, masks, captions, [seed] * len(captions)))
        rows.append((label, to_pictures(color_tensor(item["labels"])[None]) + fakes))
    draw_rows(rows, ["mask"] + [t for t, _ in ATTRIBUTE_CAPTIONS], out)


def _wrap(text: str, width: int = 28) -> str:
    words, lines = text.split(), [""]
    for w in words:
        if len(lines[-1]) + len(w) + 1 > width:
            lines.append("")
        lines[-1] = f"{lines[-1]} {w}".strip()
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="training checkpoint or exported model folder")
    parser.add_argument("--out", required=True, help="path prefix of the three PNG files")
    parser.add_argument("--force", action="store_true", help="overwrite existing figures")
    args = parser.parse_args(argv)
    return cli.run(figures, args)


def figures(args) -> None:
    out = Path(args.out)
    paths = [Path(f"{out}_{name}.png") for name in ("vs_data", "seeds", "attributes")]
    g, cfg = load_generator(args.ckpt)   # a missing or foreign checkpoint is named before any folder is made
    cli.check_free(paths, args.force)
    text = TextEncoder.from_config(cfg)
    dataset = FaceDataset(cfg, "test", train=False)
    attributes_file = resolve_path(cfg, "DATA.ROOT") / "attributes.json"
    if not attributes_file.is_file():
        raise errors.InputError(f"{attributes_file} does not exist: the attribute strip needs a synthface dataset")
    attributes = json.loads(attributes_file.read_text())
    woman = dataset[pick_face(dataset, attributes, "female")]
    man = dataset[pick_face(dataset, attributes, "male")]
    vs_data_figure(g, text, cfg, dataset, paths[0])
    seeds_figure(g, text, cfg, woman, paths[1])
    attributes_figure(g, text, cfg, woman, man, paths[2])
    print("\n".join(str(p) for p in paths))


if __name__ == "__main__":
    sys.exit(main())
