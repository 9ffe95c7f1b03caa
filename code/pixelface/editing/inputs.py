"""What users hand the scripts, the Python API and the editor: image and mask files (or PIL images or arrays),
captions, dataset ids, devices. Each reader checks its input and says in one line what is wrong with it.

Files are read through pixelface.data.images: a missing, empty, truncated, oversized or non-image file is an
ImageReadError (a ValueError, so the scripts report it as one "error:" line starting with the path), and
EXIF orientation is applied. Every reader takes a source: a path, a PIL image (its EXIF orientation applied,
as a file's is) or a numpy array, so the scripts and the Python API read their inputs along one code path.
"""
from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pixelface.core.config import resolve_path
from pixelface.core.errors import InputError, InputWarning
from pixelface.core.files import file_hash
from pixelface.data.datasets import FaceDataset, clean_caption
from pixelface.data.images import mask_values_of, open_image, read_mask_array, read_rgb, rgb_of, upright
from pixelface.data.images import resize_and_crop
from pixelface.data.masks import (AMBIGUOUS_DISTANCE, MASK_ORDERS, NUM_CLASSES, MaskError, guess_mask_order,
                                  resize_labels, snap_to_palette, to_celebamask)

AMBIGUOUS_WARN_SHARE = 0.02  # a user's mask with more pixels this far off the palette gets a warning

Source = str | Path | Image.Image | np.ndarray


def source_name(source) -> str:
    """How messages name an input: its path, or the kind, mode and size of an in-memory one."""
    if isinstance(source, Image.Image):
        return f"<PIL image, mode {source.mode}, {source.width}x{source.height}>"
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return f"<{type(source).__name__} of {str(source.dtype)}, shape {tuple(source.shape)}>"
    return str(source)


def _path(source, what: str) -> Path:
    if not isinstance(source, (str, Path)):
        raise InputError(f"{what}: expected a file path, a PIL image or a numpy array, got {type(source).__name__}")
    return Path(source)


def _array_image(array: np.ndarray, what: str) -> Image.Image:
    """A (H,W) grey, (H,W,3) RGB or (H,W,4) RGBA uint8 array as a PIL image."""
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise InputError(f"{what} {source_name(array)}: expected uint8 pixels of shape (H,W), (H,W,3) or (H,W,4)")
    return Image.fromarray(array)


def source_rgb(source: Source, what: str = "image") -> Image.Image:
    """The 8-bit RGB PIL image of a path, a PIL image or a uint8 array, converted as images.read_rgb
    converts a file (16-bit scaled to 8, alpha dropped, EXIF orientation applied)."""
    if isinstance(source, np.ndarray):
        return rgb_of(_array_image(source, what), source_name(source), what)
    if isinstance(source, Image.Image):
        name = source_name(source)
        return rgb_of(upright(source, name, what), name, what)
    return read_rgb(_path(source, what), what)


def read_image(source: Source, size: int) -> torch.Tensor:
    """An image of any size (path, PIL image or uint8 array) -> (3,size,size) float in [-1,1]: shorter side
    resized (LANCZOS), centre crop. Read as source_rgb reads it."""
    array = np.asarray(resize_and_crop(source_rgb(source), size, Image.LANCZOS), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous() / 127.5 - 1.0


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
    return read_mask_array(_path(source, "mask"), "mask", max_index=NUM_CLASSES - 1)


def _mask_array(array: np.ndarray) -> np.ndarray:
    label_ids = array.ndim == 2 and np.issubdtype(array.dtype, np.integer)
    colours = array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8
    if not (label_ids or colours) or array.size == 0:
        raise MaskError(f"mask {source_name(array)}: expected (H,W) integer label ids or (H,W,3) uint8 palette "
                        f"colours")
    return array


def mask_labels(source: Source | torch.Tensor, snap_distance: float = 80.0, max_off_palette: float = 0.05,
                mask_order: str = "celebamask") -> np.ndarray:
    """A mask of any size (path, PIL image, array; see mask_values) -> its (H,W) int64 label map in
    CelebAMask-HQ ids, at its own size (data.masks.generator_input turns it into G's input at any size).

    Single-channel images and (H,W) arrays hold label ids 0..18 numbered in `mask_order` ('celebamask' or
    'faceparsing', masks.MASK_ORDERS); one whose anatomy suggests the other order gives an InputWarning.
    Colour images hold CelebAMask-HQ palette colours whatever `mask_order`, snapped to the nearest palette
    colour when within `snap_distance` (JPEG noise at region edges). More than `max_off_palette` of
    far-off pixels, or an id above 18, is an error.
    """
    if mask_order not in MASK_ORDERS:
        raise InputError(f"mask order {mask_order!r}: expected one of {', '.join(MASK_ORDERS)}")
    name = f"mask {source_name(source)}"
    values = mask_values(source)
    if values.ndim == 2:
        return _label_ids(values, name, mask_order)
    return _palette_labels(values, name, snap_distance, max_off_palette).astype(np.int64)


def read_mask(source: Source | torch.Tensor, size: int, snap_distance: float = 80.0, max_off_palette: float = 0.05,
              mask_order: str = "celebamask") -> torch.Tensor:
    """mask_labels resized to (size,size) int64 (nearest neighbour, centre crop)."""
    return resize_labels(mask_labels(source, snap_distance, max_off_palette, mask_order), size)


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


def image_shape(source: Source | torch.Tensor, what: str = "image") -> tuple[int, int]:
    """(width, height) of an image or mask after its EXIF orientation (ImageReadError when a file cannot be
    read)."""
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return source.shape[1], source.shape[0]
    if isinstance(source, Image.Image):
        return upright(source, source_name(source), what).size
    return open_image(_path(source, what), what).size


def check_same_aspect(image: Source, mask: Source | torch.Tensor, tolerance: float = 0.01) -> None:
    """Refuse (InputError naming both and their sizes) an image and its mask whose aspect ratios differ by
    more than `tolerance` (relative): each is centre-cropped to a square on its own, so they would not line up."""
    (iw, ih), (mw, mh) = image_shape(image, "image"), image_shape(mask, "mask")
    ratios = sorted((iw / ih, mw / mh))
    if ratios[1] / ratios[0] - 1 > tolerance:
        raise InputError(f"image {source_name(image)} is {iw}x{ih} but mask {source_name(mask)} is {mw}x{mh}: their "
                         f"aspect ratios differ by {ratios[1] / ratios[0] - 1:.1%}; they must show the same picture "
                         f"(same aspect ratio, within {tolerance:.0%})")


def dataset_items(cfg, split: str, ids: list[str]) -> list[dict]:
    """FaceDataset items (image, mask, labels, caption, id) for `ids` of `split`, read at the model's size (the
    dataset's own rule, so a sample of a dataset mask gets the input training and evaluation give it)."""
    at_model_size = copy.deepcopy(cfg)
    at_model_size.DATA.IMAGE_SIZE = cfg.MODEL.SIZE
    dataset = FaceDataset(at_model_size, split, train=False)
    position = {image_id: i for i, image_id in enumerate(dataset.ids)}
    unknown = [i for i in ids if i not in position]
    if unknown:
        raise InputError(f"split '{split}' of {dataset.index_path} has no image ids {unknown} "
                         f"(it has {len(dataset.ids)} ids, e.g. {dataset.ids[:3]})")
    return [dataset[position[image_id]] for image_id in ids]


def prepare_captions(captions: list[str], cfg, text_encoder) -> list[str]:
    """Clean captions as training did (lower case, ASCII words, at most DATA.WORDS_NUM words).

    An empty caption raises InputError; a caption cut to DATA.WORDS_NUM words, or whose BPE tokens do not
    all fit into the TEXT.MAX_WORDS word positions the generator sees, gives an InputWarning naming what
    was kept.
    """
    cleaned = []
    for text in captions:
        try:
            caption = clean_caption(text, max_words=cfg.DATA.WORDS_NUM)
        except ValueError:
            raise InputError(f"caption {text!r} is empty (it has no ASCII words)") from None
        if len(re.findall(r"\w+", text.lower())) > cfg.DATA.WORDS_NUM:
            warnings.warn(f"caption {text!r} is longer than DATA.WORDS_NUM = {cfg.DATA.WORDS_NUM} words; "
                          f"using {caption!r}", InputWarning, stacklevel=2)
        kept = _tokens_kept(text_encoder, caption)
        if kept is not None:
            warnings.warn(f"caption {caption!r} has more BPE tokens than the {text_encoder.max_words - 1} the "
                          f"text encoder passes on; the generator sees {kept!r}", InputWarning, stacklevel=2)
        cleaned.append(caption)
    return cleaned


def _tokens_kept(text_encoder, caption: str) -> str | None:
    """The part of `caption` the word features cover when its tokens overflow them, else None."""
    tokens = text_encoder.tokenize([caption])[0]
    positions = text_encoder.max_words  # SOT + max_words - 1 tokens
    if int(tokens.argmax()) <= positions:  # EOT index = 1 + number of tokens
        return None
    return text_encoder.tokenizer.decode(tokens[1:positions].tolist()).strip()


def text_encoder_source(cfg) -> str:
    """Which CLIP the config loads, for records: a local weights file with its hash (the checkpoint does not
    pin it, and a re-pretrained file silently changes what the generator reads), a pretrained tag, or random."""
    name, pretrained = cfg.TEXT.MODEL, cfg.TEXT.PRETRAINED
    if not pretrained:
        return f"{name} (random weights, seed {cfg.SEED})"
    path = resolve_path(cfg, "TEXT.PRETRAINED")
    if path.is_file():
        return f"{name} {pretrained} (sha256 {file_hash(path)})"
    return f"{name} {pretrained}"


def pair_conditions(n_masks: int, n_captions: int) -> list[tuple[int, int]]:
    """(mask index, caption index) pairs: one-to-one, one mask x every caption, or one caption x every mask."""
    if n_masks < 1 or n_captions < 1:
        raise InputError(f"need at least one mask and one caption, got {n_masks} masks and {n_captions} captions")
    if n_masks == n_captions:
        return [(i, i) for i in range(n_masks)]
    if n_masks == 1:
        return [(0, i) for i in range(n_captions)]
    if n_captions == 1:
        return [(i, 0) for i in range(n_masks)]
    raise InputError(f"{n_masks} masks and {n_captions} captions cannot be paired: give as many masks as captions, "
                     f"or a single mask, or a single caption")
