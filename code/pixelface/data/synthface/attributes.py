"""The CelebA-style attribute dict every synthetic face is drawn from: ATTRIBUTES (names and allowed
values), COLOR_ONLY (the attributes that change pixels but not the label map), the per-gender priors
sample_attributes draws from, check_attributes, and HAIR_RGB, the hair colours that both the renderer
paints and the scorer reads back."""
from __future__ import annotations

import numpy as np

ATTRIBUTES = {
    "gender": ("female", "male"),
    "hair_color": ("black", "brown", "blond", "gray"),
    "hair_style": ("straight", "wavy", "bangs", "bald"),
    **{name: (False, True) for name in (
        "smiling", "mouth_open", "lipstick", "heavy_makeup", "rosy_cheeks", "pale_skin", "eyeglasses",
        "hat", "earrings", "necklace", "beard", "bushy_eyebrows", "arched_eyebrows", "narrow_eyes",
        "big_nose", "big_lips")},
}
COLOR_ONLY = ("hair_color", "lipstick", "heavy_makeup", "rosy_cheeks", "pale_skin", "beard")

# P(True) per gender for the boolean attributes (CelebA-like correlations, softened so that every
# attribute is common enough in a 20% test split to be measured).
_PRIORS = {
    "female": dict(smiling=.5, mouth_open=.5, lipstick=.55, heavy_makeup=.4, rosy_cheeks=.2, pale_skin=.12,
                   eyeglasses=.08, hat=.07, earrings=.35, necklace=.2, beard=0., bushy_eyebrows=.12,
                   arched_eyebrows=.4, narrow_eyes=.12, big_nose=.12, big_lips=.3),
    "male": dict(smiling=.45, mouth_open=.45, lipstick=.03, heavy_makeup=.02, rosy_cheeks=.05, pale_skin=.08,
                 eyeglasses=.15, hat=.1, earrings=.05, necklace=.04, beard=.4, bushy_eyebrows=.25,
                 arched_eyebrows=.12, narrow_eyes=.12, big_nose=.4, big_lips=.2),
}
_HAIR_COLOR_P = {"female": (.28, .32, .3, .1), "male": (.35, .33, .14, .18)}
_HAIR_STYLE_P = {"female": (.45, .35, .2, 0.), "male": (.55, .25, .08, .12)}


def sample_attributes(rng: np.random.Generator) -> dict:
    """A random attribute dict over ATTRIBUTES (a hat is never drawn on a bald head: it would hide it)."""
    gender = ATTRIBUTES["gender"][int(rng.random() < 0.5)]
    attrs = {"gender": gender,
             "hair_color": str(rng.choice(ATTRIBUTES["hair_color"], p=_HAIR_COLOR_P[gender])),
             "hair_style": str(rng.choice(ATTRIBUTES["hair_style"], p=_HAIR_STYLE_P[gender]))}
    for name, p in _PRIORS[gender].items():
        attrs[name] = bool(rng.random() < p)
    if attrs["hair_style"] == "bald":
        attrs["hat"] = False
    return attrs


def check_attributes(attrs: dict):
    """Raise ValueError naming the first key or value outside ATTRIBUTES."""
    for name, allowed in ATTRIBUTES.items():
        if name not in attrs:
            raise ValueError(f"attribute dict lacks {name!r} (expected one of {allowed})")
        if attrs[name] not in allowed:
            raise ValueError(f"attribute {name} = {attrs[name]!r}, expected one of {allowed}")
    if attrs["gender"] == "female" and attrs["beard"]:
        raise ValueError("attribute beard = True needs gender = 'male'")

# ----------------------------------------------------------------------------------------------------
# Colours shared by the renderer and the scorer (RGB, 0..255)

HAIR_RGB = {"black": (32, 28, 28), "brown": (112, 70, 40), "blond": (226, 190, 108), "gray": (172, 170, 168)}
