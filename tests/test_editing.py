"""Manipulation of a given face: inversion, text and mask edits, saved inversions, and scripts/manipulate.py
end to end, including its refusals of bad input (one error, exit 1, nothing written)."""
import importlib.util
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pixelface.core import errors
from pixelface.data.datasets import FaceDataset
from pixelface.data.images import save_png, to_uint8
from pixelface.data.masks import LABEL_ID, label_to_color
from pixelface.data.synthface import HAIR_RGB, caption_attributes, make_face
from pixelface.editing import inputs, manipulation
from pixelface.evaluation import measures
from pixelface.networks.checkpoint import file_hash
from conftest import load_script


HAIR = LABEL_ID["hair"]
FAST = manipulation.InversionSettings(steps=40)


manipulate_script = load_script("manipulate")


def run_manipulate(*args):
    return manipulate_script.main([str(a) for a in args])


@pytest.fixture(scope="module")
def face(model):
    """(image, labels, caption) of the first image of the smoke dataset's test split with a good share of hair."""
    _, cfg, _ = model
    for item in inputs.dataset_items(cfg, "test", FaceDataset(cfg, "test", train=False).ids):
        if (item["labels"] == HAIR).float().mean() > 0.1:
            return item["image"], item["labels"], item["caption"]
    raise AssertionError("no test face with hair")


@pytest.fixture(scope="module")
def inversion(model, face):
    g, cfg, encoder = model
    image, labels, caption = face
    return manipulation.invert(g, encoder, cfg, image, labels, caption, FAST)


@pytest.fixture(scope="module")
def face_files(face, tmp_path_factory):
    """The test face as files: 128 px image, its colour mask, and a mask with the hair removed."""
    folder = tmp_path_factory.mktemp("face")
    image, labels, _ = face
    big = F.interpolate(image[None], scale_factor=2, mode="bilinear", align_corners=False)[0]
    save_png(big, folder / "face.png")
    big_labels = labels.repeat_interleave(2, 0).repeat_interleave(2, 1).numpy().astype(np.uint8)
    Image.fromarray(label_to_color(big_labels)).save(folder / "mask.png")
    bald = big_labels.copy()
    bald[bald == HAIR] = 0
    Image.fromarray(label_to_color(bald)).save(folder / "bald.png")
    return folder


def mse(a, b):
    return float((a - b).square().mean())


# ---------------------------------------------------------------------------------------------------------------
# Library


def test_inversion_halves_the_reconstruction_error(model, face, inversion):
    g, cfg, encoder = model
    image, labels, caption = face
    start = manipulation.invert(g, encoder, cfg, image, labels, caption, manipulation.InversionSettings(steps=0))
    before = mse(manipulation.edit(g, encoder, cfg, start), image)
    after = mse(manipulation.edit(g, encoder, cfg, inversion), image)
    assert after < 0.5 * before
    assert len(inversion.losses) == FAST.steps and inversion.losses[-1] < inversion.losses[0]
    assert inversion.latent.shape == (1, g.n_latent, cfg.MODEL.STYLE_DIM)


def test_inversion_is_deterministic_and_leaves_the_generator_alone(model, face, inversion):
    g, cfg, encoder = model
    image, labels, caption = face
    before = {k: v.clone() for k, v in g.state_dict().items()}
    again = manipulation.invert(g, encoder, cfg, image, labels, caption,
                           manipulation.InversionSettings(steps=FAST.steps, finetune_steps=5))
    assert torch.equal(again.latent, inversion.latent)
    assert all(torch.equal(v, g.state_dict()[k]) for k, v in before.items())
    assert not any(p.requires_grad for p in g.parameters())


def test_finetuning_lowers_the_error_further(model, face, inversion):
    g, cfg, encoder = model
    image, labels, caption = face
    tuned = manipulation.invert(g, encoder, cfg, image, labels, caption,
                           manipulation.InversionSettings(steps=FAST.steps, finetune_steps=15))
    assert tuned.generator_state is not None and inversion.generator_state is None
    g_tuned = manipulation.generator_for(g, tuned)
    assert mse(manipulation.edit(g_tuned, encoder, cfg, tuned), image) < mse(manipulation.edit(g, encoder, cfg, inversion), image)


def test_saved_inversion_gives_the_same_edits(model, inversion, tmp_path):
    g, cfg, encoder = model
    manipulation.save_inversion(inversion, tmp_path / "inv.pt", "abc123")
    loaded = manipulation.load_inversion(tmp_path / "inv.pt", "abc123")
    caption = "a woman with blond hair"
    assert torch.equal(manipulation.edit(g, encoder, cfg, loaded, caption), manipulation.edit(g, encoder, cfg, inversion, caption))
    with pytest.raises(errors.InputError, match="made with checkpoint abc123"):
        manipulation.load_inversion(tmp_path / "inv.pt", "fff000")


def test_text_edit_changes_the_image_and_keeps_the_mask_input(model, inversion):
    g, cfg, encoder = model
    reconstruction = manipulation.edit(g, encoder, cfg, inversion)
    edited = manipulation.edit(g, encoder, cfg, inversion, caption="a man with gray hair and a beard")
    assert (edited - reconstruction).abs().mean() > 1e-3
    assert torch.equal(manipulation.edit(g, encoder, cfg, inversion, caption=inversion.caption), reconstruction)


def test_measures():
    a = torch.full((3, 8, 8), 100 / 127.5 - 1)
    assert measures.psnr(a, a) == float("inf")
    assert measures.psnr(a, a + 1 / 127.5) == pytest.approx(20 * np.log10(255), abs=0.01)  # off by one level


# ---------------------------------------------------------------------------------------------------------------
# scripts/manipulate.py


def test_manipulate_script_writes_strip_report_and_reusable_inversion(ckpt, face, face_files, tmp_path):
    _, _, caption = face
    out = tmp_path / "out"
    assert run_manipulate("--ckpt", ckpt, "--image", face_files / "face.png", "--mask", face_files / "mask.png",
                          "--caption", caption, "--edit-text", "a man with blond hair",
                          "--edit-mask", face_files / "bald.png", "--edit", "a bald man", face_files / "bald.png",
                          "--steps", 20, "--out", out) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["checkpoint_hash"] == file_hash(ckpt) and report["caption"] == caption
    assert report["reconstruction"]["psnr"] > 0 and report["reconstruction"]["lpips"] is None
    assert [(e["caption"], e["mask"]) for e in report["edits"]] == [
        ("a man with blond hair", "original"), (caption, str(face_files / "bald.png")),
        ("a bald man", str(face_files / "bald.png"))]
    assert all(-1 <= e["clip_similarity"] <= 1 for e in report["edits"])
    assert report["inversion"]["loss_end"] < report["inversion"]["loss_start"]
    for name in ("original", "reconstruction", "edit_1", "edit_2", "edit_3"):
        with Image.open(out / f"{name}.png") as image:
            assert image.size == (64, 64)
    with Image.open(out / "strip.png") as strip:  # 5 images over their 5 masks
        assert strip.size == (5 * 64 + 4 * 2, 2 * 64 + 2)

    again = tmp_path / "again"
    assert run_manipulate("--ckpt", ckpt, "--inversion", out / "inversion.pt", "--edit-text", "a man with blond hair",
                          "--out", again) == 0
    assert (again / "edit_1.png").read_bytes() == (out / "edit_1.png").read_bytes()
    assert not (again / "inversion.pt").exists()
    reused = json.loads((again / "report.json").read_text())["inversion"]
    assert reused["steps"] == 20 and reused["seconds"] is None and reused["perceptual"] in ("clip", "lpips")


def test_manipulate_script_keeps_existing_outputs_without_force(ckpt, face, face_files, tmp_path, capsys):
    (tmp_path / "report.json").write_text("mine")
    args = ["--ckpt", ckpt, "--image", face_files / "face.png", "--mask", face_files / "mask.png",
            "--caption", face[2], "--steps", 2, "--out", tmp_path]
    assert run_manipulate(*args) == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "report.json").read_text() == "mine" and not (tmp_path / "original.png").exists()
    assert run_manipulate(*args, "--force") == 0
    assert json.loads((tmp_path / "report.json").read_text())["inversion"]["steps"] == 2


@pytest.mark.parametrize("case, expected", [
    ("missing image", "does not exist"),
    ("unreadable image", "cannot be read as an image"),
    ("aspect mismatch", "same aspect ratio"),
    ("no face in a photo", "no face found"),
    ("off-palette edit mask", "% of pixels are off the CelebAMask-HQ palette"),
    ("empty caption", "empty"),
    ("empty edit text", "empty"),
    ("missing inversion", "does not exist"),
])
def test_manipulate_script_bad_input_is_one_error_and_writes_nothing(case, expected, ckpt, face_files, tmp_path,
                                                                     capsys):
    if case == "no face in a photo" and not importlib.util.find_spec("dlib"):
        pytest.skip("face alignment needs the 'align' extra: pip install -r requirements-align.txt")
    (tmp_path / "notes.png").write_text("not an image")
    Image.fromarray(np.zeros((64, 48, 3), np.uint8)).save(tmp_path / "tall.png")
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    face, mask = face_files / "face.png", face_files / "mask.png"
    args = {
        "missing image": ["--image", tmp_path / "nope.png", "--mask", mask, "--caption", "a man"],
        "unreadable image": ["--image", tmp_path / "notes.png", "--mask", mask, "--caption", "a man"],
        "aspect mismatch": ["--image", tmp_path / "tall.png", "--mask", mask, "--caption", "a man", "--align", "off"],
        "no face in a photo": ["--image", tmp_path / "tall.png", "--mask", mask, "--caption", "a man", "--align", "on"],
        "off-palette edit mask": ["--image", face, "--mask", mask, "--caption", "a man",
                                  "--edit-mask", tmp_path / "x.png"],
        "empty caption": ["--image", face, "--mask", mask, "--caption", "..."],
        "empty edit text": ["--image", face, "--mask", mask, "--caption", "a man", "--edit-text", ""],
        "missing inversion": ["--inversion", tmp_path / "inv.pt"],
    }[case]
    out = tmp_path / "out"
    assert run_manipulate("--ckpt", ckpt, *args, "--steps", 2, "--out", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0]
    assert not out.exists()


def test_manipulate_script_takes_the_face_from_the_dataset(ckpt, model, face, tmp_path):
    _, cfg, _ = model
    image_id = FaceDataset(cfg, "test", train=False).ids[0]
    assert run_manipulate("--ckpt", ckpt, "--from-dataset", "test", "--id", image_id, "--steps", 2,
                          "--edit-text", "a woman with gray hair", "--out", tmp_path) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    (item,) = inputs.dataset_items(cfg, "test", [image_id])
    assert report["image"] == f"test:{image_id}" and report["caption"] == item["caption"]
    with Image.open(tmp_path / "original.png") as original:
        assert torch.equal(torch.from_numpy(np.array(original)).permute(2, 0, 1), to_uint8(item["image"]))


# ---------------------------------------------------------------------------------------------------------------
# Behaviour of edits: needs a generator trained long enough to follow its text and masks (the `trained` fixture:
# about 6 minutes of 2-process CPU training, hence the slow marker).


def unseen_faces(size, count, min_hair=0.1):
    """Synthfaces no dataset holds (seed 12345) with a good share of hair: (image, labels, attributes, captions)."""
    faces = []
    for index in range(100):
        attrs, image, labels, captions = make_face(12345, index, size)
        if (labels == HAIR).mean() > min_hair:
            tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1
            faces.append((tensor, torch.from_numpy(labels.astype(np.int64)), attrs, captions))
        if len(faces) == count:
            return faces
    raise AssertionError("not enough faces with hair")


OPPOSITE_HAIR = {"black": "blond", "brown": "blond", "blond": "black", "gray": "black"}


def hair_caption(attrs, captions):
    """A caption of the face that states its hair colour, and the same caption asking for the opposite one."""
    colour = attrs["hair_color"]
    stated = [c for c in captions if caption_attributes(c).get("hair_color") == colour]
    caption = stated[0] if stated else f"this person has {colour} hair"
    return caption, caption.replace(f"{colour} hair", f"{OPPOSITE_HAIR[colour]} hair")


def mean_hair_colour(image, labels):
    return to_uint8(image).float()[:, labels == HAIR].mean(1)


HAIR_EDIT_FACES = 6


@pytest.fixture(scope="module")
def inverted(trained):
    """Unseen faces inverted with a caption that states their hair colour:
    (labels, caption asking for the opposite colour, that colour, inversion) per face."""
    g, cfg, encoder = trained
    faces = []
    for image, labels, attrs, captions in unseen_faces(cfg.MODEL.SIZE, HAIR_EDIT_FACES):
        caption, request = inputs.prepare_captions(list(hair_caption(attrs, captions)), cfg, encoder)
        inversion = manipulation.invert(g, encoder, cfg, image, labels, caption)
        faces.append((labels, request, OPPOSITE_HAIR[attrs["hair_color"]], inversion))
    return faces


@pytest.mark.slow
def test_hair_colour_text_edit_moves_the_hair_toward_the_requested_colour(trained, inverted):
    g, cfg, encoder = trained
    before, after = [], []
    for labels, request, colour, inversion in inverted:
        target = torch.tensor(HAIR_RGB[colour], dtype=torch.float32)
        reconstruction = manipulation.edit(g, encoder, cfg, inversion)
        edited = manipulation.edit(g, encoder, cfg, inversion, caption=request)
        before.append(float((mean_hair_colour(reconstruction, labels) - target).norm()))
        after.append(float((mean_hair_colour(edited, labels) - target).norm()))
    # The mean hair colour of at least half of the faces gets closer to the synthface colour the new caption
    # asks for, and over all faces by at least a fifth of the way. A model that ignores its text leaves the
    # hair where it was (after == before). The fixture's training is bit-for-bit repeatable on one machine,
    # but CPUs with other kernels (AMD EPYC vs Intel Sapphire Rapids) train different models: measured on
    # both, the summed distance fell to 0.57-0.71x, while the faces that got closer were 6/6 on EPYC and 3/6
    # on Sapphire Rapids (brown -> blond and gray -> black barely moved there; black -> blond moved 42-62%).
    assert sum(a < b for a, b in zip(after, before)) >= HAIR_EDIT_FACES // 2, (before, after)
    assert sum(after) < 0.8 * sum(before), (before, after)


@pytest.mark.slow
def test_mask_edit_changes_the_image_where_the_mask_changed_and_little_elsewhere(trained, inverted):
    g, cfg, encoder = trained
    for labels, _, _, inversion in inverted:
        bald = labels.clone()
        bald[labels == HAIR] = LABEL_ID["background"]
        changed = labels != bald
        near = F.max_pool2d(changed[None, None].float(), 9, 1, 4)[0, 0] > 0  # the changed region and a margin
        difference = (manipulation.edit(g, encoder, cfg, inversion, labels=bald)
                      - manipulation.edit(g, encoder, cfg, inversion)).abs().mean(0)
        # the layout changes where the hair was removed, at least 5x more than away from it
        assert difference[changed].mean() > 5 * difference[~near].mean()
