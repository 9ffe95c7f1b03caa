"""CelebAMask-HQ segmentation masks: the 19-class palette and conversions between its forms.

A mask exists in three forms: a label map (H,W) of class ids 0..18, the colour rendering in the
CelebAMask-HQ palette that the reference networks consume, and a 19-channel one-hot.
"""
from __future__ import annotations

import numpy as np
import torch

LABELS = ("background", "skin", "nose", "eyeglasses", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear",
          "r_ear", "mouth", "u_lip", "l_lip", "hair", "hat", "earring", "necklace", "neck", "cloth")
NUM_CLASSES = len(LABELS)
LABEL_ID = {name: i for i, name in enumerate(LABELS)}

PALETTE = np.array([
    (0, 0, 0), (204, 0, 0), (76, 153, 0), (204, 204, 0), (51, 51, 255), (204, 0, 204), (0, 255, 255),
    (255, 204, 204), (102, 51, 0), (255, 0, 0), (102, 204, 0), (255, 255, 0), (0, 0, 153), (0, 0, 204),
    (255, 51, 153), (0, 204, 204), (0, 51, 0), (255, 153, 51), (0, 204, 0)], dtype=np.uint8)


class MaskError(ValueError):
    """A mask cannot be read as a CelebAMask-HQ label map."""


def label_to_color(labels: np.ndarray) -> np.ndarray:
    """(H,W) int label map -> (H,W,3) uint8 palette image."""
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise MaskError(f"label ids must lie in 0..{NUM_CLASSES - 1}, got {labels.min()}..{labels.max()}")
    return PALETTE[labels]


def color_to_label(rgb: np.ndarray, max_distance: float = 80.0, max_off_palette: float = 0.05,
                   name: str = "mask") -> np.ndarray:
    """(H,W,3) colour mask -> (H,W) uint8 label map, snapping each pixel to the nearest palette colour.

    JPEG masks carry compression noise at region edges, so small deviations are snapped; a mask with
    more than `max_off_palette` of its pixels farther than `max_distance` from every palette colour is
    not a CelebAMask-HQ mask and raises MaskError naming `name`.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise MaskError(f"{name}: expected an RGB colour mask, got array of shape {rgb.shape}")
    # Squared distances to the 19 palette colours, computed on unique colours only (masks have few);
    # packing RGB into one integer makes np.unique an order of magnitude faster than axis=0.
    packed = rgb.reshape(-1, 3).astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.int32)
    keys, inverse = np.unique(packed, return_inverse=True)
    colors = np.stack([keys >> 16, (keys >> 8) & 255, keys & 255], axis=1)
    d2 = ((colors[:, None, :] - PALETTE[None].astype(np.int32)) ** 2).sum(-1)
    nearest = d2.argmin(1)
    far = d2.min(1) > max_distance ** 2
    off_share = float(far[inverse.reshape(-1)].mean())
    if off_share > max_off_palette:
        raise MaskError(f"{name}: {off_share:.1%} of pixels are off the CelebAMask-HQ palette "
                        f"(more than {max_distance:g} from every palette colour; at most "
                        f"{max_off_palette:.1%} allowed)")
    return nearest[inverse.reshape(-1)].reshape(rgb.shape[:2]).astype(np.uint8)


def one_hot(labels: torch.Tensor) -> torch.Tensor:
    """(B,H,W) or (H,W) int64 label map -> float one-hot with classes on the channel axis."""
    oh = torch.nn.functional.one_hot(labels.long(), NUM_CLASSES).float()
    return oh.movedim(-1, -3)


def color_tensor(labels: torch.Tensor) -> torch.Tensor:
    """(..., H, W) label map -> (..., 3, H, W) palette colour mask in [-1, 1]."""
    palette = torch.as_tensor(PALETTE, dtype=torch.float32, device=labels.device) / 127.5 - 1.0
    return palette[labels.long()].movedim(-1, -3)
