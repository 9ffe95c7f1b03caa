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

import numpy as np
import torch
from PIL import Image

from pixelface.core.config import resolve_path
from pixelface.core.errors import InputError, InputWarning
from pixelface.core.files import file_hash
from pixelface.data.datasets import FaceDataset, clean_caption
from pixelface.data.images import (Source, open_image, read_rgb, resize_and_crop, rgb_of, source_name, source_path,
                                   upright)
from pixelface.data.mask_files import read_labels
from pixelface.data.masks import resize_labels


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
    return read_rgb(source_path(source, what), what)


def read_image(source: Source, size: int) -> torch.Tensor:
    """An image of any size (path, PIL image or uint8 array) -> (3,size,size) float in [-1,1]: shorter side
    resized (LANCZOS), centre crop. Read as source_rgb reads it."""
    array = np.asarray(resize_and_crop(source_rgb(source), size, Image.LANCZOS), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous() / 127.5 - 1.0


def read_mask(source: Source | torch.Tensor, size: int, snap_distance: float = 80.0, max_off_palette: float = 0.05,
              mask_order: str = "celebamask") -> torch.Tensor:
    """A mask of any size (data.mask_files.read_labels reads it) -> (size,size) int64 label map (nearest
    neighbour, centre crop)."""
    return resize_labels(read_labels(source, snap_distance, max_off_palette, mask_order), size)


def image_shape(source: Source | torch.Tensor, what: str = "image") -> tuple[int, int]:
    """(width, height) of an image or mask after its EXIF orientation (ImageReadError when a file cannot be
    read)."""
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return source.shape[1], source.shape[0]
    if isinstance(source, Image.Image):
        return upright(source, source_name(source), what).size
    return open_image(source_path(source, what), what).size


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
