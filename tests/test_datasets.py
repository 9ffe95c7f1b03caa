import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from pixelface.core.config import load_config
from pixelface.core.errors import InputWarning
from conftest import REPO_ROOT
from pixelface.data.datasets import DatasetError, FaceDataset, clean_caption, load_index
from pixelface.data.images import resize_and_crop
from pixelface.data.masks import PALETTE, MaskError, color_tensor

REAL_INDEX = REPO_ROOT.parent / "shared/data/dataset2.zip"
SIZE = 32


# --------------------------------------------------------------------------------------------------------------
# The real index


@pytest.fixture(scope="module")
def real_index():
    if not REAL_INDEX.is_file():   # CI and our machines have it beside the checkout; a plain clone does not
        pytest.skip(f"the real MMCelebA index is not at {REAL_INDEX}")
    return load_index(REAL_INDEX)


def test_real_index_has_the_published_splits(real_index):
    assert len(real_index["train"]) == 24000 and len(real_index["test"]) == 6000
    assert all(len(caps) == 10 for split in real_index.values() for _, caps in split)
    train_ids = {i for i, _ in real_index["train"]}
    test_ids = {i for i, _ in real_index["test"]}
    assert len(train_ids) == 24000 and len(test_ids) == 6000 and not train_ids & test_ids
    assert real_index["train"][0][0] == "0"
    assert real_index["train"][0][1][0] == "The person has high cheekbones, and pointy nose. She is wearing lipstick."


def test_real_captions_clean_to_a_small_vocabulary(real_index):
    words = {w for split in real_index.values() for _, caps in split[::50] for c in caps
             for w in clean_caption(c).split()}
    assert 40 <= len(words) <= 64  # 64 words over every caption of the reference's dataset2.json
    assert all(w.isascii() and w.islower() for w in words)


# --------------------------------------------------------------------------------------------------------------
# Captions


def test_clean_caption_drops_punctuation_case_and_non_ascii():
    assert clean_caption("She has Wavy-hair, and  a Café smile!") == "she has wavy hair and a caf smile"
    assert clean_caption("über 日本 ok") == "ber ok"


def test_long_caption_keeps_an_order_preserving_subset():
    text = " ".join(f"w{k}" for k in range(40))
    assert clean_caption(text) == " ".join(f"w{k}" for k in range(30))
    picked = clean_caption(text, rng=np.random.default_rng(1)).split()
    assert len(picked) == 30 and len(set(picked)) == 30
    assert [int(w[1:]) for w in picked] == sorted(int(w[1:]) for w in picked)
    assert picked != [f"w{k}" for k in range(30)]
    assert clean_caption(text, 5, np.random.default_rng(1)) == clean_caption(text, 5, np.random.default_rng(1))


def test_empty_caption_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'!!! 日本'"):
        clean_caption("!!! 日本")


# --------------------------------------------------------------------------------------------------------------
# Index validation


def _write_index(path, splits):
    tree = {name: {"filenames": [i for i in ids for _ in range(10)],
                   "keynames": list(range(10 * len(ids))),
                   "captions": [f"caption {k} of image {i}" for i in ids for k in range(10)]}
            for name, ids in splits.items()}
    path.write_text(json.dumps(tree))
    return tree


def test_load_index_concatenates_every_non_train_split(tmp_path):
    _write_index(tmp_path / "d.json", {"train": ["0", "1"], "val": ["2"], "test": ["3"]})
    index = load_index(tmp_path / "d.json")
    assert [i for i, _ in index["train"]] == ["0", "1"]
    assert [i for i, _ in index["test"]] == ["2", "3"]
    assert index["test"][1][1][4] == "caption 4 of image 3"


@pytest.mark.parametrize("damage, message", [
    (lambda t: t["train"]["keynames"].pop(), "differ in length"),
    (lambda t: t["train"]["filenames"].__setitem__(3, "1"), "consecutive"),
    (lambda t: t["test"]["filenames"].__setitem__(slice(0, 10), ["0"] * 10), "both train and test"),
    (lambda t: [t["train"][k].extend(t["train"][k][:10]) for k in ("filenames", "keynames", "captions")],
     "more than one block"),
])
def test_load_index_rejects_malformed_files(tmp_path, damage, message):
    tree = _write_index(tmp_path / "d.json", {"train": ["0", "1"], "test": ["2"]})
    damage(tree)
    (tmp_path / "d.json").write_text(json.dumps(tree))
    with pytest.raises(DatasetError, match=message) as info:
        load_index(tmp_path / "d.json")
    assert "d.json" in str(info.value)


# --------------------------------------------------------------------------------------------------------------
# FaceDataset on a tiny fake dataset

TRAIN_IDS, TEST_IDS = ["0", "1", "2", "3"], ["7", "8"]


def _draw_labels(seed: int) -> np.ndarray:
    """A label map of 8-pixel-aligned blocks, so 2x nearest downscaling keeps it exact and JPEG blocks are flat."""
    rng = np.random.default_rng(seed)
    blocks = rng.choice([0, 1, 2, 13, 4, 17], size=(SIZE // 8, SIZE // 8))
    return np.kron(blocks, np.ones((8, 8), np.int64)).astype(np.uint8)


@pytest.fixture()
def fake_root(tmp_path):
    root = tmp_path / "mmceleba"
    for folder in ("images", "masks", "labels"):
        (root / folder).mkdir(parents=True)
    tree = _write_index(root / "dataset2.json", {"train": TRAIN_IDS, "test": TEST_IDS})
    tree["train"]["captions"][10 * 2 + 5] = " ".join(f"w{k}" for k in range(35))  # image 2, slot 5: long
    (root / "dataset2.json").write_text(json.dumps(tree))
    rng = np.random.default_rng(0)
    for n, image_id in enumerate(TRAIN_IDS + TEST_IDS):
        labels = _draw_labels(n)
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(root / f"images/{image_id}.jpg")
        # Noise plus JPEG (4:4:4, so chroma stays inside the flat 8x8 blocks): every colour must be snapped.
        noisy = PALETTE[labels].astype(int) + rng.integers(-12, 13, (SIZE, SIZE, 3))
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(root / f"masks/{image_id}.jpg", quality=90,
                                                                       subsampling=0)
        Image.fromarray(labels).save(root / f"labels/{image_id}.png")
    return root


def _cfg(root, SEED=3201, **data):
    overrides = [f"SEED={SEED}", f"DATA.ROOT={root}", "DATA.MASK_EXT=jpg", f"DATA.IMAGE_SIZE={SIZE}"]
    return load_config(None, overrides + [f"DATA.{k}={v}" for k, v in data.items()])


@pytest.mark.parametrize("kind, resize", [("color", "bilinear"), ("color", "nearest"), ("label", "bilinear"),
                                          ("label", "nearest")])
@pytest.mark.parametrize("size", [SIZE, SIZE // 2])
def test_items_have_the_documented_shapes_and_labels(fake_root, kind, resize, size):
    mask_files = {"MASK_DIR": "labels", "MASK_EXT": "png"} if kind == "label" else {}
    ds = FaceDataset(_cfg(fake_root, MASK_KIND=kind, MASK_RESIZE=resize, IMAGE_SIZE=size, **mask_files),
                     "train", train=True)
    assert len(ds) == 4 and ds.ids == TRAIN_IDS
    item = ds[1]
    assert item["id"] == "1" and item["index"] == 1
    assert item["image"].shape == (3, size, size) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (3, size, size) and item["mask"].dtype == torch.float32
    assert item["labels"].shape == (size, size) and item["labels"].dtype == torch.int64
    assert -1 <= item["image"].min() < item["image"].max() <= 1 and -1 <= item["mask"].min() <= item["mask"].max() <= 1
    if kind == "color":  # the stored colours are off the palette, so the equalities below need snapping
        stored = np.asarray(Image.open(fake_root / "masks/1.jpg"), dtype=int)
        assert (stored != PALETTE[_draw_labels(1)]).any(-1).mean() > 0.5
    step = SIZE // size
    assert torch.equal(item["labels"], torch.from_numpy(_draw_labels(1)[::step, ::step].astype(np.int64)))
    palette_mask = color_tensor(item["labels"])
    if resize == "nearest" or size == SIZE:  # unresized, the bilinear mask is the clean palette mask too
        assert torch.allclose(item["mask"], palette_mask)
    else:  # bilinear blends colours at region borders only
        differs = (item["mask"] - palette_mask).abs().amax(0) > 1e-3
        assert 0 < differs.float().mean() < 0.5


def test_resize_and_crop_keeps_the_centre():
    wide = np.zeros((20, 40), np.uint8)
    wide[:, 10:30] = 255
    out = resize_and_crop(Image.fromarray(wide), 10, Image.NEAREST)
    assert out.size == (10, 10) and np.asarray(out).min() == 255


def _slots(ds, i, epochs):
    """The caption slots item `i` gets in `epochs`, recovered from its cleaned caption."""
    slots = []
    for epoch in epochs:
        ds.set_epoch(epoch)
        slots.append([clean_caption(c) for c in ds.captions(i)].index(ds[i]["caption"]))
    return slots


def test_training_caption_is_a_pure_function_of_seed_epoch_and_index(fake_root):
    ds = FaceDataset(_cfg(fake_root), "train", train=True)
    slots = _slots(ds, 0, range(8))
    assert len(set(slots)) > 1  # the slot changes with the epoch
    ds.set_epoch(5)
    before = [ds[i]["caption"] for i in (3, 1, 0)]
    assert [ds[i]["caption"] for i in (0, 1, 3)] == before[::-1]  # visiting order does not matter
    assert _slots(FaceDataset(_cfg(fake_root), "train", train=True), 0, range(8)) == slots  # resumes exactly
    assert _slots(FaceDataset(_cfg(fake_root, SEED=7), "train", train=True), 0, range(8)) != slots


def test_long_training_caption_subset_is_reproducible(fake_root):
    ds = FaceDataset(_cfg(fake_root), "train", train=True)
    long_epochs = []
    for epoch in range(40):
        ds.set_epoch(epoch)
        words = ds.caption(2).split()
        if len(words) > 10:
            long_epochs.append(epoch)
            assert len(words) == 30 and [int(w[1:]) for w in words] == sorted(int(w[1:]) for w in words)
    assert long_epochs, "slot 5 never drawn in 40 epochs"
    ds.set_epoch(long_epochs[0])
    assert ds.caption(2) == ds.caption(2)


def test_evaluation_uses_the_fixed_caption_slot(fake_root):
    ds = FaceDataset(_cfg(fake_root, EVAL_CAPTION=3), "test", train=False)
    assert ds.ids == TEST_IDS
    for epoch in range(3):
        ds.set_epoch(epoch)
        assert [ds[i]["caption"] for i in range(2)] == ["caption 3 of image 7", "caption 3 of image 8"]


def test_missing_files_are_one_error_with_count_and_first_names(fake_root):
    for image_id in TRAIN_IDS:
        (fake_root / f"masks/{image_id}.jpg").unlink()
    (fake_root / "images/2.jpg").unlink()
    (fake_root / "images/3.jpg").unlink()
    with pytest.raises(DatasetError) as info:
        FaceDataset(_cfg(fake_root), "train", train=True)
    message = str(info.value)
    assert "6 of 8" in message and "images/2.jpg" in message and "images/3.jpg" in message
    assert message.count(".jpg") == 5


def test_too_many_off_palette_pixels_name_the_mask(fake_root):
    noise = np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(noise).save(fake_root / "masks/1.jpg")
    ds = FaceDataset(_cfg(fake_root), "train", train=True)
    ds[0]
    with pytest.raises(MaskError, match="masks/1.jpg"):
        ds[1]


def test_label_ids_out_of_range_name_the_mask(fake_root):
    Image.fromarray(np.full((SIZE, SIZE), 19, np.uint8)).save(fake_root / "labels/0.png")
    ds = FaceDataset(_cfg(fake_root, MASK_KIND="label", MASK_DIR="labels", MASK_EXT="png"), "train", train=True)
    with pytest.raises(MaskError, match="labels/0.png"):
        ds[0]


def test_items_batch_through_a_dataloader(fake_root):
    loader = torch.utils.data.DataLoader(FaceDataset(_cfg(fake_root), "train", train=True), batch_size=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, SIZE, SIZE) and batch["labels"].shape == (2, SIZE, SIZE)
    assert batch["id"] == ["0", "1"] and len(batch["caption"]) == 2


def test_a_mask_of_another_aspect_than_its_image_is_refused_naming_both(fake_root):
    """Image and mask are each resized and centre-cropped: another aspect ratio would shift the regions, so it is
    an error naming both files; the same aspect at another size is resized, with one warning."""
    Image.fromarray(np.zeros((SIZE // 2, SIZE, 3), np.uint8)).save(fake_root / "masks/1.jpg")
    ds = FaceDataset(_cfg(fake_root), "train", train=True)
    with pytest.raises(ValueError, match=r"masks/1.jpg: the mask is 32x16 but its image .*images/1.jpg is 32x32"):
        ds[1]
    big = np.kron(_draw_labels(0), np.ones((2, 2), np.int64)).astype(np.uint8)
    Image.fromarray(PALETTE[big]).save(fake_root / "masks/1.jpg", quality=95, subsampling=0)
    ds = FaceDataset(_cfg(fake_root), "train", train=True)
    with pytest.warns(InputWarning, match=r"masks/1.jpg is 64x64 but its image is 32x32: both are resized"):
        item = ds[1]
    assert item["labels"].shape == (SIZE, SIZE)
    # MMCelebA's own layout, images an exact multiple of their masks (1024 over 512), is read without a word.
    small = _draw_labels(0)[::2, ::2].astype(np.uint8)
    Image.fromarray(PALETTE[small]).save(fake_root / "masks/1.jpg", quality=95, subsampling=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert FaceDataset(_cfg(fake_root), "train", train=True)[1]["labels"].shape == (SIZE, SIZE)


def test_an_index_that_inflates_beyond_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    import zipfile
    from pixelface.data import datasets
    monkeypatch.setattr(datasets, "MAX_INDEX_BYTES", 1000)
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("dataset2.json", " " * 5000)
    with pytest.raises(DatasetError, match=r"bomb.zip: dataset2.json inflates to 5,000 bytes, larger than"):
        load_index(tmp_path / "bomb.zip")
    (tmp_path / "big.json").write_text(" " * 5000)
    with pytest.raises(DatasetError, match=r"big.json: larger than"):
        load_index(tmp_path / "big.json")
