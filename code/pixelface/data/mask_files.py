"""Reading masks: a file, a PIL image or an array of CelebAMask-HQ palette colours or of label ids (in either label
order) -> the (H,W) CelebAMask-HQ label map at its own size. The one mask reader of the dataset, the commands,
the API and the editor."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pixelface.core.errors import InputError, InputWarning
from pixelface.data.images import Source, mask_values_of, read_mask_array, source_name, source_path, upright
from pixelface.data.masks import (AMBIGUOUS_DISTANCE, MASK_ORDERS, NUM_CLASSES, MaskError, guess_mask_order,
                                  snap_to_palette, to_celebamask)

AMBIGUOUS_WARN_SHARE = 0.02  # a mask with more pixels this far off the palette gets a warning


def mask_values(source: Source | torch.Tensor) -> np.ndarray:
    """The numbers of a mask: (H,W) label ids or (H,W,3) colours; what they mean is read_mask's business.

    Files and PIL images are read as images.read_mask_array reads files, so a palette (mode P) image whose
    indices are all label ids gives the ids, and one with larger indices gives its colours. Arrays (and
    tensors) are taken as they are: (H,W) integers are label ids, (H,W,3) uint8 are colours.
    """
    if isinstance(source, torch.Tensor):
        source = source.detach().cpu().numpy()
    if isinstance(source, np.ndarray):
        return _mask_array(source)
    if isinstance(source, Image.Image):
        name = source_name(source)
        return mask_values_of(upright(source, name, "mask"), name, "mask", max_index=NUM_CLASSES - 1)
    return read_mask_array(source_path(source, "mask"), "mask", max_index=NUM_CLASSES - 1)


def _mask_array(array: np.ndarray) -> np.ndarray:
    label_ids = array.ndim == 2 and np.issubdtype(array.dtype, np.integer)
    colours = array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8
    if not (label_ids or colours) or array.size == 0:
        raise MaskError(f"mask {source_name(array)}: expected (H,W) integer label ids or (H,W,3) uint8 palette "
                        f"colours")
    return array


def read_labels(source: Source | torch.Tensor, snap_distance: float = 80.0, max_off_palette: float = 0.05,
                mask_order: str = "celebamask", kind: str | None = None) -> np.ndarray:
    """A mask of any size (path, PIL image, array; see mask_values) -> its (H,W) int64 label map in
    CelebAMask-HQ ids, at its own size (data.mask_input.generator_input turns it into G's input at any size).
    The one mask reader: datasets read their files with it (kind = DATA.MASK_KIND), commands and the API a
    user's masks (kind None: colours or label ids, whichever the source holds).

    Single-channel images and (H,W) arrays hold label ids 0..18 numbered in `mask_order` ('celebamask' or
    'faceparsing', masks.MASK_ORDERS); one whose anatomy suggests the other order gives an InputWarning.
    Colour images hold CelebAMask-HQ palette colours whatever `mask_order`, snapped to the nearest palette
    colour when within `snap_distance` (JPEG noise at region edges). More than `max_off_palette` of
    far-off pixels, or an id above 18, is an error.
    """
    if mask_order not in MASK_ORDERS:
        raise InputError(f"mask order {mask_order!r}: expected one of {', '.join(MASK_ORDERS)}")
    name = f"mask {source_name(source)}"
    if kind == "color" and isinstance(source, (str, Path)):
        values = read_mask_array(source, "mask", rgb=True)     # a palette-mode file shows its colours
    else:
        values = mask_values(source)
    if kind == "label" and values.ndim != 2:
        raise MaskError(f"{name}: expected a single-channel label-id PNG (DATA.MASK_KIND=label), got a colour image")
    if kind == "color" and values.ndim != 3:
        raise MaskError(f"{name}: expected a colour mask (DATA.MASK_KIND=color), got single-channel label ids")
    if values.ndim == 2:
        return _label_ids(values, name, mask_order)
    return _palette_labels(values, name, snap_distance, max_off_palette).astype(np.int64)


# What masks.guess_mask_order saw, for each order it can suggest.
_ORDER_SIGN = {"faceparsing": "id 17 (the hair in faceparsing order, the neck in celebamask order) lies mostly "
                              "above the centre of the skin",
               "celebamask": "id 13 (the hair in celebamask order, the lower lip in faceparsing order) lies mostly "
                             "above the centre of the skin"}


def _label_ids(values: np.ndarray, name: str, mask_order: str) -> np.ndarray:
    """Raw label ids in `mask_order` -> CelebAMask-HQ ids, after checking their range and their order."""
    if values.min() < 0 or values.max() >= NUM_CLASSES:
        raise MaskError(f"{name}: a single-channel mask holds label ids 0..{NUM_CLASSES - 1}, "
                        f"found {values.min()}..{values.max()}")
    guess = guess_mask_order(values)
    if guess is not None and guess != mask_order:
        # stacklevel 3: the line that called read_mask
        warnings.warn(f"{name}: its label ids look like {guess} order, not {mask_order}: {_ORDER_SIGN[guess]}; "
                      f"if so, pass --mask-order {guess} (mask_order={guess!r} in Python, DATA.MASK_ORDER for "
                      f"a dataset)", InputWarning, stacklevel=3)
    return to_celebamask(values.astype(np.int64), mask_order)


def _palette_labels(values: np.ndarray, name: str, snap_distance: float, max_off_palette: float) -> np.ndarray:
    """(H,W,3) palette colours -> label ids, warning when many pixels lie between palette colours."""
    labels, distance = snap_to_palette(values, snap_distance, max_off_palette, name=name)
    ambiguous = float((distance > AMBIGUOUS_DISTANCE).mean())
    if ambiguous > AMBIGUOUS_WARN_SHARE:
        warnings.warn(f"{name}: {ambiguous:.1%} of its pixels are more than {AMBIGUOUS_DISTANCE:g} from "
                      f"every palette colour (compression noise?); each was given the nearest class, which "
                      f"may not be the one meant: save masks as PNG", InputWarning, stacklevel=3)
    return labels


