"""CelebAMask-HQ segmentation masks: the 19-class palette and conversions between its forms.

A mask exists in three forms: a label map (H,W) of class ids 0..18, the colour rendering in the
CelebAMask-HQ palette that the reference networks consume, and a 19-channel one-hot.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from pixelface.data.images import resize_and_crop

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


# Label-id masks come numbered two ways: CelebAMask-HQ's (LABELS, this project's), and that of the widely
# used face parser zllrunning/face-parsing.PyTorch (BiSeNet, weights 79999_iter.pth), which numbers the
# same 19 classes differently. Colour masks always use the CelebAMask-HQ palette.
MASK_ORDERS = ("celebamask", "faceparsing")
FACE_PARSING_LABELS = ("background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear",
                       "ear_r", "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat")
_FACE_PARSING_NAME = {"eye_g": "eyeglasses", "ear_r": "earring", "neck_l": "necklace"}
FACE_PARSING_TO_CELEBAMASK = np.array([LABEL_ID[_FACE_PARSING_NAME.get(n, n)] for n in FACE_PARSING_LABELS],
                                      dtype=np.uint8)


def to_celebamask(labels: np.ndarray, order: str) -> np.ndarray:
    """(H,W) label ids 0..18 numbered in `order` (one of MASK_ORDERS) -> the same map in CelebAMask-HQ ids."""
    if order not in MASK_ORDERS:
        raise MaskError(f"mask order {order!r}: expected one of {', '.join(MASK_ORDERS)}")
    return labels if order == "celebamask" else FACE_PARSING_TO_CELEBAMASK[labels]


def _share_above(labels: np.ndarray, label_id: int, row: float) -> float | None:
    """Share of the pixels of `label_id` that lie above `row`; None when it has no pixels."""
    rows = np.nonzero(labels == label_id)[0]
    return None if rows.size == 0 else float((rows < row).mean())


def guess_mask_order(labels: np.ndarray) -> str | None:
    """The order a raw (H,W) label-id map is most likely numbered in, from anatomy, or None when unclear.

    Skin is id 1 in both orders. Id 17 is CelebAMask-HQ's neck but face-parsing's hair, and id 13
    CelebAMask-HQ's hair but face-parsing's lower lip; neither a neck nor a lower lip ever lies mostly
    above the centre of the skin, while hair usually does. So id 17 mostly above it says face-parsing,
    id 13 mostly above it says CelebAMask-HQ. Long hair that falls below the face can hide either sign;
    then (and when the two disagree, or there is no skin) the answer is None.
    """
    skin_rows = np.nonzero(labels == LABEL_ID["skin"])[0]
    if skin_rows.size == 0:
        return None
    centre = float(skin_rows.mean())
    votes = set()
    if (_share_above(labels, LABEL_ID["neck"], centre) or 0.0) > 0.5:
        votes.add("faceparsing")
    if (_share_above(labels, LABEL_ID["hair"], centre) or 0.0) > 0.5:
        votes.add("celebamask")
    return votes.pop() if len(votes) == 1 else None


def label_to_color(labels: np.ndarray) -> np.ndarray:
    """(H,W) int label map -> (H,W,3) uint8 palette image."""
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise MaskError(f"label ids must lie in 0..{NUM_CLASSES - 1}, got {labels.min()}..{labels.max()}")
    return PALETTE[labels]


# Half the distance between the two closest palette colours: a pixel farther than this from its
# nearest palette colour may be closer to the colour its author meant than the one it snaps to.
AMBIGUOUS_DISTANCE = 25.5


def nearest_palette(rgb: np.ndarray, name: str = "mask") -> tuple[np.ndarray, np.ndarray]:
    """(H,W,3) colours -> ((H,W) uint8 nearest palette class, (H,W) float distance to it)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise MaskError(f"{name}: expected an RGB colour mask, got array of shape {rgb.shape}")
    # Squared distances to the 19 palette colours, computed on unique colours only (masks have few);
    # packing RGB into one integer makes np.unique an order of magnitude faster than axis=0.
    packed = rgb.reshape(-1, 3).astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.int32)
    keys, inverse = np.unique(packed, return_inverse=True)
    colors = np.stack([keys >> 16, (keys >> 8) & 255, keys & 255], axis=1)
    d2 = ((colors[:, None, :] - PALETTE[None].astype(np.int32)) ** 2).sum(-1)
    inverse = inverse.reshape(-1)
    labels = d2.argmin(1)[inverse].reshape(rgb.shape[:2]).astype(np.uint8)
    return labels, np.sqrt(d2.min(1))[inverse].reshape(rgb.shape[:2])


def snap_to_palette(rgb: np.ndarray, max_distance: float = 80.0, max_off_palette: float = 0.05,
                    name: str = "mask") -> tuple[np.ndarray, np.ndarray]:
    """color_to_label, also returning each pixel's distance to the palette colour it was snapped to."""
    labels, distance = nearest_palette(rgb, name)
    off_share = float((distance > max_distance).mean())
    if off_share > max_off_palette:
        raise MaskError(f"{name}: {off_share:.1%} of pixels are off the CelebAMask-HQ palette "
                        f"(more than {max_distance:g} from every palette colour; at most "
                        f"{max_off_palette:.1%} allowed)")
    return labels, distance


def color_to_label(rgb: np.ndarray, max_distance: float = 80.0, max_off_palette: float = 0.05,
                   name: str = "mask") -> np.ndarray:
    """(H,W,3) colour mask -> (H,W) uint8 label map, snapping each pixel to the nearest palette colour.

    JPEG masks carry compression noise at region edges, so small deviations are snapped; a mask with
    more than `max_off_palette` of its pixels farther than `max_distance` from every palette colour is
    not a CelebAMask-HQ mask and raises MaskError naming `name`.
    """
    return snap_to_palette(rgb, max_distance, max_off_palette, name)[0]


def one_hot(labels: torch.Tensor) -> torch.Tensor:
    """(B,H,W) or (H,W) int64 label map -> float one-hot with classes on the channel axis."""
    oh = torch.nn.functional.one_hot(labels.long(), NUM_CLASSES).float()
    return oh.movedim(-1, -3)


def color_tensor(labels: torch.Tensor) -> torch.Tensor:
    """(..., H, W) label map -> (..., 3, H, W) palette colour mask in [-1, 1]."""
    palette = torch.as_tensor(PALETTE, dtype=torch.float32, device=labels.device) / 127.5 - 1.0
    return palette[labels.long()].movedim(-1, -3)


def resize_labels(labels, size: int) -> torch.Tensor:
    """A label map of any size (H,W) -> (size,size) int64: shorter side resized (nearest), centre crop."""
    labels = labels.cpu().numpy() if torch.is_tensor(labels) else np.asarray(labels)
    small = resize_and_crop(Image.fromarray(labels.astype(np.uint8)), size, Image.NEAREST)
    return torch.from_numpy(np.asarray(small).astype(np.int64))


def confusion_matrix(pred: torch.Tensor, true: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, rows = true class, columns = predicted class."""
    if pred.shape != true.shape:
        raise ValueError(f"confusion_matrix: prediction {tuple(pred.shape)} and truth {tuple(true.shape)} differ")
    flat = true.reshape(-1).long() * num_classes + pred.reshape(-1).long()
    return torch.bincount(flat.cpu(), minlength=num_classes ** 2).reshape(num_classes, num_classes)


def accuracy_from_confusion(confusion: torch.Tensor) -> dict[str, float]:
    """Pixel accuracy, and mean IoU over the classes present in the truth or the prediction."""
    confusion = confusion.double()
    hits = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - hits
    present = union > 0
    return {"pixel_acc": float(hits.sum() / confusion.sum()), "miou": float((hits[present] / union[present]).mean())}
