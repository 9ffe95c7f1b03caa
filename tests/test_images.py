"""pixelface.data.images: one reader for every image and mask, and the callers that go through it."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pixelface.core import errors
from pixelface.data import images
from pixelface.editing import inputs
from conftest import REPO_ROOT, load_script
from pixelface.core.config import load_config
from pixelface.data.datasets import FaceDataset, PrepareError, prepare_mmceleba
from pixelface.data.images import ImageReadError, open_image, read_mask_array, read_rgb
from pixelface.data.masks import PALETTE

ORIENTATION = 0x0112


def _noise(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _halves(w=40, h=20):
    """Red left half, blue right half."""
    array = np.zeros((h, w, 3), np.uint8)
    array[:, :w // 2, 0] = 255
    array[:, w // 2:, 2] = 255
    return array


def _save_rotated_jpeg(path, array):
    """A JPEG whose EXIF says 'rotate 90 degrees clockwise to display' (Orientation 6)."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.fromarray(array).save(path, quality=95, exif=exif.tobytes())


# --------------------------------------------------------------------------------------------------------------
# Modes


def test_16_bit_png_reads_as_scaled_8_bit_values_not_white(tmp_path):
    ramp = np.arange(256) * 257  # 0, 257, ..., 65535: exactly the 8-bit values 0..255
    values = np.stack([ramp, np.minimum(ramp + 128, 65535), np.minimum(ramp + 129, 65535)]).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "ramp16.png")
    with Image.open(tmp_path / "ramp16.png") as stored:
        assert stored.mode == "I;16"  # PIL's own convert("RGB") clips this to white
    rgb = np.asarray(read_rgb(tmp_path / "ramp16.png"))
    assert rgb.shape == (3, 256, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[..., 0], rgb[..., 2])
    assert np.array_equal(rgb[0, :, 0], np.arange(256))
    assert np.array_equal(rgb[1, :, 0], np.arange(256))  # k * 257 + 128 rounds down to k
    assert np.array_equal(rgb[2, :, 0], np.minimum(np.arange(256) + 1, 255))  # k * 257 + 129 rounds up
    assert np.array_equal(read_mask_array(tmp_path / "ramp16.png"), values)  # masks get the stored values


def test_16_bit_tiff_and_32_bit_int_mode_i_scale_by_16_bits(tmp_path):
    Image.fromarray(np.array([[0, 257, 32896, 65535]], np.int32)).save(tmp_path / "i32.tif")
    with Image.open(tmp_path / "i32.tif") as stored:
        assert stored.mode == "I"
    assert np.array_equal(np.asarray(read_rgb(tmp_path / "i32.tif"))[0, :, 1], [0, 1, 128, 255])
    Image.fromarray(np.array([[0, 70000]], np.int32)).save(tmp_path / "big.tif")
    with pytest.raises(ImageReadError, match=r"big.tif: image has mode I with values 0..70000"):
        read_rgb(tmp_path / "big.tif")


def test_palette_png_reads_as_its_colours(tmp_path):
    palette = [[200, 10, 20], [0, 150, 250], [7, 8, 9]]
    indices = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    image = Image.new("P", (3, 2))
    image.putdata(indices.ravel().tolist())
    image.putpalette(sum(palette, []))
    image.save(tmp_path / "pal.png")
    rgb = np.asarray(read_rgb(tmp_path / "pal.png"))
    assert np.array_equal(rgb, np.array(palette, np.uint8)[indices])
    assert np.array_equal(read_mask_array(tmp_path / "pal.png"), indices)  # indices by default
    assert np.array_equal(read_mask_array(tmp_path / "pal.png", max_index=1), rgb)  # index 2 > 1: colours
    assert np.array_equal(read_mask_array(tmp_path / "pal.png", rgb=True), rgb)


def test_alpha_is_dropped_keeping_the_stored_colour(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = [[[10, 20, 30], [40, 50, 60]], [[70, 80, 90], [255, 255, 255]]]
    rgba[..., 3] = [[0, 128], [255, 0]]
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    rgb = read_rgb(tmp_path / "rgba.png")
    assert rgb.mode == "RGB" and np.array_equal(np.asarray(rgb), rgba[..., :3])
    la = np.stack([np.array([[5, 250]], np.uint8), np.array([[0, 255]], np.uint8)], -1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert np.array_equal(np.asarray(read_rgb(tmp_path / "la.png"))[0], [[5, 5, 5], [250, 250, 250]])


def test_unsupported_mode_is_refused_by_name(tmp_path):
    Image.new("LAB", (4, 4)).save(tmp_path / "lab.tif")
    with pytest.raises(ImageReadError, match=r"lab.tif: image has mode LAB, which cannot be read as RGB"):
        read_rgb(tmp_path / "lab.tif")


def test_mask_arrays_keep_label_ids_and_colours(tmp_path):
    ids = np.array([[0, 1, 18], [5, 13, 2]], np.uint8)
    Image.fromarray(ids).save(tmp_path / "ids.png")
    got = read_mask_array(tmp_path / "ids.png")
    assert got.shape == (2, 3) and np.array_equal(got, ids)
    colours = PALETTE[ids].astype(np.uint8)
    Image.fromarray(colours).save(tmp_path / "colours.png")
    assert np.array_equal(read_mask_array(tmp_path / "colours.png"), colours)
    assert np.array_equal(read_mask_array(tmp_path / "ids.png", rgb=True), np.repeat(ids[..., None], 3, -1))


# --------------------------------------------------------------------------------------------------------------
# EXIF orientation


def test_exif_orientation_is_applied(tmp_path):
    _save_rotated_jpeg(tmp_path / "phone.jpg", _halves())
    with Image.open(tmp_path / "phone.jpg") as stored:
        assert stored.size == (40, 20)  # as stored
    image = open_image(tmp_path / "phone.jpg")
    assert image.size == (20, 40)
    rgb = np.asarray(read_rgb(tmp_path / "phone.jpg")).astype(int)
    assert rgb.shape == (40, 20, 3)
    assert rgb[5, 10, 0] > 200 and rgb[5, 10, 2] < 50  # the stored left (red) half is now on top
    assert rgb[35, 10, 2] > 200 and rgb[35, 10, 0] < 50
    assert read_mask_array(tmp_path / "phone.jpg").shape == (40, 20, 3)
    assert inputs.image_shape(tmp_path / "phone.jpg") == (20, 40)


# --------------------------------------------------------------------------------------------------------------
# Unreadable files: one ImageReadError whose message starts with the path


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_truncated_image_names_the_file(tmp_path, suffix):
    path = tmp_path / f"cut.{suffix}"
    Image.fromarray(_noise(64, 64)).save(path)
    _truncate(path)
    with pytest.raises(ImageReadError) as info:
        read_rgb(path)
    message = str(info.value)
    assert message.startswith(f"{path}: image ") and "truncated or corrupt" in message and "\n" not in message


@pytest.mark.parametrize("content, reason", [(b"", "the file is empty (0 bytes)"),
                                             (b"just some notes\n", "not an image")])
def test_empty_or_text_file_names_the_file(tmp_path, content, reason):
    path = tmp_path / "face.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as info:
        read_mask_array(path)
    assert str(info.value).startswith(f"{path}: mask cannot be read as an image: {reason}")


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ImageReadError, match=r"nope.png: image does not exist$"):
        open_image(tmp_path / "nope.png")


def test_images_above_max_pixels_are_refused_before_decoding(tmp_path, monkeypatch):
    Image.fromarray(_noise(20, 30)).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 599)
    with pytest.raises(ImageReadError) as info:
        read_rgb(tmp_path / "big.png")
    assert str(info.value).startswith(f"{tmp_path / 'big.png'}: image is too large: 30x20 = 600 pixels, "
                                      f"more than the limit 599")
    monkeypatch.setattr(images, "MAX_PIXELS", 600)
    assert read_rgb(tmp_path / "big.png").size == (30, 20)


@pytest.mark.parametrize("limit", [400, 250])  # PIL warns above its limit and raises above twice of it
def test_pil_decompression_bomb_check_is_an_error(tmp_path, monkeypatch, limit):
    Image.fromarray(_noise(20, 30)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(ImageReadError) as info:
        read_rgb(tmp_path / "bomb.png")
    assert str(info.value).startswith(f"{tmp_path / 'bomb.png'}: image is too large: 600 pixels, "
                                      f"more than the limit {limit}")


# --------------------------------------------------------------------------------------------------------------
# Callers


@pytest.fixture()
def tiny_root(tmp_path):
    """A two-image dataset laid out as MM-CelebA-HQ: images/{id}.jpg, masks/{id}.png (palette colours)."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    splits = {"train": ["0", "1"], "test": ["2"]}
    tree = {name: {"filenames": [i for i in ids for _ in range(10)], "keynames": list(range(10 * len(ids))),
                   "captions": [f"face {i} caption {k}" for i in ids for k in range(10)]}
            for name, ids in splits.items()}
    (root / "dataset2.json").write_text(json.dumps(tree))
    for n, image_id in enumerate(["0", "1", "2"]):
        Image.fromarray(_noise(32, 32, n)).save(root / f"images/{image_id}.jpg")
        labels = np.zeros((32, 32), np.uint8)
        labels[8:24, 8:24] = 1
        Image.fromarray(PALETTE[labels].astype(np.uint8)).save(root / f"masks/{image_id}.png")
    return root


def test_dataset_item_with_a_truncated_image_names_the_file(tiny_root):
    ds = FaceDataset(load_config(None, [f"DATA.ROOT={tiny_root}", "DATA.IMAGE_SIZE=32"]), "train", train=True)
    assert ds[0]["image"].shape == (3, 32, 32)
    _truncate(tiny_root / "images/1.jpg")
    with pytest.raises(ImageReadError, match=rf"^{tiny_root / 'images/1.jpg'}: image .*truncated or corrupt"):
        ds[1]
    (tiny_root / "masks/0.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=rf"^{tiny_root / 'masks/0.png'}: mask .*empty"):
        ds[0]


def test_dataloader_worker_failure_names_the_file(tiny_root):
    ds = FaceDataset(load_config(None, [f"DATA.ROOT={tiny_root}", "DATA.IMAGE_SIZE=32"]), "train", train=True)
    _truncate(tiny_root / "images/0.jpg")
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1)
    with pytest.raises(ImageReadError, match="images/0.jpg: image cannot be read as an image: truncated"):
        next(iter(loader))


def test_prepare_reports_a_truncated_raw_image_and_goes_on(tmp_path):
    celeba, parts = tmp_path / "celeba", tmp_path / "anno"
    celeba.mkdir()
    parts.mkdir()
    for image_id in ("0", "1"):
        Image.fromarray(_noise(32, 32)).save(celeba / f"{image_id}.jpg")
        Image.fromarray(np.full((16, 16), 255, np.uint8)).save(parts / f"{int(image_id):05d}_skin.png")
    _truncate(celeba / "1.jpg")
    index = {"train": {"filenames": ["0"] * 10 + ["1"] * 10, "keynames": list(range(20)),
                       "captions": ["a face"] * 20}}
    (tmp_path / "dataset2.json").write_text(json.dumps(index))
    with pytest.raises(PrepareError) as info:
        prepare_mmceleba(celeba, parts, tmp_path / "dataset2.json", tmp_path / "out", size=16)
    message = str(info.value)
    assert "1 of 2" in message and f"1: {celeba / '1.jpg'}: raw image cannot be read as an image: truncated" in message
    assert (tmp_path / "out/images/0.jpg").is_file() and (tmp_path / "out/masks/1.png").is_file()


def test_editing_reads_16_bit_and_rotated_inputs(tmp_path):
    Image.fromarray(np.full((8, 8), 128 * 257 + 100, np.uint16)).save(tmp_path / "grey16.png")
    image = inputs.read_image(tmp_path / "grey16.png", 8)
    assert image.shape == (3, 8, 8) and (images.to_uint8(image) == 128).all()  # 33,000 -> 128, not white (255)
    ids = np.zeros((20, 40), np.uint8)
    ids[:, 20:] = 13
    Image.fromarray(ids).save(tmp_path / "ids.png")
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.fromarray(ids).save(tmp_path / "ids_rotated.png", exif=exif.tobytes())
    labels = inputs.read_mask(tmp_path / "ids_rotated.png", 20)  # displayed 20 wide, 40 high: hair at the bottom
    assert labels[0].tolist() == [0] * 20 and labels[-1].tolist() == [13] * 20
    assert inputs.read_mask(tmp_path / "ids.png", 20)[:, 0].tolist() == [0] * 20


def test_cli_reports_a_bad_image_as_one_error_line_naming_it(tiny_root, tmp_path, capsys):
    _truncate(tiny_root / "images/1.jpg")
    args = ["--cfg", REPO_ROOT / "cfg/smoke.yml", "--out", tmp_path / "clip.pt", "--epochs", 1,
            "--set", f"DATA.ROOT={tiny_root}", "--set", "DATA.IMAGE_SIZE=32", "--set", "DATA.SYNTHESIZE=false"]
    assert load_script("pretrain_clip").main([str(a) for a in args]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"error: {tiny_root / 'images/1.jpg'}: image cannot be read as an image: truncated")
    assert not (tmp_path / "clip.pt").exists()


def test_image_and_mask_of_different_aspect_ratios_are_refused(tmp_path):
    Image.fromarray(_noise(48, 64)).save(tmp_path / "wide.png")
    Image.fromarray(_noise(64, 64)).save(tmp_path / "square.png")
    with pytest.raises(errors.InputError) as info:
        inputs.check_same_aspect(tmp_path / "wide.png", tmp_path / "square.png")
    message = str(info.value)
    assert f"image {tmp_path / 'wide.png'} is 64x48" in message
    assert f"mask {tmp_path / 'square.png'} is 64x64" in message and "same aspect ratio" in message
    # Relative, not absolute: 10.00 against 10.05 is 0.5% apart (an absolute 0.01 rule refused it).
    Image.fromarray(_noise(100, 1000)).save(tmp_path / "strip.png")
    Image.fromarray(_noise(100, 1005)).save(tmp_path / "strip_mask.png")
    assert inputs.check_same_aspect(tmp_path / "strip.png", tmp_path / "strip_mask.png") is None
    Image.fromarray(_noise(100, 1020)).save(tmp_path / "strip_mask.png")
    with pytest.raises(errors.InputError, match="differ by 2.0%"):
        inputs.check_same_aspect(tmp_path / "strip.png", tmp_path / "strip_mask.png")
    # A phone photo whose EXIF turns it upright matches a mask drawn on the upright picture.
    _save_rotated_jpeg(tmp_path / "phone.jpg", _noise(20, 40))
    Image.fromarray(_noise(40, 20)).save(tmp_path / "phone_mask.png")
    assert inputs.check_same_aspect(tmp_path / "phone.jpg", tmp_path / "phone_mask.png") is None
    with pytest.raises(errors.InputError, match=r"phone.jpg is 20x40 but mask .*square.png is 64x64"):
        inputs.check_same_aspect(tmp_path / "phone.jpg", tmp_path / "square.png")
