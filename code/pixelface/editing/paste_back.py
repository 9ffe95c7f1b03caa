"""Putting an edited aligned crop back into the photo it was cut from.

The crop is warped back with the inverse of its Alignment and blended in through a soft mask: the face and
hair regions of its label map (every region but background and clothes), feathered so no seam shows, and
faded to zero before the crop's own edges. Every photo pixel where that mask is zero keeps its exact bytes.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pixelface.data.face_alignment import Alignment, gaussian_blur
from pixelface.data.masks import LABEL_ID

KEPT_REGIONS = ("background", "cloth")   # what the photo keeps; every other region comes from the edit
FEATHER = 0.02                           # Gaussian sigma of the mask's edge, as a share of the crop side


def face_weight(labels, feather: float = FEATHER) -> torch.Tensor:
    """(S,S) float in [0,1]: 1 on the face and hair, a feathered edge, 0 within 3 sigma of the crop's border.
    labels: one (S,S) label map, or several (a list or (K,S,S)): the union of their faces and hair (an edit of
    the mask replaces the old hair as well as painting the new)."""
    labels = torch.as_tensor(np.asarray(labels)) if not isinstance(labels, (list, tuple)) else \
        torch.stack([torch.as_tensor(np.asarray(m)) for m in labels])
    size = labels.shape[-1]
    region = ~torch.isin(labels, torch.tensor([LABEL_ID[name] for name in KEPT_REGIONS]))
    region = region.reshape(-1, size, size).any(0)
    sigma = max(feather * size, 0.5)
    weight = gaussian_blur(region.float()[None, None], sigma)[0, 0]
    margin = 3 * sigma
    centres = torch.arange(size, dtype=torch.float32) + 0.5
    edge = ((torch.minimum(centres, size - centres) - margin) / margin).clamp(0, 1)
    return (weight * edge[None, :] * edge[:, None]).clamp(0, 1)


def _photo_box(alignment: Alignment) -> tuple[int, int, int, int]:
    """Pixel bounds (x0, y0, x1, y1) of the crop's footprint in the photo, clipped to it."""
    corners = alignment.corners()
    w, h = alignment.photo_size
    x0, y0 = np.floor(corners.min(0)).astype(int)
    x1, y1 = np.ceil(corners.max(0)).astype(int)
    return max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)


def _warp_back(layers: torch.Tensor, alignment: Alignment, box: tuple[int, int, int, int]) -> torch.Tensor:
    """(C,S,S) crop-space layers sampled at the photo pixels of `box`: (C, y1-y0, x1-x0), zero outside the crop."""
    x0, y0, x1, y1 = box
    ys, xs = np.meshgrid(np.arange(y0, y1) + 0.5, np.arange(x0, x1) + 0.5, indexing="ij")
    uv = alignment.photo_to_crop(np.stack([xs, ys], -1).reshape(-1, 2)).reshape(*xs.shape, 2)
    grid = torch.from_numpy(uv / alignment.size * 2 - 1).float()[None]
    return F.grid_sample(layers[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def photo_weight(labels, alignment: Alignment, feather: float = FEATHER) -> np.ndarray:
    """(H,W) float: how much of the edit each photo pixel takes (0 everywhere the photo stays as it is)."""
    w, h = alignment.photo_size
    weight = np.zeros((h, w), dtype=np.float32)
    x0, y0, x1, y1 = box = _photo_box(alignment)
    if x1 > x0 and y1 > y0:
        weight[y0:y1, x0:x1] = _warp_back(face_weight(labels, feather)[None], alignment, box)[0].numpy()
    return weight


def paste_back(photo: np.ndarray, crop: np.ndarray, labels, alignment: Alignment,
               feather: float = FEATHER) -> np.ndarray:
    """(H,W,3) uint8 photo with the (S,S,3) uint8 edited crop blended in where its face and hair are."""
    if photo.shape[:2] != (alignment.photo_size[1], alignment.photo_size[0]):
        raise ValueError(f"photo is {photo.shape[1]}x{photo.shape[0]}, the alignment was made for "
                         f"{alignment.photo_size[0]}x{alignment.photo_size[1]}")
    if crop.shape[:2] != (alignment.size, alignment.size):
        raise ValueError(f"crop is {crop.shape[1]}x{crop.shape[0]}, the alignment's crop is {alignment.size} square")
    x0, y0, x1, y1 = box = _photo_box(alignment)
    out = photo.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    layers = torch.cat([torch.from_numpy(np.ascontiguousarray(crop)).float().permute(2, 0, 1),
                        face_weight(labels, feather)[None]])
    warped = _warp_back(layers, alignment, box)
    edited, weight = warped[:3].permute(1, 2, 0).numpy(), warped[3].numpy()[..., None]
    region = photo[y0:y1, x0:x1].astype(np.float32)
    blended = np.clip(np.round(region + weight * (edited - region)), 0, 255).astype(np.uint8)
    out[y0:y1, x0:x1] = np.where(weight > 0, blended, photo[y0:y1, x0:x1])
    return out
