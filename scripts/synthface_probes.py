"""Three measurements behind docs/diagnosis.md, each isolating one suspect of a weak synthface run.

    python scripts/synthface_probes.py --cfg cfg/synthface.yml [--ckpt runs/.../ckpt.pt] [--num 300]

* clip: the small CLIP's zero-shot hair colour on real test faces ("this person has <colour> hair"), per colour:
  can the text encoder that feeds G and its CLIP loss tell the colours apart at all?
* ceiling: a face painted flat in each mask region's dataset-wide median colour (no text, no z): its L1 to the
  real faces, and what the face parser and the texture measure make of it. This is the regression floor that
  a generator ignoring text and z reaches, and proof that crisp layout alone meets the mask targets.
* cast: the small CLIP on real black-haired test faces as they are and with their hair tinted green-olive
  (R -7, G +20, B -2, the cast G gives black hair): does the CLIP loss reward the cast?
* noise (with --ckpt): region texture of that checkpoint's G_ema with its noise inputs random, constant and
  off, and its learned noise strengths: is the texture injected noise?
* attention (with --ckpt): the share of the first GCMF stage's attention that hair pixels give the colour
  word of captions naming a hair colour: does G's text route look at the colour at all?
* response (with --ckpt): for test faces whose caption does not mention a colour attribute, the share the scorer
  reads as showing it when generated from the caption alone and from the caption after a sentence asking for it
  ("This person has pale skin. <caption>"), same mask and seed: does G follow the phrase at all, or paint the
  attribute whatever the caption says?
* edges (with --ckpt): the samples' high-frequency energy on the edge pixels of each mask class (formulas.region_edges)
  over the real faces', with each class's share of the real faces' edge energy: which edges are soft?
* border (with --ckpt): in 8-bit levels, how much brighter the background's outer 2 pixels are than its band 4-8
  pixels in (a rim or frame along the image border), and how far the background's colour strays within one image
  (blotches), samples and real faces: does G paint a frame?
"""
import argparse
import json
import re
import sys

import torch
import torch.nn.functional as F

from pixelface.core import cli
from pixelface.core.config import load_config, resolve_path
from pixelface.data.datasets import FaceDataset
from pixelface.data.images import to_uint8
from pixelface.data.masks import LABEL_ID, NUM_CLASSES, accuracy_from_confusion, confusion_matrix
from pixelface.data.synthface import predict_attributes
from pixelface.evaluation.formulas import high_frequency_map, region_edges, region_texture
from pixelface.evaluation.metrics import default_parser_path
from pixelface.evaluation.parser import load_parser
from pixelface.networks import generation
from pixelface.networks.checkpoint import load_generator
from pixelface.networks.text_encoder import TextEncoder

COLOURS = ["black", "brown", "blond", "gray"]
OLIVE_CAST = (-7, 20, -2)   # 8-bit RGB shift: the data's black hair (27, 24, 24) -> G's (20, 44, 22)


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
        images = g_ema(batch["mask"], feats.words, [z], word_padding=feats.padding, noise_mode=mode)
        out[f"texture/noise_{mode}"] = region_texture(images.clamp(-1, 1), batch["labels"]).nanmean().item()
    return out


@torch.no_grad()
def cast_probe(cfg, batch) -> dict:
    encoder = TextEncoder.from_config(cfg)
    prompts = encoder.embed_text([f"this person has {c} hair" for c in COLOURS])
    attributes = json.loads((resolve_path(cfg, "DATA.ROOT") / "attributes.json").read_text())
    black = [i for i, image_id in enumerate(batch["id"]) if attributes[image_id]["hair_color"] == "black"
             and attributes[image_id]["hair_style"] != "bald"]
    images, hair = batch["image"][black], (batch["labels"][black] == LABEL_ID["hair"]).unsqueeze(1)
    tinted = (images + hair * torch.tensor(OLIVE_CAST).view(1, 3, 1, 1) / 127.5).clamp(-1, 1)
    out = {}
    for name, x in (("as_is", images), ("olive", tinted)):
        sims = F.normalize(encoder.encode_image(x, normalize=True), dim=-1) @ prompts.t()
        probs = (sims * encoder.clip.logit_scale.exp()).softmax(-1)
        out[f"cast/{name}/p_black"] = probs[:, 0].mean().item()
        out[f"cast/{name}/sim_black_minus_brown"] = (sims[:, 0] - sims[:, 1]).mean().item()
    return out


@torch.no_grad()
def attention_probe(ckpt: str, batch) -> dict:
    g_ema, cfg = load_generator(ckpt)
    encoder = TextEncoder.from_config(cfg)
    shares = []
    for k, caption in enumerate(batch["caption"]):
        found = re.search(r"\b(black|brown|blond|gray) hair\b", caption)
        hair = batch["labels"][k:k + 1] == LABEL_ID["hair"]
        if not found or hair.sum() < 20:
            continue
        feats = encoder.encode([caption])
        words = [encoder.tokenizer.decoder.get(int(t), "") for t in feats.tokens[0, :feats.words.shape[1]]]
        colour = [i for i, w in enumerate(words) if w.startswith(found.group(1))]
        z = torch.randn(1, cfg.MODEL.STYLE_DIM, generator=torch.Generator().manual_seed(k))
        _, extras = g_ema(batch["mask"][k:k + 1],
                          feats.words, [z], word_padding=feats.padding, return_attention=True)
        attention = extras["attention"][0][0]                                   # (R², T), first stage
        res = int(attention.shape[0] ** 0.5)
        inside = F.interpolate(hair[None].float(), size=(res, res), mode="area").flatten() > 0.5
        if inside.any() and colour:
            shares.append(attention[inside][:, colour].sum(-1).mean().item())
    return {"attention/colour_word_share": sum(shares) / max(len(shares), 1),
            "attention/uniform_share": 1 / cfg.TEXT.MAX_WORDS, "attention/faces": float(len(shares))}


RESPONSE_PHRASES = {"pale_skin": "This person has pale skin.", "rosy_cheeks": "This person has rosy cheeks.",
                    "heavy_makeup": "This person wears heavy makeup.", "lipstick": "This person wears lipstick."}


def response_probe(ckpt: str, batch) -> dict:
    g_ema, cfg = load_generator(ckpt)
    encoder = TextEncoder.from_config(cfg)
    results = {}
    for attribute, phrase in RESPONSE_PHRASES.items():
        word = phrase.split()[-1].rstrip(".") if attribute != "pale_skin" else "pale"
        picked = [k for k, c in enumerate(batch["caption"]) if word not in c.lower()]
        masks, captions = batch["mask"][picked], [batch["caption"][k] for k in picked]
        shown = {}
        # put first: the text encoder keeps the first TEXT.MAX_WORDS tokens, so an appended sentence could be cut
        for name, asked in (("without", captions), ("with", [f"{phrase} {c}" for c in captions])):
            images = generation.sample(g_ema, encoder, cfg, masks, asked, picked, amp="none")
            pixels = to_uint8(images).permute(0, 2, 3, 1).numpy()
            reads = [predict_attributes(pixels[i], batch["labels"][k].numpy()).get(attribute)
                     for i, k in enumerate(picked)]
            judged = [r for r in reads if r is not None]
            shown[name] = sum(judged) / max(len(judged), 1)
        results[f"response/{attribute}/shown_without"] = shown["without"]
        results[f"response/{attribute}/shown_with"] = shown["with"]
    return results


@torch.no_grad()
def edges_probe(ckpt: str, batch) -> dict:
    g_ema, cfg = load_generator(ckpt)
    images = generation.sample(g_ema, TextEncoder.from_config(cfg), cfg, batch["mask"], list(batch["caption"]),
                               list(range(len(batch["caption"]))), batch_size=50, amp="none")
    edges, labels = region_edges(batch["labels"]), batch["labels"]
    fake, real = high_frequency_map(images), high_frequency_map(batch["image"])
    out = {}
    for name, k in LABEL_ID.items():
        on_edge = edges & (labels == k)
        if on_edge.sum() >= 100:
            out[f"edges/{name}/ratio"] = (fake[on_edge].sum() / real[on_edge].sum()).item()
            out[f"edges/{name}/share_real"] = (real[on_edge].sum() / real[edges].sum()).item()
    return out


def band_mean(levels: torch.Tensor, background: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """(B,) mean of (B,H,W) `levels` over the background pixels lo..hi-1 pixels in from the image border."""
    size = levels.shape[-1]
    depth = torch.arange(size)
    depth = torch.minimum(depth, size - 1 - depth)
    inset = torch.minimum(depth[:, None], depth[None, :])          # pixels to the nearest border
    inside = background & (inset >= lo) & (inset < hi)
    return (levels * inside).sum((1, 2)) / inside.sum((1, 2)).clamp(min=1)


@torch.no_grad()
def border_probe(ckpt: str, batch) -> dict:
    g_ema, cfg = load_generator(ckpt)
    fake = generation.sample(g_ema, TextEncoder.from_config(cfg), cfg, batch["mask"], list(batch["caption"]),
                             list(range(len(batch["caption"]))), batch_size=50, amp="none")
    background = batch["labels"] == LABEL_ID["background"]
    out = {}
    for name, images in (("samples", fake), ("real", batch["image"])):
        levels = (images.float().clamp(-1, 1) + 1) * 127.5
        rim = band_mean(levels.mean(1), background, 0, 2) - band_mean(levels.mean(1), background, 4, 8)
        spread = [levels[i][:, background[i]].std(1).mean() for i in range(len(levels)) if background[i].sum() > 1]
        out[f"border/{name}/rim_levels"] = rim.mean().item()
        out[f"border/{name}/background_std_levels"] = torch.stack(spread).mean().item()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True, help="the config whose dataset, CLIP and parser are probed")
    parser.add_argument("--ckpt", help="a checkpoint for the noise and attention probes")
    parser.add_argument("--num", type=int, default=300, help="faces per split used")
    args = parser.parse_args(argv)
    return cli.run(probe, args)


def probe(args) -> None:
    cfg = load_config(args.cfg)
    test = first_items(cfg, "test", args.num)
    results = {**clip_probe(cfg, test), **cast_probe(cfg, test),
               **ceiling_probe(cfg, first_items(cfg, "train", args.num), test)}
    if args.ckpt:
        results.update(noise_probe(args.ckpt, test))
        results.update(attention_probe(args.ckpt, test))
        results.update(response_probe(args.ckpt, test))
        results.update(edges_probe(args.ckpt, test))
        results.update(border_probe(args.ckpt, test))
    for key, value in results.items():
        print(f"{key}: {value:.4f}")


if __name__ == "__main__":
    sys.exit(main())
