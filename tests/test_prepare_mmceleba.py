import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pixelface.core.config import load_config
from conftest import REPO_ROOT
from pixelface.data.datasets import FaceDataset, PrepareError, prepare_mmceleba
from pixelface.data.masks import LABEL_ID, color_to_label

IDS = {"train": ["0", "1", "2"], "test": ["3"]}
PARTS = 32  # CelebAMask-HQ part masks are half the CelebA-HQ image size, as here
OUT = 16

# Overlapping boxes (rows, cols) per part file name; "eye_g" is CelebAMask-HQ's name for eyeglasses.
BOXES = {"skin": (slice(4, 28), slice(4, 28)), "hair": (slice(0, 12), slice(0, 32)),
         "nose": (slice(12, 20), slice(12, 20)), "neck": (slice(24, 32), slice(8, 24)),
         "cloth": (slice(28, 32), slice(0, 32)), "eye_g": (slice(8, 20), slice(4, 28)),
         "l_eye": (slice(12, 16), slice(4, 8))}
PARTS_OF = {"0": ["skin", "hair", "nose", "neck", "cloth"], "1": ["cloth", "l_eye", "eye_g", "nose", "hair", "skin"],
            "2": ["skin"], "3": ["skin", "hair"]}


def expected_labels(image_id: str) -> np.ndarray:
    """Painted in CelebAMask-HQ order by hand: skin, nose, eyeglasses, l_eye, hair, neck, cloth."""
    labels = np.zeros((PARTS, PARTS), np.uint8)
    for part, label in (("skin", 1), ("nose", 2), ("eye_g", 3), ("l_eye", 4), ("hair", 13), ("neck", 17),
                        ("cloth", 18)):
        if part in PARTS_OF[image_id]:
            labels[BOXES[part]] = label
    return labels


@pytest.fixture()
def raw(tmp_path):
    celeba, parts = tmp_path / "celeba", tmp_path / "anno"
    celeba.mkdir()
    rng = np.random.default_rng(0)
    for image_id, names in PARTS_OF.items():
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(celeba / f"{image_id}.jpg")
        folder = parts / ("1" if image_id == "3" else "0")  # found by a recursive search
        folder.mkdir(parents=True, exist_ok=True)
        for part in names:
            on = np.zeros((PARTS, PARTS), np.uint8)
            on[BOXES[part]] = 255
            Image.fromarray(on).save(folder / f"{int(image_id):05d}_{part}.png")
    index = {split: {"filenames": [i for i in ids for _ in range(10)], "keynames": list(range(10 * len(ids))),
                     "captions": [f"a face number {i}" for i in ids for _ in range(10)]} for split, ids in IDS.items()}
    (tmp_path / "dataset2.json").write_text(json.dumps(index))
    return {"celeba_hq": celeba, "parts": parts, "index": tmp_path / "dataset2.json", "out": tmp_path / "out"}


@pytest.mark.parametrize("mask_format", ["color", "label"])
def test_prepare_merges_parts_in_celebamask_order(raw, mask_format):
    summary = prepare_mmceleba(**raw, size=OUT, mask_format=mask_format)
    assert (summary.written, summary.skipped, summary.total) == (8, 0, 4)
    out, written = raw["out"], {}
    assert (out / "dataset2.json").read_bytes() == raw["index"].read_bytes()
    for image_id in PARTS_OF:
        image = Image.open(out / f"images/{image_id}.jpg")
        mask = Image.open(out / f"masks/{image_id}.png")
        assert image.size == mask.size == (OUT, OUT) and image.mode == "RGB"
        if mask_format == "color":
            labels = color_to_label(np.asarray(mask), max_off_palette=0.0)
        else:
            assert mask.mode == "L"
            labels = np.asarray(mask)
        assert np.array_equal(labels, expected_labels(image_id)[::2, ::2]), image_id
        written[image_id] = labels
    # The overlap rule spelled out on image 1, at half the part-mask coordinates.
    assert written["1"][3, 5] == LABEL_ID["hair"]  # hair over skin and glasses
    assert written["1"][7, 7] == LABEL_ID["eyeglasses"]  # glasses over nose
    assert written["1"][7, 3] == LABEL_ID["l_eye"]  # eye over glasses
    assert written["1"][15, 5] == LABEL_ID["cloth"] and written["1"][13, 5] == LABEL_ID["skin"]
    assert written["0"][13, 5] == LABEL_ID["neck"] and written["0"][15, 5] == LABEL_ID["cloth"]  # neck over skin


def test_prepared_layout_loads_as_a_face_dataset(raw):
    prepare_mmceleba(**raw, size=OUT)
    cfg = load_config(None, [f"DATA.ROOT={raw['out']}", f"DATA.IMAGE_SIZE={OUT}"])
    ds = FaceDataset(cfg, "test", train=False)
    item = ds[0]
    assert item["id"] == "3" and item["caption"] == "a face number 3"
    assert np.array_equal(item["labels"].numpy(), expected_labels("3")[::2, ::2])


def test_second_run_skips_and_a_deleted_output_is_rebuilt(raw):
    prepare_mmceleba(**raw, size=OUT)
    mask = raw["out"] / "masks/2.png"
    stamp = mask.stat().st_mtime_ns
    summary = prepare_mmceleba(**raw, size=OUT, workers=2)
    assert (summary.written, summary.skipped) == (0, 8)
    assert mask.stat().st_mtime_ns == stamp
    (raw["out"] / "images/1.jpg").unlink()
    summary = prepare_mmceleba(**raw, size=OUT)
    assert (summary.written, summary.skipped) == (1, 7)
    assert Image.open(raw["out"] / "images/1.jpg").size == (OUT, OUT)
    assert not list(raw["out"].rglob("*pixelface-tmp"))


def test_output_of_another_size_is_an_error_not_overwritten(raw):
    prepare_mmceleba(**raw, size=OUT)
    before = (raw["out"] / "images/0.jpg").read_bytes()
    with pytest.raises(PrepareError, match="images/0.jpg exists as a"):
        prepare_mmceleba(**raw, size=2 * OUT)
    assert (raw["out"] / "images/0.jpg").read_bytes() == before


def test_missing_raw_files_fail_the_completeness_check(raw):
    (raw["celeba_hq"] / "2.jpg").unlink()
    for part in raw["parts"].rglob("00003_*.png"):
        part.unlink()
    with pytest.raises(PrepareError) as info:
        prepare_mmceleba(**raw, size=OUT)
    message = str(info.value)
    assert "2 of 4" in message and f"2: raw image {raw['celeba_hq'] / '2.jpg'} is missing" in message
    assert "3: no part masks found" in message
    assert (raw["out"] / "images/0.jpg").is_file() and (raw["out"] / "masks/2.png").is_file()


def test_unknown_part_name_is_an_error_naming_the_file(raw):
    Image.new("L", (PARTS, PARTS)).save(raw["parts"] / "0" / "00000_moustache.png")
    with pytest.raises(PrepareError, match="00000_moustache.png: unknown part 'moustache'"):
        prepare_mmceleba(**raw, size=OUT)


def test_cli_exits_nonzero_listing_what_is_missing(raw):
    (raw["celeba_hq"] / "1.jpg").unlink()
    args = [f"--{k.replace('_', '-')}={v}" for k, v in raw.items()]
    done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts/prepare_mmceleba.py"), *args, f"--size={OUT}",
                           "--workers=1"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "1 of 4" in done.stderr and "1.jpg is missing" in done.stderr
