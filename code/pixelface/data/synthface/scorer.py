"""Attribute scorer: reads the colour-only attributes back from pixels inside the label map's regions
(predict_attributes, score_attributes), so an evaluation can ask whether a generated face obeyed its
caption. Regions are placed in the face's own frame (pixelface.data.face_zones), so pose does not matter,
and colours are compared as chromaticity against the face's own reference skin, so lighting and skin
tone do not either."""
from __future__ import annotations

import numpy as np

from pixelface.data.face_zones import face_zones
from pixelface.data.masks import LABEL_ID
from .attributes import COLOR_ONLY, HAIR_RGB

_MIN_PIXELS = 4           # regions smaller than this are not judged
# Decision thresholds, set between the two classes' ranges measured on 600 rendered faces at 64 px
# after a JPEG round trip; with them every attribute scores 100% on 500 other faces at 64, 128 and
# 256 px (JPEG 4:4:4), and >= 98% average with 4:2:0 chroma or a 0.5 px blur.
_PALE_SATURATION = 0.19   # reference skin (max-min)/max: pale <= 0.13, other tones >= 0.26
_LIPSTICK_RED = 0.17      # 75th percentile of (r-g)/sum on the lips minus skin: <= 0.15 vs >= 0.23
_BLUSH_RED = 0.045        # cheeks minus skin, (r-g)/sum: plain <= 0.02, rosy >= 0.07
_EYESHADOW_BLUE = 0.085   # 75th percentile of (b-g)/sum above the eyes minus skin: <= 0.07 vs >= 0.11
_BEARD_DISTANCE = 1.0     # chin vs skin in units of (0.3 log luminance, 0.03 chroma): <= 0.7 vs >= 1.3


def _chroma(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB -> (..., 3): log luminance, (r-g)/sum, (b-g)/sum (lighting changes only the first)."""
    rgb = np.asarray(rgb, np.float64) + 1.0
    total = rgb.sum(-1)
    return np.stack([np.log(total / 3), (rgb[..., 0] - rgb[..., 1]) / total, (rgb[..., 2] - rgb[..., 1]) / total], -1)


def _median(image: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    if mask.sum() < _MIN_PIXELS:
        return None
    return np.median(image[mask].astype(np.float64), 0)


def _color_features(image: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Median RGB of each region the scorer looks at (regions under _MIN_PIXELS are left out), plus
    the make-up statistics of the thin regions as chromaticities."""
    regions = {"hair": labels == LABEL_ID["hair"],
               "lips": np.isin(labels, [LABEL_ID["u_lip"], LABEL_ID["l_lip"]])}
    zones = face_zones(labels)
    if zones is not None:
        regions.update(zones)
    found = {}
    for name, mask in regions.items():
        median = _median(image, mask)
        if median is not None:
            found[name] = median
    # Thin regions: glasses frames can cross the eyeshadow zone, and at 64 px most lip pixels are
    # blended with skin; the reddest / bluest quarter of the region carries the make-up if any.
    if "lips" in found:
        found["lips_red"] = np.percentile(_chroma(image[regions["lips"]])[:, 1], 75)
    if "eyelids" in found:
        found["eyeshadow_blue"] = np.percentile(_chroma(image[regions["eyelids"]])[:, 2], 75)
    return found


def _hair_prototypes() -> dict[str, np.ndarray]:
    """Expected hair-region medians: strands and shading darken the base colour by about 15%."""
    return {name: _chroma(np.array(rgb) * 0.85) for name, rgb in HAIR_RGB.items()}


_HAIR_SCALE = np.array([0.35, 0.04, 0.04])   # luminance vs chroma units in the hair distance


def predict_attributes(image: np.ndarray, labels: np.ndarray) -> dict:
    """The COLOR_ONLY attributes read from pixels inside the label map's regions, for faces whose
    regions are large enough to judge (a bald head has no hair colour; a face without both eyes
    has no cheeks). `image` uint8 (H,W,3) and `labels` (H,W) of the same size."""
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image {image.shape[:2]} and label map {labels.shape} differ in size")
    found = _color_features(image, labels)
    out = {}
    if "hair" in found:
        hair = _chroma(found["hair"])
        out["hair_color"] = min(_hair_prototypes().items(),
                                key=lambda kv: np.linalg.norm((hair - kv[1]) / _HAIR_SCALE))[0]
    if "reference" not in found:
        return out
    skin_rgb = found["reference"]
    skin = _chroma(skin_rgb)
    out["pale_skin"] = bool((skin_rgb.max() - skin_rgb.min()) / max(skin_rgb.max(), 1) < _PALE_SATURATION)
    if "lips_red" in found:
        out["lipstick"] = bool(found["lips_red"] - skin[1] > _LIPSTICK_RED)
    if "cheeks" in found:
        out["rosy_cheeks"] = bool(_chroma(found["cheeks"])[1] - skin[1] > _BLUSH_RED)
    if "eyeshadow_blue" in found:
        out["heavy_makeup"] = bool(found["eyeshadow_blue"] - skin[2] > _EYESHADOW_BLUE)
    if "chin" in found:
        d = _chroma(found["chin"]) - skin
        out["beard"] = bool(max(abs(d[0]) / 0.3, np.hypot(d[1], d[2]) / 0.03) > _BEARD_DISTANCE)
    return out


def score_attributes(image: np.ndarray, labels: np.ndarray, attrs: dict) -> dict[str, bool]:
    """For each COLOR_ONLY attribute in `attrs` that the face lets us judge: does the image show it?
    `attrs` may be partial (e.g. only what a caption mentions, see caption_attributes)."""
    predicted = predict_attributes(image, labels)
    return {k: predicted[k] == attrs[k] for k in COLOR_ONLY if k in attrs and k in predicted}
