"""MM-CelebA-HQ: the caption index, the face/mask dataset, and building the on-disk layout from raw downloads.

The layout under DATA.ROOT (names from the DATA section of the config):

    dataset2.json        split -> parallel lists filenames / keynames / captions, 10 consecutive captions per image
    images/{id}.jpg      RGB faces, id = CelebA-HQ index
    masks/{id}.png       CelebAMask-HQ parsing map: palette colours (MASK_KIND 'color') or label ids ('label'),
                         numbered in CelebAMask-HQ or face-parsing order (MASK_ORDER)

`prepare_mmceleba` writes this layout from CelebA-HQ images and the CelebAMask-HQ per-part annotations.
"""
from __future__ import annotations

import json
import os
import re
import warnings
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from nltk.tokenize import RegexpTokenizer
from PIL import Image
from tqdm import tqdm

from pixelface.core.config import ConfigError, default_config, plain_name_problem, require_path
from pixelface.core.errors import InputWarning
from pixelface.core.files import atomic_write, write_bytes_atomic
from pixelface.data.images import ImageReadError, read_rgb, resize_and_crop, signed_tensor
from pixelface.data.mask_files import read_labels
from pixelface.data.mask_input import generator_input
from pixelface.data.masks import LABELS, LABEL_ID, MASK_ORDERS, label_to_color, resize_labels

CAPTIONS_PER_IMAGE = 10
MAX_INDEX_BYTES = 256 << 20    # a caption index larger than this is refused before it is read or inflated
PAIR_ASPECT_TOLERANCE = 0.01   # relative difference of image and mask aspect ratios accepted
INDEX_NAME = "dataset2.json"
MISSING_SHOWN = 5  # missing files named in an error; the count gives the rest

_WORDS = RegexpTokenizer(r"\w+")


class DatasetError(ValueError):
    """The index or the dataset folder is not in the MM-CelebA-HQ layout."""


# ---------------------------------------------------------------------------------------------------------------
# Captions and the index


def clean_caption(text: str, max_words: int = 30, rng: np.random.Generator | None = None) -> str:
    """Lower-case `\\w+` words with non-ASCII characters dropped, joined by spaces, at most `max_words` of them.

    A longer caption keeps a random order-preserving subset of `max_words` words when `rng` is given (the
    reference's behaviour in training), otherwise its first `max_words` words.
    """
    words = [w.encode("ascii", "ignore").decode("ascii") for w in _WORDS.tokenize(text.lower())]
    words = [w for w in words if w]
    if not words:
        raise ValueError(f"caption {text!r} has no ASCII words")
    if len(words) > max_words:
        keep = np.sort(rng.choice(len(words), max_words, replace=False)) if rng is not None else range(max_words)
        words = [words[k] for k in keep]
    return " ".join(words)


def _index_bytes(path: Path) -> bytes:
    """The bytes of dataset2.json at `path`, or inside the zip archive at `path`."""
    if not path.is_file():
        raise DatasetError(f"caption index {path} does not exist")
    too_big = f"larger than {MAX_INDEX_BYTES >> 20} MiB (MMCelebA's is 28 MiB); not a caption index"
    if path.suffix.lower() != ".zip":
        if path.stat().st_size > MAX_INDEX_BYTES:
            raise DatasetError(f"{path}: {too_big}")
        return path.read_bytes()
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if Path(m.filename).name == INDEX_NAME]
            if len(members) != 1:
                raise DatasetError(f"{path}: expected exactly one {INDEX_NAME} in the archive, found {len(members)}")
            if members[0].file_size > MAX_INDEX_BYTES:         # the header's size, before anything is inflated
                raise DatasetError(f"{path}: {INDEX_NAME} inflates to {members[0].file_size:,} bytes, {too_big}")
            with archive.open(members[0]) as member:          # and never more than that, whatever the header says
                data = member.read(MAX_INDEX_BYTES + 1)
            if len(data) > MAX_INDEX_BYTES:
                raise DatasetError(f"{path}: {INDEX_NAME} {too_big}")
            return data
    except zipfile.BadZipFile as e:
        raise DatasetError(f"{path}: not a readable zip archive ({e})") from None


def _read_index_json(path: Path) -> dict:
    try:
        tree = json.loads(_index_bytes(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not a readable {INDEX_NAME} ({e})") from None
    if not isinstance(tree, dict) or not all(isinstance(v, dict) for v in tree.values()):
        raise DatasetError(f"{path}: expected {{split: {{filenames, keynames, captions}}}} at the top level")
    return tree


def _split_images(path: Path, name: str, split: dict) -> list[tuple[str, list[str]]]:
    """One split's parallel per-caption lists -> [(image id, its captions)], checking their shape."""
    lists = {}
    for key in ("filenames", "keynames", "captions"):
        if not isinstance(split.get(key), list):
            raise DatasetError(f"{path}: split '{name}' has no list '{key}'")
        lists[key] = split[key]
    lengths = {key: len(v) for key, v in lists.items()}
    if len(set(lengths.values())) != 1:
        raise DatasetError(f"{path}: split '{name}' lists differ in length {lengths}")
    n = lengths["captions"]
    if n % CAPTIONS_PER_IMAGE:
        raise DatasetError(f"{path}: split '{name}' has {n} captions, not a multiple of {CAPTIONS_PER_IMAGE}")
    if not all(isinstance(c, str) for c in lists["captions"]):
        raise DatasetError(f"{path}: split '{name}' has captions that are not strings")
    names = [str(f) for f in lists["filenames"]]
    images = []
    for start in range(0, n, CAPTIONS_PER_IMAGE):
        block = names[start:start + CAPTIONS_PER_IMAGE]
        if len(set(block)) != 1:
            raise DatasetError(f"{path}: split '{name}' entries {start}..{start + CAPTIONS_PER_IMAGE - 1} name "
                               f"several images {sorted(set(block))}; each image needs {CAPTIONS_PER_IMAGE} "
                               f"consecutive captions")
        problem = plain_name_problem(block[0])   # ids become file names: never '../x' or '/abs'
        if problem:
            raise DatasetError(f"{path}: split '{name}' entry {start}: image id {problem}")
        images.append((block[0], lists["captions"][start:start + CAPTIONS_PER_IMAGE]))
    return images


def load_index(path: str | Path) -> dict[str, list[tuple[str, list[str]]]]:
    """Read dataset2.json (or a .zip holding it) -> {"train": [(id, 10 captions)], "test": [...]}.

    As in the reference, every split other than "train" counts as test and they are concatenated in file
    order. Each image must own exactly one block of 10 consecutive captions and belong to one split only.
    """
    path = Path(path)
    tree = _read_index_json(path)
    index = {"train": [], "test": []}
    for name, split in tree.items():
        index["train" if name == "train" else "test"] += _split_images(path, name, split)
    for name, images in index.items():
        repeated = _repeated([image_id for image_id, _ in images])
        if repeated:
            raise DatasetError(f"{path}: split '{name}' lists images {repeated[:MISSING_SHOWN]} in more than one "
                               f"block of captions")
    shared = sorted({i for i, _ in index["train"]} & {i for i, _ in index["test"]})
    if shared:
        raise DatasetError(f"{path}: {len(shared)} images are in both train and test, e.g. {shared[:MISSING_SHOWN]}")
    return index


def _repeated(ids: list[str]) -> list[str]:
    seen, repeated = set(), set()
    for i in ids:
        (repeated if i in seen else seen).add(i)
    return sorted(repeated)


# ---------------------------------------------------------------------------------------------------------------
# Images and masks


class FaceDataset(torch.utils.data.Dataset):
    """MM-CelebA-HQ images with their parsing masks and one caption each; one item per image.

    Items are dicts: image (3,S,S) and mask (3,S,S) floats in [-1,1], labels (S,S) int64, caption (cleaned str),
    id (str) and index (int). In training the caption slot and the subset of an over-long caption are a pure
    function of (cfg.SEED, epoch, index), so a resumed run sees the same captions whatever the worker layout;
    evaluation always uses slot DATA.EVAL_CAPTION.
    """

    def __init__(self, cfg, split: str, train: bool):
        data = cfg.DATA
        _check_data_config(data)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        root = require_path(cfg, "DATA.ROOT", "dataset folder")
        self.index_path = root / data.INDEX
        self.items = load_index(self.index_path)[split]
        if not self.items:
            raise DatasetError(f"{self.index_path}: split '{split}' has no images")
        self.ids = [image_id for image_id, _ in self.items]
        self.image_paths = [root / data.IMAGE_DIR / f"{i}.{data.IMAGE_EXT}" for i in self.ids]
        self.mask_paths = [root / data.MASK_DIR / f"{i}.{data.MASK_EXT}" for i in self.ids]
        _check_files_exist(self.image_paths + self.mask_paths, f"{self.index_path} (split '{split}')")
        self.split, self.train, self.seed, self.epoch = split, train, cfg.SEED, 0
        self.size, self.words, self.eval_slot = data.IMAGE_SIZE, data.WORDS_NUM, data.EVAL_CAPTION
        self.mask_kind, self.mask_resize, self.mask_order = data.MASK_KIND, data.MASK_RESIZE, data.MASK_ORDER
        self._size_warned = False
        self.mask_input = cfg.MODEL.MASK_INPUT
        self.snap_distance, self.max_off_palette = data.MASK_SNAP_DISTANCE, data.MASK_MAX_OFF_PALETTE

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int):
        """Select the training captions of `epoch` (call before iterating, as with DistributedSampler)."""
        self.epoch = epoch

    def captions(self, i: int) -> list[str]:
        """The raw captions of image `i`, in index order."""
        return list(self.items[i][1])

    def caption(self, i: int) -> str:
        """The cleaned caption item `i` carries in the current epoch."""
        if not self.train:
            return clean_caption(self.items[i][1][self.eval_slot], self.words)
        # A fresh generator per (seed, epoch, index): no state shared between workers or carried across resumes.
        rng = np.random.default_rng([self.seed, self.epoch, i])
        slot = int(rng.integers(CAPTIONS_PER_IMAGE))
        return clean_caption(self.items[i][1][slot], self.words, rng)

    def __getitem__(self, i: int) -> dict:
        # ImageReadError names the file, so a DataLoader worker or a DDP rank fails saying which one.
        raw = read_rgb(self.image_paths[i], "image")
        labels_full = read_labels(self.mask_paths[i], self.snap_distance, self.max_off_palette, self.mask_order,
                                  kind=self.mask_kind)
        self._check_pair(i, raw.size, labels_full.shape)
        image = resize_and_crop(raw, self.size, Image.BILINEAR)
        labels = resize_labels(labels_full, self.size)
        mask = generator_input(labels_full, self.size, self.mask_input, self.mask_resize)
        return {"image": signed_tensor(image), "mask": mask, "labels": labels, "caption": self.caption(i),
                "id": self.ids[i], "index": i}


    def _check_pair(self, i: int, image_size: tuple[int, int], mask_shape: tuple[int, ...]) -> None:
        """An image and its mask must show the same picture: another aspect ratio is an error naming both files;
        another size of the same aspect is resized (each to DATA.IMAGE_SIZE), with one warning per dataset unless the
        image is an exact multiple of the mask (MMCelebA: 1024-px images, 512-px masks)."""
        (iw, ih), (mh, mw) = image_size, mask_shape[-2:]
        if (iw, ih) == (mw, mh):
            return
        if abs((iw / ih) / (mw / mh) - 1) > PAIR_ASPECT_TOLERANCE:
            raise ImageReadError(f"{self.mask_paths[i]}: the mask is {mw}x{mh} but its image {self.image_paths[i]} is "
                                 f"{iw}x{ih}; different aspect ratios, so the regions would not line up")
        scale = iw / mw
        if scale == round(scale) and ih == round(scale) * mh:
            return          # an exact multiple, as MMCelebA's 1024-px images over their 512-px masks: nothing to say
        if not self._size_warned:
            self._size_warned = True
            warnings.warn(f"{self.mask_paths[i]} is {mw}x{mh} but its image is {iw}x{ih}: both are resized to "
                          f"{self.size} (same aspect ratio; later pairs like it are not reported)", InputWarning,
                          stacklevel=2)


def _check_data_config(data):
    choices = {"MASK_KIND": ("color", "label"), "MASK_RESIZE": ("bilinear", "nearest"), "MASK_ORDER": MASK_ORDERS}
    for key, allowed in choices.items():
        if data[key] not in allowed:
            raise ConfigError(f"DATA.{key} = {data[key]!r}: expected one of {allowed}")
    if not 0 <= data.EVAL_CAPTION < CAPTIONS_PER_IMAGE:
        raise ConfigError(f"DATA.EVAL_CAPTION = {data.EVAL_CAPTION}: expected a slot in 0..{CAPTIONS_PER_IMAGE - 1}")
    if data.WORDS_NUM < 1 or data.IMAGE_SIZE < 1:
        raise ConfigError(f"DATA.WORDS_NUM = {data.WORDS_NUM} and DATA.IMAGE_SIZE = {data.IMAGE_SIZE} must be >= 1")


def _check_files_exist(paths: list[Path], source: str):
    """One error naming how many of `paths` are missing and the first few, instead of a crash mid-epoch."""
    listed = {}  # one directory listing per folder is far cheaper than 30,000 stat calls
    for folder in {p.parent for p in paths}:
        listed[folder] = set(os.listdir(folder)) if folder.is_dir() else set()
    missing = [p for p in paths if p.name not in listed[p.parent]]
    if missing:
        shown = ", ".join(str(p) for p in missing[:MISSING_SHOWN])
        raise DatasetError(f"{len(missing)} of {len(paths)} image and mask files listed in {source} are missing, "
                           f"first: {shown}")


# ---------------------------------------------------------------------------------------------------------------
# Building the layout from CelebA-HQ and CelebAMask-HQ


# CelebAMask-HQ names three parts differently from LABELS.
PART_ALIASES = {"eye_g": "eyeglasses", "ear_r": "earring", "neck_l": "necklace"}
_PART_FILE = re.compile(r"^(\d+)_(\w+)\.png$")
_SAVE_FORMAT = {".jpg": ("JPEG", {"quality": 95}), ".png": ("PNG", {})}


_LAYOUT = default_config().DATA  # prepare_mmceleba writes the layout the default config reads


def _output_paths(out: Path, image_id: str) -> tuple[Path, Path]:
    return (out / _LAYOUT.IMAGE_DIR / f"{image_id}.{_LAYOUT.IMAGE_EXT}",
            out / _LAYOUT.MASK_DIR / f"{image_id}.{_LAYOUT.MASK_EXT}")


class PrepareError(ValueError):
    """The raw downloads cannot be turned into the MM-CelebA-HQ layout, or the result is incomplete."""


@dataclass
class PrepareSummary:
    written: int  # files written by this run
    skipped: int  # files already present and complete
    total: int  # image ids in the index


def find_part_masks(parts_dir: Path) -> dict[str, dict[str, Path]]:
    """Search `parts_dir` recursively for `{id:05d}_{part}.png` -> {image id: {label name: path}}."""
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(Path(parts_dir).rglob("*.png")):
        match = _PART_FILE.match(path.name)
        if not match:
            continue
        image_id, part = str(int(match[1])), PART_ALIASES.get(match[2], match[2])
        if part not in LABEL_ID or part == "background":
            raise PrepareError(f"{path}: unknown part '{match[2]}'; expected one of {LABELS[1:]} "
                               f"(or {tuple(PART_ALIASES)})")
        parts = found.setdefault(image_id, {})
        if part in parts:
            raise PrepareError(f"{path}: part '{part}' of image {image_id} also found at {parts[part]}")
        parts[part] = path
    return found


def merge_parts(part_paths: dict[str, Path]) -> np.ndarray:
    """Per-part binary PNGs -> (H,W) uint8 label map; later classes in LABELS order paint over earlier ones,
    as CelebAMask-HQ's own g_mask.py does (so hair covers skin, cloth covers neck)."""
    labels = None
    for part in sorted(part_paths, key=LABEL_ID.__getitem__):
        on = np.asarray(read_rgb(part_paths[part], "part mask").convert("L")) > 127
        if labels is None:
            labels = np.zeros(on.shape, np.uint8)
        if on.shape != labels.shape:
            raise PrepareError(f"{part_paths[part]}: size {on.shape[::-1]} differs from the image's other parts "
                               f"{labels.shape[::-1]}")
        labels[on] = LABEL_ID[part]
    return labels


def _is_complete(path: Path, size: int, mode: str) -> bool:
    """True when `path` holds a readable size x size image of `mode`. A readable image of another size or mode
    comes from a different run and is not ours to overwrite."""
    try:
        with Image.open(path) as image:
            found = (image.size, image.mode)
    except OSError:  # absent, or unreadable (our writes are atomic, so never half-written by us)
        return False
    if found != ((size, size), mode):
        raise PrepareError(f"{path} exists as a {found[0]} {found[1]} image, expected ({size}, {size}) {mode}; "
                           f"remove it or choose another --out, --size or --mask-format")
    return True


def _save_atomic(image: Image.Image, path: Path):
    fmt, options = _SAVE_FORMAT[path.suffix]
    atomic_write(path, lambda tmp: image.save(tmp, format=fmt, **options))


def _write_image(source: Path, target: Path, size: int):
    if not source.is_file():
        raise PrepareError(f"raw image {source} is missing")
    _save_atomic(resize_and_crop(read_rgb(source, "raw image"), size, Image.LANCZOS), target)


def _write_mask(part_paths: dict[str, Path], target: Path, size: int, mask_format: str):
    if not part_paths:
        raise PrepareError("no part masks found")
    labels = np.asarray(resize_and_crop(Image.fromarray(merge_parts(part_paths)), size, Image.NEAREST))
    _save_atomic(Image.fromarray(label_to_color(labels) if mask_format == "color" else labels), target)


def _prepare_one(task) -> tuple[int, int, list[str]]:
    """Write one id's image and mask -> (files written, files skipped, why a file could not be written)."""
    image_src, part_paths, image_out, mask_out, size, mask_format = task
    jobs = ((image_out, "RGB", lambda: _write_image(image_src, image_out, size)),
            (mask_out, "RGB" if mask_format == "color" else "L",
             lambda: _write_mask(part_paths, mask_out, size, mask_format)))
    written = skipped = 0
    problems = []
    for target, mode, write in jobs:
        if _is_complete(target, size, mode):
            skipped += 1
            continue
        try:
            write()
            written += 1
        except (OSError, PrepareError, ImageReadError) as e:  # a bad raw file spoils one id, not the whole run
            problems.append(str(e))
    return written, skipped, problems


def _copy_index(index: Path, out: Path):
    """Place dataset2.json in `out` (unpacked from a zip when needed), never replacing a different one."""
    data = _index_bytes(index)
    target = out / _LAYOUT.INDEX
    if target.exists():
        if target.read_bytes() != data:
            raise PrepareError(f"{target} exists and differs from {index}; remove it or choose another --out")
        return
    write_bytes_atomic(target, data)


def prepare_mmceleba(celeba_hq: str | Path, parts: str | Path, index: str | Path, out: str | Path, size: int = 256,
                     mask_format: str = "color", workers: int = 1, progress: bool = False) -> PrepareSummary:
    """Write the MM-CelebA-HQ layout into `out` from raw downloads; resumable, verified at the end.

    celeba_hq: folder of CelebA-HQ images {id}.jpg (any size); parts: CelebAMask-HQ-mask-anno (searched
    recursively for {id:05d}_{part}.png); index: dataset2.json or a zip holding it. Images are resized with
    LANCZOS and masks with nearest to size x size; masks are stored as palette colours ('color') or label ids
    ('label'). Outputs already present are kept. Raises PrepareError listing every id left without an image or
    a mask (the others are still written).
    """
    celeba_hq, parts, index, out = Path(celeba_hq), Path(parts), Path(index), Path(out)
    if mask_format not in ("color", "label"):
        raise PrepareError(f"mask format {mask_format!r}: expected 'color' or 'label'")
    if out.exists() and not out.is_dir():
        raise PrepareError(f"--out {out} is a file, expected a folder")
    for folder, what in ((celeba_hq, "CelebA-HQ image folder"), (parts, "CelebAMask-HQ part-mask folder")):
        if not folder.is_dir():
            raise PrepareError(f"{what} {folder} does not exist")
    split_index = load_index(index)
    ids = [image_id for split in split_index.values() for image_id, _ in split]
    part_masks = find_part_masks(parts)
    for folder in (_LAYOUT.IMAGE_DIR, _LAYOUT.MASK_DIR):
        (out / folder).mkdir(parents=True, exist_ok=True)
    _copy_index(index, out)
    tasks = [(celeba_hq / f"{i}.jpg", part_masks.get(i, {}), *_output_paths(out, i), size, mask_format) for i in ids]
    results = _run_tasks(tasks, workers, progress)
    summary = PrepareSummary(sum(r[0] for r in results), sum(r[1] for r in results), len(ids))
    problems = {i: "; ".join(r[2]) for i, r in zip(ids, results) if r[2]}
    incomplete = [i for i in ids if not all(path.is_file() for path in _output_paths(out, i))]
    if incomplete:
        shown = "; ".join(f"{i}: {problems.get(i, 'output missing')}" for i in incomplete[:20])
        raise PrepareError(f"{out}: {len(incomplete)} of {len(ids)} images in {index} lack an image or a mask "
                           f"({summary.written} files written this run); first: {shown}")
    return summary


def _run_tasks(tasks: list, workers: int, progress: bool) -> list:
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = pool.map(_prepare_one, tasks, chunksize=64)
            return list(_progress(results, len(tasks), progress))
    return list(_progress(map(_prepare_one, tasks), len(tasks), progress))


def _progress(results, total: int, show: bool):
    return tqdm(results, total=total, unit="img") if show else results
