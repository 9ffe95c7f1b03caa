"""Which mask regions a caption fixes the colour of: CelebA's colour attributes, as MMCelebA's captions (and the
synthetic faces' imitations of them) name them, mapped to CelebAMask-HQ regions.

A caption that says "brown hair" fixes the hair's colour; "lipstick" the lips'; "pale skin", "rosy cheeks",
"heavy makeup" and "beard" (or "no beard") the skin's. Everything a caption does not name, background, clothes,
skin tone, an unnamed hair colour, is left to z. TRAIN.RECON_NAMED_WEIGHT uses this to pull only those regions
toward the real face of the same mask and caption.
"""
from __future__ import annotations

import re

import torch

from pixelface.data.masks import LABEL_ID

# (pattern over the cleaned caption, regions whose colour it fixes)
CAPTION_REGIONS = (
    (re.compile(r"\b(black|brown|blond|blonde|gray|grey|red|auburn|white) hair\b"), ("hair",)),
    (re.compile(r"\blipstick\b"), ("u_lip", "l_lip")),
    (re.compile(r"\b(pale skin|rosy cheeks|heavy makeup|makeup|beard|mustache|goatee|sideburns)\b"), ("skin",)),
)


def named_regions(caption: str) -> list[str]:
    """The region names whose colour `caption` states, in CAPTION_REGIONS order, each once."""
    text = caption.lower()
    found = [region for pattern, regions in CAPTION_REGIONS if pattern.search(text) for region in regions]
    return list(dict.fromkeys(found))


def named_region_masks(captions: list[str], labels: torch.Tensor) -> torch.Tensor:
    """(B,R,H,W) float masks, one per region any caption names (R = the distinct names in the batch), each
    zero for the samples whose caption does not name it. labels (B,H,W) CelebAMask-HQ ids."""
    names = list(dict.fromkeys(r for c in captions for r in named_regions(c)))
    masks = torch.zeros(labels.shape[0], len(names), *labels.shape[1:], device=labels.device)
    for b, caption in enumerate(captions):
        for region in named_regions(caption):
            masks[b, names.index(region)] = (labels[b] == LABEL_ID[region]).float()
    return masks
