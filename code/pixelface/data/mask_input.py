"""G's (and D's) mask input: the one rule that turns a label map into what the networks read.

Training, the evaluation, sample.py, the API and the editor all call generator_input, so a mask gives the same
input whichever of them reads it.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from pixelface.core.config import ConfigError
from pixelface.data.face_zones import face_zones
from pixelface.data.images import resize_and_crop, signed_tensor
from pixelface.data.masks import NUM_CLASSES, color_tensor, label_to_color, one_hot, resize_labels

# Face zones CelebAMask-HQ has no class for, given to the networks with MODEL.MASK_INPUT 'onehot_zones': blush and
# eye shadow are worn there, and a conv stack of a small generator hardly finds them from the classes alone.
ZONE_CHANNELS = ("cheeks", "eyelids")


def zone_channels(labels: torch.Tensor) -> torch.Tensor:
    """(H,W) label ids -> (len(ZONE_CHANNELS),H,W) float zone masks; all zero without both eyes."""
    zones = face_zones(labels.cpu().numpy())
    if zones is None:
        return torch.zeros(len(ZONE_CHANNELS), *labels.shape[-2:])
    return torch.from_numpy(np.stack([zones[name] for name in ZONE_CHANNELS]).astype(np.float32))


def generator_input(labels, size: int, mask_input: str, mask_resize: str) -> torch.Tensor:
    """The one rule that makes G's mask input from a label map of any size (H,W): (C,size,size) float, framed as
    images are (shorter side resized, centre crop). Training, the evaluation, sample.py, the API and the editor
    all call it, so a mask gives the same input whichever of them reads it.

    mask_input 'onehot' (MODEL.MASK_INPUT): the one-hot of the nearest-resized labels; 'onehot_zones': that, then
    one channel per ZONE_CHANNELS (the cheeks and eyelids placed from the eyes, pixelface.data.face_zones; zero
    without both eyes). 'color': palette colours
    in [-1,1], of the full-size map resized bilinearly when mask_resize (DATA.MASK_RESIZE) is 'bilinear' (the
    reference: colours blend at region borders), else of the nearest-resized labels. At the map's own size
    the colour rules agree exactly."""
    if mask_input in ("onehot", "onehot_zones"):
        resized = resize_labels(labels, size)
        return one_hot(resized) if mask_input == "onehot" else torch.cat([one_hot(resized), zone_channels(resized)])
    if mask_resize == "bilinear":
        labels = labels.cpu().numpy() if torch.is_tensor(labels) else np.asarray(labels)
        colours = Image.fromarray(label_to_color(labels.astype(np.int64)))
        return signed_tensor(resize_and_crop(colours, size, Image.BILINEAR))
    return color_tensor(resize_labels(labels, size))


def model_mask(labels, cfg) -> torch.Tensor:
    """generator_input at the configured model's size and settings: (C, MODEL.SIZE, MODEL.SIZE)."""
    return generator_input(labels, cfg.MODEL.SIZE, cfg.MODEL.MASK_INPUT, cfg.DATA.MASK_RESIZE)


def mask_channels_from_config(cfg) -> int:
    """3 for colour masks, 19 (one channel per CelebAMask-HQ class) for one-hot masks, 2 more with zones."""
    kind = cfg.MODEL.MASK_INPUT
    if kind == "color":
        return 3
    if kind == "onehot":
        return NUM_CLASSES
    if kind == "onehot_zones":
        return NUM_CLASSES + len(ZONE_CHANNELS)
    raise ConfigError(f"MODEL.MASK_INPUT = {kind!r}: expected 'color', 'onehot' or 'onehot_zones'")
