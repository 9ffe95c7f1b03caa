"""Dataset writer: write_dataset renders faces into the MMCelebA layout (see data/README.md):
dataset2.json (10 consecutive captions per image, 80/20 train/test), images/<id>.jpg, masks/<id>.png
(CelebAMask-HQ palette colours, lossless) and attributes.json. make_face gives face `index` of a
dataset `seed` from independent random streams, so results do not depend on worker count or order."""
from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
from PIL import Image

from pixelface.core.files import atomic_write, write_text_atomic
from pixelface.data.masks import label_to_color
from .attributes import sample_attributes
from .captions import make_captions
from .render import render_face

TEST_SHARE = 0.2
CAPTIONS_PER_IMAGE = 10
JPEG_OPTIONS = {"quality": 95, "subsampling": 0}   # 4:4:4: make-up and lips are a pixel or two at 64 px


def face_rng(seed: int, *key: int) -> np.random.Generator:
    """Independent stream per (seed, purpose, index): results do not depend on worker count or order."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def make_face(seed: int, index: int, size: int) -> tuple[dict, np.ndarray, np.ndarray, list[str]]:
    """Face `index` of the dataset rendered with `seed`: (attributes, image, labels, captions)."""
    attrs = sample_attributes(face_rng(seed, 0, index))
    image, labels = render_face(attrs, size, face_rng(seed, 1, index))
    return attrs, image, labels, make_captions(attrs, face_rng(seed, 2, index), CAPTIONS_PER_IMAGE)


def _save_atomic(array: np.ndarray, path: Path, fmt: str, **options):
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format=fmt, **options))


def _render_and_save(task: tuple) -> tuple[dict, list[str]]:
    seed, index, size, out = task
    attrs, image, labels, captions = make_face(seed, index, size)
    _save_atomic(image, out / "images" / f"{index}.jpg", "JPEG", **JPEG_OPTIONS)
    _save_atomic(label_to_color(labels), out / "masks" / f"{index}.png", "PNG")
    return attrs, captions


def split_ids(num: int, seed: int) -> tuple[list[int], list[int]]:
    """(train ids, test ids), both ascending; the test share is TEST_SHARE of the images."""
    num_test = max(1, int(round(num * TEST_SHARE)))
    test = set(face_rng(seed, 3).permutation(num)[:num_test].tolist())
    return [i for i in range(num) if i not in test], sorted(test)


def build_index(captions: list[list[str]], train: list[int], test: list[int]) -> dict:
    """dataset2.json content: one entry per caption, each image's captions consecutive, global
    caption ids (keynames) numbering train first, then test."""
    index, key = {}, 0
    for split, ids in (("train", train), ("test", test)):
        entries = {"filenames": [], "keynames": [], "captions": []}
        for i in ids:
            for caption in captions[i]:
                entries["filenames"].append(str(i))
                entries["keynames"].append(key)
                entries["captions"].append(caption)
                key += 1
        index[split] = entries
    return index


RENDERING_MARKER = ".rendering"


def unfinished_render(out: Path) -> bool:
    """True when `out` holds a render that write_dataset started and did not finish."""
    return (Path(out) / RENDERING_MARKER).is_file()


def _check_output(out: Path, force: bool):
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{out} is not empty; refusing to overwrite it (pass --force / force=True "
                                  "to render into it)")
        # A half-rewritten folder must not pass for a complete dataset.
        (out / "dataset2.json").unlink(missing_ok=True)


def write_dataset(out: str | Path, num: int, size: int, seed: int, workers: int = 2, force: bool = False) -> Path:
    """Render `num` faces of `size` px into `out` in the MMCelebA layout (see module doc) and return
    `out`. dataset2.json is written last, so a folder that has it is complete."""
    out = Path(out)
    if num < 2:
        raise ValueError(f"num = {num}: need at least 2 faces (one for each split)")
    if size < 16:
        raise ValueError(f"size = {size}: synthetic faces need at least 16 pixels")
    if workers < 1:
        raise ValueError(f"workers = {workers}: need at least 1")
    _check_output(out, force)
    for folder in ("images", "masks"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    (out / RENDERING_MARKER).touch()   # "ours, unfinished": a later call may render into it again
    tasks = [(seed, i, size, out) for i in range(num)]
    if workers == 1:
        results = [_render_and_save(t) for t in tasks]
    else:
        with multiprocessing.Pool(workers) as pool:
            results = pool.map(_render_and_save, tasks, chunksize=max(1, min(64, num // (4 * workers))))
    train, test = split_ids(num, seed)
    attributes = {str(i): attrs for i, (attrs, _) in enumerate(results)}
    write_text_atomic(out / "attributes.json", json.dumps(attributes))
    index = build_index([captions for _, captions in results], train, test)
    write_text_atomic(out / "dataset2.json", json.dumps(index))
    (out / RENDERING_MARKER).unlink()
    return out
