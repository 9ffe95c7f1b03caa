"""Three measurements behind docs/diagnosis.md, each isolating one suspect of a weak synthface run.

    python scripts/synthface_probes.py --cfg cfg/synthface.yml [--ckpt runs/.../ckpt.pt] [--num 300]

* clip: the small CLIP's zero-shot hair colour on real test faces ("this person has <colour> hair"), per colour:
  can the text encoder that feeds G and its CLIP loss tell the colours apart at all?
* ceiling: a face painted flat in each mask region's dataset-wide median colour (no text, no z): its L1 to the
  real faces, and what the face parser and the texture measure make of it. This is the regression floor that
  a generator ignoring text and z reaches, and proof that crisp layout alone meets the mask targets.
* noise (with --ckpt): region texture of that checkpoint's G_ema with its noise inputs random, constant and
  off, and its learned noise strengths: is the texture injected noise?
"""
import argparse
import json
import sys

import torch
import torch.nn.functional as F

from pixelface import cli
from pixelface.checkpoint import load_generator
from pixelface.config import load_config, resolve_path
from pixelface.datasets import FaceDataset
from pixelface.masks import NUM_CLASSES
from pixelface.masks import accuracy_from_confusion, confusion_matrix
from pixelface.metrics import default_parser_path, region_texture
from pixelface.parser import load_parser
from pixelface.text_encoder import TextEncoder
from pixelface.trainer import mask_input

COLOURS = ["black", "brown", "blond", "gray"]


def first_items(cfg, split: str, num: int) -> dict:
    dataset = FaceDataset(cfg, split, train=False)
    return torch.utils.data.default_collate([dataset[i] for i in range(min(num, len(dataset)))])


@torch.no_grad()
def clip_probe(cfg, batch) -> dict:
    encoder = TextEncoder.from_config(cfg)
    prompts = encoder.embed_text([f"this person has {c} hair" for c in COLOURS])
    images = F.normalize(encoder.encode_image(batch["image"], normalize=True), dim=-1)
    predicted = (images @ prompts.t()).argmax(1)
    attributes = json.loads((resolve_path(cfg, "DATA.ROOT") / "attributes.json").read_text())
    hits = {c: [] for c in COLOURS}
    for image_id, guess in zip(batch["id"], predicted.tolist()):
        truth = attributes[image_id]
        if truth.get("hair_style") != "bald" and truth.get("hair_color") in hits:
            hits[truth["hair_color"]].append(COLOURS[guess] == truth["hair_color"])
    return {f"clip_zero_shot/{c}": sum(h) / max(len(h), 1) for c, h in hits.items()}


@torch.no_grad()
def ceiling_probe(cfg, train, test) -> dict:
    labels = train["labels"]
    medians = torch.zeros(NUM_CLASSES, 3)
    for k in range(NUM_CLASSES):
        inside = labels == k
        if inside.any():
            medians[k] = train["image"].permute(1, 0, 2, 3)[:, inside].median(dim=1).values
    painted = medians[test["labels"]].permute(0, 3, 1, 2)              # (B,3,H,W) flat regions
    parser = load_parser(default_parser_path(cfg), "cpu")
    out = {"median_render/l1": (painted - test["image"]).abs().mean().item(),
           "median_render/texture": region_texture(painted, test["labels"]).nanmean().item(),
           "real/texture": region_texture(test["image"], test["labels"]).nanmean().item()}
    for name, images in (("median_render", painted), ("real", test["image"])):
        scores = accuracy_from_confusion(confusion_matrix(parser.predict(images), test["labels"]))
        out.update({f"{name}/mask_pixel_acc": scores["pixel_acc"], f"{name}/mask_miou": scores["miou"]})
    return out


@torch.no_grad()
def noise_probe(ckpt: str, batch) -> dict:
    g_ema, cfg = load_generator(ckpt)
    g_ema.eval()
    feats = TextEncoder.from_config(cfg).encode(list(batch["caption"]))
    z = torch.randn(len(batch["caption"]), cfg.MODEL.STYLE_DIM, generator=torch.Generator().manual_seed(0))
    out = {"noise_weight/max_abs": max(p.abs().item() for n, p in g_ema.named_parameters() if "noise_weight" in n)}
    for mode in ("random", "const", "none"):
        images = g_ema(mask_input(batch, cfg), feats.words, [z], word_padding=feats.padding, noise_mode=mode)
        out[f"texture/noise_{mode}"] = region_texture(images.clamp(-1, 1), batch["labels"]).nanmean().item()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True, help="the config whose dataset, CLIP and parser are probed")
    parser.add_argument("--ckpt", help="a checkpoint for the noise probe")
    parser.add_argument("--num", type=int, default=300, help="faces per split used")
    args = parser.parse_args(argv)
    return cli.run(probe, args)


def probe(args) -> None:
    cfg = load_config(args.cfg)
    test = first_items(cfg, "test", args.num)
    results = {**clip_probe(cfg, test), **ceiling_probe(cfg, first_items(cfg, "train", args.num), test)}
    if args.ckpt:
        results.update(noise_probe(args.ckpt, test))
    for key, value in results.items():
        print(f"{key}: {value:.4f}")


if __name__ == "__main__":
    sys.exit(main())
