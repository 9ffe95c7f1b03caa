"""The Python API (pixelface.PixelFace) used as a notebook would: its samples are the bytes scripts/sample.py
writes, a mask gives the same images whatever form it comes in, and inversion and edits return pictures.
Also the scripts' --mask-order."""
import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

from pixelface import PixelFace
from pixelface.core import errors
from pixelface.core.config import resolve_path
from pixelface.core.devices import resolve_device
from pixelface.data.images import to_pil
from pixelface.data.masks import FACE_PARSING_TO_CELEBAMASK, MaskError, color_to_label
from pixelface.editing import manipulation
from conftest import load_script

CAPTION = "she has blond hair and wears lipstick"


@pytest.fixture(scope="module")
def pf(ckpt):
    return PixelFace.load(ckpt, device="cpu")  # sample.py's default device, for byte equality


@pytest.fixture(scope="module")
def dataset_files(pf):
    """(mask path, image path) of one face of the checkpoint's own dataset."""
    root = resolve_path(pf.cfg, "DATA.ROOT")
    mask = sorted((root / pf.cfg.DATA.MASK_DIR).glob(f"*.{pf.cfg.DATA.MASK_EXT}"))[0]
    return mask, root / pf.cfg.DATA.IMAGE_DIR / f"{mask.stem}.{pf.cfg.DATA.IMAGE_EXT}"


def pixels(image) -> np.ndarray:
    return np.asarray(image)


def test_load_picks_the_device_and_reads_the_config(ckpt, pf):
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert PixelFace.load(ckpt).device == resolve_device("auto")
    assert pf.device == torch.device("cpu") and pf.size == pf.cfg.MODEL.SIZE == 64
    with pytest.raises(errors.InputError, match="device 'tpu'"):
        PixelFace.load(ckpt, device="tpu")


def test_generate_gives_the_bytes_sample_script_writes(ckpt, pf, dataset_files, tmp_path):
    mask, _ = dataset_files
    images = pf.generate(mask, CAPTION, seeds=[0, 1])
    assert load_script("sample").main(["--ckpt", str(ckpt), "--mask", str(mask), "--text", CAPTION,
                                       "--seeds", "0-1", "--out", str(tmp_path)]) == 0
    assert len(images) == 2
    for seed, image in zip([0, 1], images):
        assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (64, 64)
        assert pixels(image).dtype == np.uint8
        assert np.array_equal(pixels(image), pixels(Image.open(tmp_path / f"000_seed{seed}.png")))
    assert not np.array_equal(pixels(images[0]), pixels(images[1]))


def test_a_mask_as_path_pil_or_array_gives_the_same_images(pf, dataset_files):
    mask, _ = dataset_files
    colours = pixels(Image.open(mask).convert("RGB"))
    ids = color_to_label(colours)
    expected = [pixels(i) for i in pf.generate(mask, CAPTION, seeds=[3, 4])]
    forms = {"PIL": Image.open(mask), "colour array": colours, "label-id array": ids,
             "face-parsing ids": np.argsort(FACE_PARSING_TO_CELEBAMASK)[ids]}
    for form, value in forms.items():
        order = "faceparsing" if form == "face-parsing ids" else "celebamask"
        got = [pixels(i) for i in pf.generate(value, CAPTION, seeds=[3, 4], mask_order=order)]
        assert all(np.array_equal(a, b) for a, b in zip(got, expected)), form
    assert np.array_equal(pixels(pf.generate(mask, CAPTION, seeds=4)[0]), expected[1])  # one seed as an int
    flipped = pf.generate(ids[:, ::-1].copy(), CAPTION, seeds=[3])[0]
    assert not np.array_equal(pixels(flipped), expected[0])


def test_generate_refuses_bad_arguments(pf, dataset_files):
    mask, _ = dataset_files
    with pytest.raises(errors.InputError, match="truncation 1.5"):
        pf.generate(mask, CAPTION, truncation=1.5)
    with pytest.raises(errors.InputError, match="seeds"):
        pf.generate(mask, CAPTION, seeds=[-1])
    with pytest.raises(errors.InputError, match="at least one sample"):
        pf.generate(mask, CAPTION, seeds=[])
    with pytest.raises(errors.InputError, match="mask: expected a file path"):
        pf.generate(3.0, CAPTION)
    with pytest.raises(MaskError, match="expected .* label ids or .* colours"):
        pf.generate(np.zeros((8, 8), np.float32), CAPTION)


def test_invert_and_edit_return_pictures(pf, dataset_files):
    mask, image = dataset_files
    inversion = pf.invert(Image.open(image), mask, CAPTION, steps=3, perceptual="none")
    assert isinstance(inversion, manipulation.Inversion) and len(inversion.losses) == 3
    reconstruction = pf.edit(inversion)
    expected = to_pil(manipulation.edit(pf.generator, pf.text_encoder, pf.cfg, inversion))
    assert np.array_equal(pixels(reconstruction), pixels(expected))
    text_edit = pf.edit(inversion, text="he has black hair")
    mask_edit = pf.edit(inversion, mask=inversion.labels.flip(-1))
    for picture in (reconstruction, text_edit, mask_edit):
        assert isinstance(picture, Image.Image) and picture.mode == "RGB" and picture.size == (pf.size, pf.size)
    assert not np.array_equal(pixels(text_edit), pixels(reconstruction))
    assert not np.array_equal(pixels(mask_edit), pixels(reconstruction))
    with pytest.raises(errors.InputError, match="aspect ratios differ"):
        pf.invert(np.zeros((64, 128, 3), np.uint8), mask, CAPTION, steps=1, align="off")
    if importlib.util.find_spec("dlib"):     # a photo that is not square is aligned first: it needs a face
        with pytest.raises(errors.InputError, match="no face found"):
            pf.invert(np.zeros((64, 128, 3), np.uint8), mask, CAPTION, steps=1)
    with pytest.raises(errors.InputError, match="invert the photo itself"):
        pf.edit(manipulation.Inversion(**{**vars(inversion), "photo": None}), whole_photo=True)


def test_scripts_read_face_parsing_masks_with_mask_order(ckpt, dataset_files, tmp_path):
    mask, image = dataset_files
    ids = color_to_label(pixels(Image.open(mask).convert("RGB")))
    Image.fromarray(np.argsort(FACE_PARSING_TO_CELEBAMASK)[ids].astype(np.uint8)).save(tmp_path / "fp.png")
    sample = load_script("sample")
    common = ["--ckpt", str(ckpt), "--text", CAPTION, "--seeds", "5"]
    assert sample.main([*common, "--mask", str(mask), "--out", str(tmp_path / "colour")]) == 0
    assert sample.main([*common, "--mask", str(tmp_path / "fp.png"), "--mask-order", "faceparsing",
                        "--out", str(tmp_path / "fp")]) == 0
    assert (tmp_path / "colour/000_seed5.png").read_bytes() == (tmp_path / "fp/000_seed5.png").read_bytes()
    manipulate = load_script("manipulate")
    common = ["--ckpt", str(ckpt), "--image", str(image), "--caption", CAPTION, "--steps", "2", "--perceptual", "none"]
    assert manipulate.main([*common, "--mask", str(mask), "--edit-mask", str(mask), "--out",
                            str(tmp_path / "m_colour")]) == 0
    assert manipulate.main([*common, "--mask", str(tmp_path / "fp.png"), "--edit-mask", str(tmp_path / "fp.png"),
                            "--mask-order", "faceparsing", "--out", str(tmp_path / "m_fp")]) == 0
    for name in ("reconstruction.png", "edit_1.png"):
        assert (tmp_path / "m_colour" / name).read_bytes() == (tmp_path / "m_fp" / name).read_bytes(), name


def test_one_device_rule_for_every_entry_point():
    """Every command taking --device defaults to 'auto' and resolves it with core.devices.resolve_device
    (the benchmark, a developer's tool, names its device explicitly: cpu unless --device cuda)."""
    import ast
    from conftest import REPO_ROOT
    from pixelface.commands import launch, parsers
    defaults = {}
    for name in launch.COMMANDS:
        found = [a.default for a in getattr(parsers, name)()._actions if "--device" in a.option_strings]
        if found:
            defaults[name] = found[0]
    for path in sorted((REPO_ROOT / "scripts").glob("*.py")):     # the checkout's other tools
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument" and node.args
                    and isinstance(node.args[0], ast.Constant) and node.args[0].value == "--device"):
                default = next(k.value for k in node.keywords if k.arg == "default")
                defaults[path.name] = default.value if isinstance(default, ast.Constant) else ast.dump(default)
    assert {"sample", "edit", "evaluate", "train", "make_mask", "editor", "train_parser.py"} <= set(defaults)
    assert {name: d for name, d in defaults.items() if d != "auto" and name != "benchmark.py"} == {}
    with pytest.raises(errors.InputError, match="expected auto, cpu or cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(errors.InputError, match="no such CUDA device"):
            resolve_device("cuda:0")


def test_seeds_arrive_as_ints_arrays_or_ranges_and_are_capped_before_anything_is_allocated(pf, dataset_files):
    mask, _ = dataset_files
    by_list = pf.generate(mask, CAPTION, seeds=[3, 4])
    by_array = pf.generate(mask, CAPTION, seeds=np.array([3, 4], dtype=np.int64))
    assert [pixels(a).tobytes() for a in by_list] == [pixels(b).tobytes() for b in by_array]
    assert pixels(pf.generate(mask, CAPTION, seeds=np.int32(3))[0]).tobytes() == pixels(by_list[0]).tobytes()
    with pytest.raises(errors.InputError, match="1,000,000 asked for; at most 100,000 per call"):
        pf.generate(mask, CAPTION, seeds=range(1_000_000))
    with pytest.raises(errors.InputError, match="expected a 1-D array of integers"):
        pf.generate(mask, CAPTION, seeds=np.zeros((2, 2)))


def test_a_tiny_photo_is_inverted_with_a_warning(pf, dataset_files):
    mask, _ = dataset_files
    with pytest.warns(errors.InputWarning, match=r"is only 8x8 pixels: what is made from it is mostly interpolation"):
        pf.invert(np.zeros((8, 8, 3), np.uint8), mask, CAPTION, steps=1, perceptual="none", align="off")
