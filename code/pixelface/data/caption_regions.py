"""Which mask regions a caption fixes the colour of: CelebA's colour attributes, as MMCelebA's captions (and the
synthetic faces' imitations of them) name them, mapped to CelebAMask-HQ regions.

A caption that says "brown hair" fixes the hair's colour; "lipstick" the lips'; "pale skin", "rosy cheeks",
"heavy makeup" and "beard" (or "no beard") the skin's. Everything a caption does not name, background, clothes,
skin tone, an unnamed hair colour, is left to z. TRAIN.RECON_NAMED_WEIGHT uses this to pull only those regions
toward the real face of the same mask and caption.

With zones (TRAIN.RECON_NAMED_ZONES), blush and eye shadow are placed where they are worn: "rosy cheeks" names
the cheeks and "heavy makeup" the eyelids (pixelface.data.face_zones), so a few pixels of colour weigh as much as
the hair instead of a tenth of the skin.
"""
from __future__ import annotations

import re

import numpy as np
import torch

from pixelface.data.face_zones import MAKEUP_ZONES, ZONES, face_zones
from pixelface.data.masks import LABEL_ID

# (pattern over the cleaned caption, regions whose colour it fixes)
CAPTION_REGIONS = (
    (re.compile(r"\b(black|brown|blond|blonde|gray|grey|red|auburn|white) hair\b"), ("hair",)),
    (re.compile(r"\blipstick\b"), ("u_lip", "l_lip")),
    (re.compile(r"\b(pale skin|rosy cheeks|heavy makeup|makeup|beard|mustache|goatee|sideburns)\b"), ("skin",)),
)
CAPTION_ZONES = CAPTION_REGIONS[:2] + (
    (re.compile(r"\b(pale skin|beard|mustache|goatee|sideburns)\b"), ("skin",)),
    (re.compile(r"\brosy cheeks\b"), ("cheeks",)),
    (re.compile(r"\b(heavy makeup|makeup)\b"), ("eyelids",)),
)


def named_regions(caption: str, zones: bool = False) -> list[str]:
    """The region names whose colour `caption` states, in CAPTION_REGIONS (or with `zones`, CAPTION_ZONES)
    order, each once."""
    text = caption.lower()
    table = CAPTION_ZONES if zones else CAPTION_REGIONS
    found = [region for pattern, regions in table if pattern.search(text) for region in regions]
    return list(dict.fromkeys(found))


def named_makeup_zones(captions: list[str]) -> torch.Tensor:
    """(B, len(MAKEUP_ZONES)) float: 1 where the caption names the make-up worn in that zone (lips: lipstick,
    cheeks: rosy cheeks, eyelids: makeup), else 0."""
    flags = np.zeros((len(captions), len(MAKEUP_ZONES)), np.float32)
    for b, caption in enumerate(captions):
        named = named_regions(caption, zones=True)
        flags[b] = ["u_lip" in named, "cheeks" in named, "eyelids" in named]
    return torch.from_numpy(flags)


def named_zone_weights(captions: list[str], share: float) -> torch.Tensor:
    """(len(MAKEUP_ZONES),) the weight, against 1 for every other face, that gives the faces whose caption names
    a zone's make-up `share` of that zone's total weight over `captions` (the training split's): with a fraction
    p of them naming it, share/(1-share)·(1-p)/p. A zone no caption names, or every caption does, weighs 1.

    An attribute worn by one face in ten and one worn by one in three then tip the make-up zone term's compromise
    toward the faces that ask by the same share, where one fixed weight tips the common one furthest."""
    named = named_makeup_zones(captions).double().mean(0)
    odds = share / (1 - share) * (1 - named) / named.clamp(min=1e-12)
    return torch.where((named > 0) & (named < 1), odds, torch.ones_like(odds)).float()


def _region_mask(labels: np.ndarray, region: str, zones: dict | None) -> np.ndarray:
    if region in ZONES:
        return zones[region] if zones is not None else np.zeros(labels.shape, bool)
    return labels == LABEL_ID[region]


def named_region_masks(captions: list[str], labels: torch.Tensor, zones: bool = False) -> torch.Tensor:
    """(B,R,H,W) float masks, one per region any caption names (R = the distinct names in the batch), each
    zero for the samples whose caption does not name it (or, for a face zone, whose label map lacks an eye).
    labels (B,H,W) CelebAMask-HQ ids."""
    named = [named_regions(c, zones) for c in captions]
    names = list(dict.fromkeys(r for regions in named for r in regions))
    masks = np.zeros((labels.shape[0], len(names), *labels.shape[1:]), np.float32)
    for b, regions in enumerate(named):
        label_map = labels[b].cpu().numpy()
        placed = face_zones(label_map) if any(r in ZONES for r in regions) else None
        for region in regions:
            masks[b, names.index(region)] = _region_mask(label_map, region, placed)
    return torch.from_numpy(masks).to(labels.device)
