"""Sampling and editing with a trained generator: per-seed sampling, inversion of a given face into
W+ and noise maps, and edits of its description or its layout. The reference has only the sample.py
snippet at its repository root and no editing code, so all of this is new.

scripts/sample.py and scripts/manipulate.py are thin shells over this module, and an interactive editor
can call it directly: the functions take tensors and plain values, and only the explicit save_* helpers
touch the disk.

Reproducibility: a sample's z and its noise maps are drawn on the CPU from its own torch.Generator seeded
by its seed (EDM's per-seed RNG), its caption is encoded on its own, and it gets a forward pass of its own
(batched matrix products round differently), so what else is generated in the same call never changes its
bytes.
"""
from __future__ import annotations

import copy
import json
import math
import re
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from .cli import InputError, InputWarning, check_output_folder
from .checkpoint import atomic_save, file_hash, load_formatted
from .config import resolve_path
from .files import atomic_write, write_text_atomic
from .datasets import FaceDataset, clean_caption, resize_and_crop
from .images import mask_values_of, open_image, read_mask_array, read_rgb, rgb_of, upright
from .masks import (AMBIGUOUS_DISTANCE, MASK_ORDERS, NUM_CLASSES, MaskError, color_tensor,
                    guess_mask_order, one_hot, snap_to_palette, to_celebamask)
from .metrics import LPIPS_BACKBONE_FILE, lpips_network
from .text_encoder import clip_image_input

AMBIGUOUS_WARN_SHARE = 0.02  # a user's mask with more pixels this far off the palette gets a warning
MEAN_LATENT_SAMPLES = 4096  # z draws averaged into the truncation centre / inversion start
MEAN_LATENT_SEED = 0x5EED   # fixed, so the truncation centre is a property of the model alone
INVERSION_FORMAT = "pixelface-inversion"


# ---------------------------------------------------------------------------------------------------------------
# Reading inputs


# Files are read through pixelface.images: a missing, empty, truncated, oversized or non-image file is an
# ImageReadError (a ValueError, so the scripts report it as one "error:" line starting with the path), and
# EXIF orientation is applied.
#
# Every reader takes a source: a path, a PIL image (its EXIF orientation applied, as a file's is) or a numpy
# array, so the scripts and the Python API (pixelface.api) read their inputs along one code path.
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


def read_mask(source: Source | torch.Tensor, size: int, snap_distance: float = 80.0, max_off_palette: float = 0.05,
              mask_order: str = "celebamask") -> torch.Tensor:
    """A mask of any size (path, PIL image, array; see mask_values) -> (size,size) int64 label map in
    CelebAMask-HQ ids (nearest-neighbour resize, centre crop).

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
        labels = _label_ids(values, name, mask_order)
    else:
        labels = _palette_labels(values, name, snap_distance, max_off_palette)
    labels = np.asarray(resize_and_crop(Image.fromarray(labels.astype(np.uint8)), size, Image.NEAREST))
    return torch.from_numpy(labels.astype(np.int64))


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
    """FaceDataset items (image, labels, caption, id) for `ids` of `split`, with labels at the model's size."""
    dataset = FaceDataset(cfg, split, train=False)
    position = {image_id: i for i, image_id in enumerate(dataset.ids)}
    unknown = [i for i in ids if i not in position]
    if unknown:
        raise InputError(f"split '{split}' of {dataset.index_path} has no image ids {unknown} "
                         f"(it has {len(dataset.ids)} ids, e.g. {dataset.ids[:3]})")
    size = cfg.MODEL.SIZE
    items = []
    for image_id in ids:
        item = dataset[position[image_id]]
        if item["labels"].shape[-1] != size:  # DATA.IMAGE_SIZE differs from the model's size
            item["labels"] = F.interpolate(item["labels"][None, None].float(), size=(size, size),
                                           mode="nearest")[0, 0].long()
            item["image"] = F.interpolate(item["image"][None], size=(size, size), mode="bilinear",
                                          align_corners=False, antialias=True)[0]
        items.append(item)
    return items


def resolve_device(name: str) -> torch.device:
    """The torch device `name` names, or InputError when it is malformed or not on this machine."""
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise InputError(f"device {name!r}: {e}") from None
    if device.type == "cuda" and not (torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()):
        raise InputError(f"device {name!r}: no such CUDA device on this machine")
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"device {name!r}: expected cpu or cuda[:N]")
    return device


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


def mask_input(labels: torch.Tensor, cfg) -> torch.Tensor:
    """(B,S,S) label maps -> the generator's mask input: palette colours in [-1,1] or a 19-channel one-hot."""
    return one_hot(labels) if cfg.MODEL.MASK_INPUT == "onehot" else color_tensor(labels)


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


# ---------------------------------------------------------------------------------------------------------------
# Sampling


@dataclass(frozen=True)
class WordFeatures:
    words: torch.Tensor           # (1, T, EMBEDDING_DIM)
    padding: torch.Tensor | None  # (1, T) bool, None in the reference's batch-dependent mode


def encode_caption(text_encoder, caption: str) -> WordFeatures:
    """One caption's word features, encoded alone so that nothing else in a batch can change them."""
    feats = text_encoder.encode([caption])
    return WordFeatures(feats.words, feats.padding)


def _on(features: WordFeatures, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(words, padding) on `device`, as the generator takes them."""
    return features.words.to(device), None if features.padding is None else features.padding.to(device)


def seeded_inputs(g, seed: int, style_dim: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(z (1,style_dim), noise maps [(1,1,h,w)]) of `seed`, drawn on the CPU in that order."""
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(1, style_dim, generator=rng)
    return z, g.make_noise(1, generator=rng, device="cpu")


def truncation_centre(g) -> torch.Tensor:
    """(1,STYLE_DIM) mean w of MEAN_LATENT_SAMPLES fixed z draws: the model's mean latent."""
    return g.mean_latent(MEAN_LATENT_SAMPLES, generator=torch.Generator().manual_seed(MEAN_LATENT_SEED)).reshape(1, -1)


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def generate(g, text_encoder, cfg, labels: torch.Tensor, captions: list[str], seeds: list[int],
             truncation: float = 1.0, batch_size: int = 1, progress: bool = False) -> torch.Tensor:
    """Images for N (label map, caption, seed) triples -> (N,3,S,S) float on the CPU, in [-1,1] (unclamped).

    labels: (N,S,S) int64; captions: N cleaned captions; truncation < 1 pulls w toward the model's mean
    latent. Every sample draws z and noise from its own seed and encodes its caption alone, so batch_size
    changes only how many share a forward pass. With 1 (the default) a seed's image is byte-identical
    whatever else is generated with it; batched matrix products round differently (about 1e-5 here), so
    larger batches, faster on a GPU, can move a rare 8-bit pixel value by one.
    """
    if not len(labels) == len(captions) == len(seeds) >= 1:
        raise InputError(f"got {len(labels)} masks, {len(captions)} captions and {len(seeds)} seeds; "
                         f"expected one of each per sample, for at least one sample")
    if batch_size < 1:
        raise InputError(f"batch size {batch_size}: expected at least 1")
    if not 0.0 <= truncation <= 1.0:
        raise InputError(f"truncation {truncation}: expected a value in [0, 1]")
    bad_seeds = [s for s in seeds
                 if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s < 2 ** 32]
    if bad_seeds:
        raise InputError(f"seeds {bad_seeds[:5]}: expected integers in [0, 2^32)")
    if batch_size > 1 and not cfg.TEXT.FIXED_LENGTH:
        raise InputError("TEXT.FIXED_LENGTH is false (the reference's batch-dependent word length), so captions "
                         "cannot share a batch without changing each other's features: use batch size 1")
    device = _device(g)
    features = {c: encode_caption(text_encoder, c) for c in dict.fromkeys(captions)}
    centre = truncation_centre(g) if truncation != 1.0 else None
    images = []
    with tqdm(total=len(seeds), unit="image", disable=not progress) as bar:
        for start in range(0, len(seeds), batch_size):
            part = range(start, min(start + batch_size, len(seeds)))
            inputs = [seeded_inputs(g, seeds[i], cfg.MODEL.STYLE_DIM) for i in part]
            z = torch.cat([z for z, _ in inputs]).to(device)
            noise = [torch.cat(maps).to(device) for maps in zip(*(n for _, n in inputs))]
            words = torch.cat([features[captions[i]].words for i in part]).to(device)
            paddings = [features[captions[i]].padding for i in part]
            padding = None if paddings[0] is None else torch.cat(paddings).to(device)
            out = g(mask_input(labels[part.start:part.stop], cfg).to(device), words, [z], word_padding=padding,
                    noise=noise, truncation=truncation, truncation_latent=centre)
            images.append(out.float().cpu())
            bar.update(len(part))
    return torch.cat(images)


# ---------------------------------------------------------------------------------------------------------------
# Reconstruction loss


class ClipFeatureDistance(nn.Module):
    """An LPIPS-like distance on the checkpoint's own CLIP image tower, which is always available offline:
    the mean squared difference of channel-normalised patch tokens after every transformer block."""

    def __init__(self, text_encoder):
        super().__init__()
        self.encoder = text_encoder

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        enc = self.encoder
        x = clip_image_input(images, enc.image_size, enc.image_mean, enc.image_std, normalize=True)
        out = enc.clip.visual.forward_intermediates(x, intermediates_only=True, output_fmt="NLC")
        return [F.normalize(f, dim=-1) for f in out["image_intermediates"]]

    def forward(self, images: torch.Tensor, target_features: list[torch.Tensor]) -> torch.Tensor:
        pairs = zip(self.features(images), target_features)
        return torch.stack([(a - b).square().sum(-1).mean() for a, b in pairs]).mean()


class ReconstructionLoss(nn.Module):
    """pixel MSE + feature_weight x perceptual distance to one fixed target image.

    perceptual: 'lpips' (needs the lpips package and its AlexNet weights), 'clip' (ClipFeatureDistance),
    'auto' (lpips when present, else clip) or 'none'.
    """

    def __init__(self, target: torch.Tensor, text_encoder, perceptual: str, feature_weight: float):
        super().__init__()
        if perceptual not in ("auto", "lpips", "clip", "none"):
            raise ValueError(f"perceptual loss {perceptual!r}: expected auto, lpips, clip or none")
        self.target, self.feature_weight = target, feature_weight
        net = lpips_network(target.device) if perceptual in ("auto", "lpips") else None
        if perceptual == "lpips" and net is None:
            raise InputError(f"perceptual loss 'lpips' needs the lpips package and {LPIPS_BACKBONE_FILE} in "
                             f"{Path(torch.hub.get_dir()) / 'checkpoints'}")
        self.kind = "lpips" if net is not None else ("none" if perceptual == "none" else "clip")
        self.lpips = net
        if self.kind == "clip":
            self.clip = ClipFeatureDistance(text_encoder)
            with torch.no_grad():
                self.target_features = self.clip.features(target)

    def perceptual(self, images: torch.Tensor) -> torch.Tensor:
        if self.kind == "lpips":
            return self.lpips(images, self.target).mean()
        if self.kind == "clip":
            return self.clip(images, self.target_features)
        return images.new_zeros(())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(images, self.target) + self.feature_weight * self.perceptual(images)


# ---------------------------------------------------------------------------------------------------------------
# Inversion


@dataclass
class InversionSettings:
    steps: int = 250               # Adam steps on W+ and the noise maps
    lr: float = 0.1                # peak learning rate (ramped up over 5%, cosine down over the last 25%)
    latent_noise: float = 0.05     # start-of-run jitter of W+, in units of the w spread (decays to 0 at 75%)
    noise_regularize: float = 1e4  # weight of the noise maps' autocorrelation penalty (keeps them noise-like)
    perceptual: str = "auto"       # ReconstructionLoss kind: auto, lpips, clip or none
    feature_weight: float = 0.1    # weight of the perceptual term (1.0 cost 1 dB PSNR and weakened text edits)
    finetune_steps: int = 0        # PTI: Adam steps on the generator weights afterwards, latent fixed
    finetune_lr: float = 1e-3
    seed: int = 0                  # initial noise maps and latent jitter


@dataclass
class Inversion:
    """A given face expressed in the generator's terms: edits re-synthesise from here."""
    latent: torch.Tensor              # (1, n_latent, STYLE_DIM) W+ code
    noise: list[torch.Tensor]         # per-layer noise maps (1,1,h,w)
    caption: str                      # cleaned caption the latent was fitted with
    labels: torch.Tensor              # (S,S) int64 label map it was fitted with
    target: torch.Tensor              # (3,S,S) image in [-1,1] it reconstructs
    settings: InversionSettings       # how it was fitted ('auto' perceptual resolved to the kind used)
    losses: list[float] = field(default_factory=list)  # loss per step: W+ phase, then fine-tuning phase
    generator_state: dict | None = None  # fine-tuned (PTI) generator weights; None: the checkpoint's own


def latent_statistics(g, samples: int = MEAN_LATENT_SAMPLES) -> tuple[torch.Tensor, float]:
    """(mean w (1,D), RMS distance of w from it) over fixed z draws: where inversion starts and its scale."""
    rng = torch.Generator().manual_seed(MEAN_LATENT_SEED)
    z = torch.randn(samples, g.style_dim, generator=rng).to(_device(g))
    with torch.no_grad():
        w = g.style(z)
    mean = w.mean(0, keepdim=True)
    return mean, float((w - mean).square().sum(1).mean().sqrt())


def noise_regularization(noise: list[torch.Tensor]) -> torch.Tensor:
    """StyleGAN2 projector's penalty: squared autocorrelation at shift 1 of every noise map, on an image
    pyramid down to 8x8, so the optimiser cannot hide image content in the noise."""
    loss = noise[0].new_zeros(())
    for n in noise:
        while True:
            loss = loss + (n * n.roll(1, dims=3)).mean().square() + (n * n.roll(1, dims=2)).mean().square()
            if n.shape[-1] <= 8:
                break
            n = F.avg_pool2d(n, 2)
    return loss


def _normalize_noise_(noise: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for n in noise:
            n.sub_(n.mean()).div_(n.std())


def _learning_rate(peak: float, t: float, rampdown: float = 0.25, rampup: float = 0.05) -> float:
    ramp = min(1.0, (1.0 - t) / rampdown) * min(1.0, t / rampup)
    return peak * (0.5 - 0.5 * math.cos(ramp * math.pi))


def invert(g, text_encoder, cfg, image: torch.Tensor, labels: torch.Tensor, caption: str,
           settings: InversionSettings | None = None, progress: bool = False) -> Inversion:
    """Fit W+ and the noise maps so that g(labels, caption, W+, noise) reproduces `image`, then optionally
    fine-tune a copy of g on it (PTI).

    image: (3,S,S) in [-1,1]; labels: (S,S) int64; caption: cleaned (see prepare_captions); settings: None
    for the defaults.
    """
    settings = settings or InversionSettings()
    device = _device(g)
    target = image.to(device)[None]
    mask = mask_input(labels[None], cfg).to(device)
    words, padding = _on(encode_caption(text_encoder, caption), device)
    loss_fn = ReconstructionLoss(target, text_encoder, settings.perceptual, settings.feature_weight)

    rng = torch.Generator().manual_seed(settings.seed)
    w_mean, w_spread = latent_statistics(g)
    latent = w_mean[:, None].repeat(1, g.n_latent, 1).requires_grad_(True)
    noise = [n.to(device).requires_grad_(True) for n in g.make_noise(1, generator=rng, device="cpu")]
    opt = torch.optim.Adam([latent, *noise], lr=settings.lr, betas=(0.9, 0.999))
    losses = []
    steps = tqdm(range(settings.steps), desc="inversion", unit="step", disable=not progress)
    for step in steps:
        t = step / settings.steps
        for group in opt.param_groups:
            group["lr"] = _learning_rate(settings.lr, t)
        jitter_scale = w_spread * settings.latent_noise * max(0.0, 1.0 - t / 0.75) ** 2
        jitter = torch.randn(latent.shape, generator=rng).to(device) * jitter_scale
        out = g(mask, words, latent + jitter, input_is_latent=True, word_padding=padding, noise=noise)
        recon = loss_fn(out)
        loss = recon + settings.noise_regularize * noise_regularization(noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _normalize_noise_(noise)
        losses.append(recon.item())
        steps.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)

    latent, noise = latent.detach(), [n.detach() for n in noise]
    tuned = _finetune(g, loss_fn, mask, words, padding, latent, noise, settings, losses, progress)
    used = replace(settings, perceptual=loss_fn.kind)
    return Inversion(latent.cpu(), [n.cpu() for n in noise], caption, labels.cpu(), image.cpu(), used, losses, tuned)


def _finetune(g, loss_fn, mask, words, padding, latent, noise, settings, losses, progress) -> dict | None:
    """PTI: tune a copy of g's weights so that the fixed latent reproduces the target (None when 0 steps)."""
    if settings.finetune_steps <= 0:
        return None
    tuned = copy.deepcopy(g).requires_grad_(True)  # stays in eval mode: no GCMF dropout
    opt = torch.optim.Adam(tuned.parameters(), lr=settings.finetune_lr)
    for _ in tqdm(range(settings.finetune_steps), desc="fine-tuning", unit="step", disable=not progress):
        loss = loss_fn(tuned(mask, words, latent, input_is_latent=True, word_padding=padding, noise=noise))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {k: v.detach().cpu() for k, v in tuned.state_dict().items()}


def save_inversion(inversion: Inversion, path: str | Path, checkpoint_hash: str) -> None:
    """Write the inversion atomically, tagged with the hash of the checkpoint it belongs to."""
    atomic_save({"format": INVERSION_FORMAT, "checkpoint_hash": checkpoint_hash, "latent": inversion.latent,
                 "noise": inversion.noise, "caption": inversion.caption, "labels": inversion.labels,
                 "target": inversion.target, "settings": asdict(inversion.settings),
                 "losses": inversion.losses, "generator_state": inversion.generator_state}, path)


def load_inversion(path: str | Path, checkpoint_hash: str) -> Inversion:
    """Read an inversion written by save_inversion for the checkpoint with `checkpoint_hash`."""
    data = load_formatted(path, INVERSION_FORMAT, "inversion written by scripts/manipulate.py", error=InputError)
    if data["checkpoint_hash"] != checkpoint_hash:
        raise InputError(f"inversion {path} was made with checkpoint {data['checkpoint_hash']}, "
                         f"not with this one ({checkpoint_hash}); invert the image again")
    return Inversion(data["latent"], list(data["noise"]), data["caption"], data["labels"], data["target"],
                     InversionSettings(**data["settings"]), list(data["losses"]), data["generator_state"])


# ---------------------------------------------------------------------------------------------------------------
# Edits


def generator_for(g, inversion: Inversion):
    """g itself, or a copy carrying the inversion's fine-tuned weights."""
    if inversion.generator_state is None:
        return g
    tuned = copy.deepcopy(g)
    tuned.load_state_dict(inversion.generator_state)
    return tuned


@torch.no_grad()
def edit(g, text_encoder, cfg, inversion: Inversion, caption: str | None = None,
         labels: torch.Tensor | None = None) -> torch.Tensor:
    """Re-synthesise the inverted face with a new cleaned caption and/or a new (S,S) label map (None: keep
    the inversion's) -> (3,S,S) on the CPU. Pass g through generator_for first when the inversion was
    fine-tuned; with neither changed this is the reconstruction."""
    device = _device(g)
    caption = inversion.caption if caption is None else caption
    labels = inversion.labels if labels is None else labels
    words, padding = _on(encode_caption(text_encoder, caption), device)
    noise = [n.to(device) for n in inversion.noise]
    out = g(mask_input(labels[None].cpu(), cfg).to(device), words, inversion.latent.to(device),
            input_is_latent=True, word_padding=padding, noise=noise)
    return out[0].float().cpu()


# ---------------------------------------------------------------------------------------------------------------
# Measures


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1,1] -> uint8 in [0,255], rounded to nearest, as saved to PNG."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def psnr(image: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB between two images in [-1,1], measured on their 8-bit renderings."""
    mse = (to_uint8(image).float() - to_uint8(reference).float()).square().mean()
    return float("inf") if mse == 0 else float(10 * torch.log10(255.0 ** 2 / mse))


@torch.no_grad()
def lpips_distance(net, image: torch.Tensor, reference: torch.Tensor) -> float:
    """LPIPS between two (3,S,S) images in [-1,1] with a network from lpips_network."""
    device = _device(net)
    return float(net(image[None].to(device).clamp(-1, 1), reference[None].to(device).clamp(-1, 1)))


@torch.no_grad()
def clip_similarity(text_encoder, images: torch.Tensor, captions: list[str]) -> list[float]:
    """Cosine similarity in the checkpoint's CLIP space of each (3,S,S) image to its caption."""
    image_emb = F.normalize(text_encoder.encode_image(images.clamp(-1, 1).to(text_encoder.device), normalize=True),
                            dim=-1)
    text_emb = text_encoder.embed_text(captions)
    return [float(s) for s in (image_emb * text_emb).sum(-1).cpu()]


# ---------------------------------------------------------------------------------------------------------------
# Pictures and records


def mask_picture(labels: torch.Tensor) -> torch.Tensor:
    """(S,S) label map -> (3,S,S) palette picture in [-1,1]."""
    return color_tensor(labels.cpu())


def picture_grid(rows: list[list[torch.Tensor]], gap: int = 2) -> torch.Tensor:
    """Rows of (3,S,S) images in [-1,1] -> one (3,H,W) picture on white, `gap` pixels between cells."""
    size = rows[0][0].shape[-1]
    columns = max(len(r) for r in rows)
    height, width = len(rows) * (size + gap) - gap, columns * (size + gap) - gap
    canvas = torch.ones(3, height, width)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            top, left = r * (size + gap), c * (size + gap)
            canvas[:, top:top + size, left:left + size] = image.float().clamp(-1, 1)
    return canvas


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3,H,W) image in [-1,1] -> 8-bit RGB PIL image: the pixels save_png writes."""
    return Image.fromarray(to_uint8(image).permute(1, 2, 0).numpy())


def save_png(image: torch.Tensor, path: str | Path) -> None:
    """(3,H,W) image in [-1,1] -> 8-bit PNG, written atomically."""
    picture = to_pil(image)
    atomic_write(Path(path), lambda tmp: picture.save(tmp, format="PNG"))


def save_json(obj, path: str | Path) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def save_text(text: str, path: str | Path) -> None:
    write_text_atomic(path, text)


def check_free(paths: list[Path], force: bool) -> None:
    """Refuse (FileExistsError naming them) to overwrite existing outputs unless `force`, and make sure
    their folders can be written: both before any expensive work."""
    for folder in dict.fromkeys(Path(p).parent for p in paths):
        check_output_folder(folder)
    taken = [str(p) for p in paths if p.exists()]
    if taken and not force:
        shown = ", ".join(taken[:5]) + (f" and {len(taken) - 5} more" if len(taken) > 5 else "")
        raise FileExistsError(f"{len(taken)} output files exist already ({shown}); pass --force to overwrite "
                              f"them or choose another --out")
