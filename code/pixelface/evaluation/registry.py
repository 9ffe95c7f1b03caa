"""The metric registry: name -> function of an EvalContext returning a dict of floats, in the manner of
stylegan2-ada's metric_main, with which of its results are better lower."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from pixelface.data.masks import LABEL_ID, accuracy_from_confusion
from pixelface.evaluation.context import EvalContext
from pixelface.evaluation.formulas import (clip_score, color_spread, feature_stats, frechet_distance, kid,
                                           pairwise_distance_diversity, r_precision, region_colors)
from pixelface.evaluation.measures import lpips_diversity, lpips_network


R_PRECISION_K = 100       # candidates per image (the true caption + 99 others), as AttnGAN's R-precision
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000
DIVERSITY_GROUPS = 50     # (mask, caption) pairs generated once per seed for the diversity metric


@dataclass(frozen=True)
class Metric:
    compute: Callable[[EvalContext], dict[str, float]]
    needs: tuple[str, ...]          # collectors fed in the main pass, and/or requirements checked first ("seeds")
    lower_is_better: tuple[str, ...]  # the results a smaller value of is a better model; the others: larger


METRICS: dict[str, Metric] = {}


def register_metric(name: str, needs: tuple[str, ...] = (), lower_is_better: tuple[str, ...] = ()):
    def register(fn):
        METRICS[name] = Metric(fn, needs, lower_is_better)
        return fn
    return register


def is_lower_better(result: str) -> bool:
    """Whether a smaller value of `result` (a key of some metric's results: "fid", "mask_miou") is better."""
    return any(result in metric.lower_is_better for metric in METRICS.values())


def _frechet_to_real(ctx: EvalContext, kind: str) -> float:
    real = ctx.real(kind)
    return frechet_distance(*feature_stats(ctx.collected[kind].numpy()), real["mu"], real["sigma"])


@register_metric("fid", needs=("inception",), lower_is_better=("fid",))
def _fid(ctx):
    """FID against the split's real images, torch-fidelity's Inception features."""
    return {"fid": _frechet_to_real(ctx, "inception")}


@register_metric("kid", needs=("inception",), lower_is_better=("kid",))
def _kid(ctx):
    """KID (mean and std over subsets) against the split's real images."""
    real = ctx.real("inception")["features"]
    ctx.settings["kid_subset_size"] = min(KID_SUBSET_SIZE, ctx.num, len(real))
    mean, std = kid(ctx.collected["inception"].numpy(), real, KID_SUBSETS, KID_SUBSET_SIZE)
    return {"kid": mean, "kid_std": std}


@register_metric("fid_clip", needs=("clip",), lower_is_better=("fid_clip",))
def _fid_clip(ctx):
    """Fréchet distance in the unit-normalised image-embedding space of the configured CLIP."""
    return {"fid_clip": _frechet_to_real(ctx, "clip")}


@register_metric("clip_score", needs=("clip", "captions"))
def _clip_score(ctx):
    """100 x cosine between each generated image and its caption."""
    return {"clip_score": clip_score(ctx.collected["clip"], ctx.collected["captions"])}


@register_metric("r_precision", needs=("clip", "captions"))
def _r_precision(ctx):
    """Share of images whose caption beats K-1 random other captions (K = 100, fewer for small sets)."""
    first_seen: dict[str, int] = {}
    caption_ids = torch.tensor([first_seen.setdefault(s["caption"], len(first_seen)) for s in ctx.samples])
    # Each image has at least (distinct captions - 1) rows with another text to draw distractors from.
    k = min(R_PRECISION_K, len(first_seen))
    ctx.settings["r_precision_k"] = k
    generator = torch.Generator().manual_seed(0)
    return {"r_precision": r_precision(ctx.collected["clip"], ctx.collected["captions"], k, generator, caption_ids)}


@register_metric("mask_acc", needs=("parser",))
def _mask_acc(ctx):
    """Pixel accuracy and mIoU of the face parser's labels of each generated image against its input mask."""
    scores = accuracy_from_confusion(ctx.collected["parser"])
    return {"mask_pixel_acc": scores["pixel_acc"], "mask_miou": scores["miou"]}


@register_metric("texture", needs=("texture",), lower_is_better=("texture_std", "texture_ratio"))
def _texture(ctx):
    """Mean pixel standard deviation inside the input mask's regions (eroded by a pixel; region_texture) of the
    generated faces and of their real source faces, and their ratio: noise or checkerboard texture raises it."""
    values = {kind: float(np.nanmean(v.numpy())) for kind, v in ctx.collected["texture"].items()}
    return {"texture_std": values["fake"], "texture_std_real": values["real"],
            "texture_ratio": values["fake"] / max(values["real"], 1e-8)}


@register_metric("attr_acc", needs=("attributes",))
def _attr_acc(ctx):
    """Per colour-only attribute (synthface scorer): share of generated faces that show what their caption
    states, over the faces whose caption states it and whose regions the scorer can judge; attr_acc is the
    mean over attributes and attr_acc_real the same for the real source faces (the scorer's ceiling).
    attr_unasked/<name>: share of generated faces showing a yes/no attribute their caption does not mention
    (settings' attr_unasked_real: the same for the real faces, the data's own rate)."""
    hits, unasked = ctx.collected["attributes"]["hits"], ctx.collected["attributes"]["unasked"]
    fake = {name: float(np.mean(h)) for name, h in sorted(hits["fake"].items())}
    real = {name: float(np.mean(h)) for name, h in sorted(hits["real"].items())}
    ctx.settings.update(attr_acc_real=real, attr_judged={name: len(h) for name, h in sorted(hits["fake"].items())},
                        attr_unasked_real={name: float(np.mean(h)) for name, h in sorted(unasked["real"].items())})
    shown_unasked = {f"attr_unasked/{name}": float(np.mean(h)) for name, h in sorted(unasked["fake"].items())}
    if not fake:
        ctx.settings["attr_acc"] = "no caption states a colour attribute the scorer can judge"
        return {}
    # per-colour entries ("hair_color/black") break hair_color down; they do not count again in the mean
    overall = [name for name in fake if "/" not in name]
    return {"attr_acc": float(np.mean([fake[n] for n in overall])),
            "attr_acc_real": float(np.mean([real[n] for n in overall])),
            **{f"attr_acc/{name}": value for name, value in fake.items()}, **shown_unasked}


@register_metric("fid_parser", needs=("parser_features",), lower_is_better=("fid_parser",))
def _fid_parser(ctx):
    """Fréchet distance to the split's real images in the face parser's features (ParserExtractor): a
    distribution distance in a space that neither the generator nor its CLIP loss was trained on."""
    return {"fid_parser": _frechet_to_real(ctx, "parser_features")}


@register_metric("sharpness", needs=("sharpness",))
def _sharpness(ctx):
    """High-frequency energy (formulas.high_frequency_map) of the generated faces and of their real source faces
    (mean per pixel), and their ratio: below 1 the samples are smoother than the data, above 1 noisier. The ratio
    is also given apart at the pixels on a region edge of the mask and inside the regions: soft edges and
    missing texture are different faults (on synthface nine tenths of the data's energy is at edges)."""
    fake, real = (ctx.collected["sharpness"][kind].double().sum(0) for kind in ("fake", "real"))
    count = len(ctx.collected["sharpness"]["fake"])
    ratios = [float(f) / max(float(r), 1e-8) for f, r in zip(fake, real)]
    return {"sharpness": float(fake[0]) / count, "sharpness_real": float(real[0]) / count,
            "sharpness_ratio": ratios[0], "sharpness_ratio/edges": ratios[1], "sharpness_ratio/interior": ratios[2],
            "sharpness_real/edge_share": float(real[1]) / max(float(real[1] + real[2]), 1e-8)}


SPREAD_SEEDS = 8                          # samples per (mask, caption) for seed_spread
SPREAD_REGIONS = ("background", "cloth")  # regions whose colours no caption states (synthface and MMCelebA)
SPREAD_REAL = 500                         # real faces whose colours set the data's spread


@register_metric("seed_spread")
def _seed_spread(ctx):
    """How much the colours that no caption fixes (background, clothes) vary across SPREAD_SEEDS seeds for one
    mask and caption, over how much they vary across the split's real faces: per region, the root mean
    per-channel variance of the region's mean colour, averaged over DIVERSITY_GROUPS (mask, caption) pairs;
    seed_spread is the mean of the regions' ratios. A generator that ignores z scores 0, one that draws these
    colours as the data does scores about 1."""
    ids = [LABEL_ID[name] for name in SPREAD_REGIONS]
    groups = range(min(ctx.num, DIVERSITY_GROUPS))
    per_seed = []
    for i in range(SPREAD_SEEDS):
        parts = [region_colors(images, batch["labels"], ids) for _, batch, images in ctx.generate(groups, ctx.seeds[0] + i)]
        per_seed.append(torch.cat(parts))                                           # (G,R,3)
    fake = color_spread(torch.stack(per_seed, 2))                                   # (G,R)
    reals = [region_colors(batch["image"].float(), batch["labels"], ids)
             for _, batch in ctx.batches(range(min(len(ctx.dataset), SPREAD_REAL)))]
    real = color_spread(torch.cat(reals).transpose(0, 1))                          # (R,)
    ctx.settings.update(seed_spread_groups=len(groups), seed_spread_seeds=SPREAD_SEEDS)
    out = {}
    for r, name in enumerate(SPREAD_REGIONS):
        out[f"seed_spread/{name}"] = float(np.nanmean(fake[:, r].numpy()) / real[r].item())
        out[f"seed_spread_real/{name}"] = real[r].item()
    out["seed_spread"] = float(np.mean([out[f"seed_spread/{name}"] for name in SPREAD_REGIONS]))
    return out


@register_metric("diversity", needs=("seeds",))
def _diversity(ctx):
    """Mean pairwise distance between images of the same mask and caption across the seeds: LPIPS when the
    lpips package and its weights are present, else cosine distance of CLIP image embeddings."""
    groups = min(ctx.num, DIVERSITY_GROUPS)
    images_by_seed = [torch.cat([images for _, _, images in ctx.generate(range(groups), seed)])
                      for seed in ctx.seeds]
    lpips_net = lpips_network(ctx.device)
    ctx.settings.update(diversity_groups=groups, diversity_space="lpips-alex" if lpips_net else "clip-cosine")
    if lpips_net is not None:
        return {"diversity": lpips_diversity(lpips_net, torch.stack(images_by_seed, 1), ctx.device)}
    clip = ctx.extractor("clip")
    return {"diversity": pairwise_distance_diversity(torch.stack([clip(x) for x in images_by_seed], 1))}
