"""Zones of a face that CelebAMask-HQ has no class for (cheeks, eyelids, chin, forehead), placed from a label
map alone: the eye centroids give the face's own frame, so pose and scale do not matter.

Make-up and blush live in these zones, so both the attribute scorer (which reads them back from pixels) and
the caption-named region loss (which pulls only them toward the real face) place them here, from one frame.
"""
from __future__ import annotations

import numpy as np
import torch

from pixelface.data.masks import LABEL_ID

ZONES = ("reference", "cheeks", "eyelids", "chin")
# Where make-up is worn, each judged against the face's own skin ("reference"): the zone loss's regions
MAKEUP_ZONES = ("lips", "cheeks", "eyelids")


class FaceFrame:
    """Pixel coordinates in units of the eye distance: u along the eye axis, v down the face."""

    def __init__(self, labels: np.ndarray):
        ys, xs = np.mgrid[: labels.shape[0], : labels.shape[1]] + 0.5
        self.eyes = [np.array([xs[labels == LABEL_ID[c]].mean(), ys[labels == LABEL_ID[c]].mean()])
                     for c in ("r_eye", "l_eye")]
        axis = self.eyes[1] - self.eyes[0]
        self.d = max(float(np.hypot(*axis)), 1e-6)
        self.along = axis / self.d
        self.down = np.array([-self.along[1], self.along[0]])
        self.xs, self.ys = xs, ys

    def coords(self, origin) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = self.xs - origin[0], self.ys - origin[1]
        return (dx * self.along[0] + dy * self.along[1]) / self.d, (dx * self.down[0] + dy * self.down[1]) / self.d


def face_frame(labels: np.ndarray) -> FaceFrame | None:
    """The face's frame, or None when the label map lacks either eye (a profile, a crop without a face)."""
    both_eyes = all((labels == LABEL_ID[c]).sum() >= 2 for c in ("l_eye", "r_eye"))
    return FaceFrame(labels) if both_eyes else None


def face_zones(labels: np.ndarray, frame: FaceFrame | None = None) -> dict[str, np.ndarray] | None:
    """(H,W) label map -> {zone: (H,W) bool} for ZONES, or None without both eyes.

    reference: forehead and temples, away from blush, eye shadow and beard (the face's own skin colour);
    cheeks: a disc below each eye; eyelids: the skin (or glasses) just above each eye; chin: the skin below
    the lips."""
    frame = frame if frame is not None else face_frame(labels)
    if frame is None:
        return None
    skin = labels == LABEL_ID["skin"]
    skinlike = skin | (labels == LABEL_ID["eyeglasses"])
    u, v = frame.coords((frame.eyes[0] + frame.eyes[1]) / 2)
    cheeks = np.zeros_like(skin)
    eyelids = np.zeros_like(skin)
    around_eyes = np.zeros_like(skin)
    for side, eye in ((-1, frame.eyes[0]), (1, frame.eyes[1])):
        eu, ev = frame.coords(eye)
        cheeks |= np.hypot(eu - side * 0.075, ev - 0.34) < 0.17
        eyelids |= (np.abs(eu) < 0.22) & (ev > -0.3) & (ev < 0)
        around_eyes |= (np.abs(eu) < 0.5) & (ev > -0.4) & (ev < 0.8)
    lips = np.isin(labels, [LABEL_ID["u_lip"], LABEL_ID["l_lip"], LABEL_ID["mouth"]])
    lips_bottom = v[lips].max() if lips.any() else 1.2
    return {"reference": (skin & (v < 0.3) & ~around_eyes) | (skin & (v < -0.45)),
            "cheeks": skin & cheeks, "eyelids": skinlike & eyelids,
            "chin": skin & (v > lips_bottom + 0.08) & (np.abs(u) < 0.45)}


def makeup_zone_masks(labels: torch.Tensor) -> torch.Tensor:
    """(B,H,W) CelebAMask-HQ ids -> (B,1+len(MAKEUP_ZONES),H,W) float masks: the reference skin, then the lips,
    cheeks and eyelids; all zero for a face without both eyes (no frame to place them in)."""
    label_maps = labels.cpu().numpy()
    masks = np.zeros((label_maps.shape[0], 1 + len(MAKEUP_ZONES), *label_maps.shape[1:]), np.float32)
    for b, label_map in enumerate(label_maps):
        zones = face_zones(label_map)
        if zones is None:
            continue
        zones["lips"] = np.isin(label_map, [LABEL_ID["u_lip"], LABEL_ID["l_lip"]])
        masks[b] = np.stack([zones[name] for name in ("reference",) + MAKEUP_ZONES])
    return torch.from_numpy(masks).to(labels.device)
