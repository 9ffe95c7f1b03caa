import io
import json
import re
import runpy

import numpy as np
import pytest
from PIL import Image

from pixelface.data import synthface as sf
from conftest import REPO_ROOT
from pixelface.data.masks import LABEL_ID, PALETTE, color_to_label

SHAPE_FLIPS = {
    "hair_style": "bangs", "eyeglasses": True, "hat": True, "mouth_open": True, "smiling": True, "earrings": True,
    "necklace": True, "bushy_eyebrows": True, "arched_eyebrows": True, "narrow_eyes": True, "big_nose": True,
    "big_lips": True,
}
COLOR_FLIPS = {"hair_color": "blond", "lipstick": True, "heavy_makeup": True, "rosy_cheeks": True,
               "pale_skin": True, "beard": True}


def plain_man() -> dict:
    attrs = {name: values[0] for name, values in sf.ATTRIBUTES.items()}
    attrs.update(gender="male", hair_color="black", hair_style="straight")
    return attrs


def render(attrs, size=64, seed=5):
    return sf.render_face(attrs, size, np.random.default_rng(seed))


def jpeg_round_trip(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", **sf.JPEG_OPTIONS)
    return np.asarray(Image.open(buffer).convert("RGB"))


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "a"
    sf.write_dataset(root, num=10, size=32, seed=3, workers=1)
    return root


def test_same_bytes_whatever_the_worker_count(small_dataset, tmp_path):
    other = sf.write_dataset(tmp_path / "b", num=10, size=32, seed=3, workers=2)
    files = sorted(p.relative_to(small_dataset) for p in small_dataset.rglob("*") if p.is_file())
    assert len(files) == 2 * 10 + 2
    assert files == sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file())
    for f in files:
        assert (small_dataset / f).read_bytes() == (other / f).read_bytes(), f


def test_other_seed_gives_other_faces(small_dataset, tmp_path):
    other = sf.write_dataset(tmp_path / "c", num=10, size=32, seed=4, workers=1)
    assert (small_dataset / "images/0.jpg").read_bytes() != (other / "images/0.jpg").read_bytes()


def test_masks_are_lossless_palette_images_of_the_rendered_labels(small_dataset):
    palette = {tuple(c) for c in PALETTE.tolist()}
    for i in range(10):
        mask = np.asarray(Image.open(small_dataset / f"masks/{i}.png").convert("RGB"))
        assert {tuple(c) for c in mask.reshape(-1, 3).tolist()} <= palette
        _, _, labels, _ = sf.make_face(3, i, 32)
        assert np.array_equal(color_to_label(mask), labels)
        image = Image.open(small_dataset / f"images/{i}.jpg")
        assert image.format == "JPEG" and image.size == (32, 32) and image.mode == "RGB"


def test_index_layout(small_dataset):
    index = json.loads((small_dataset / "dataset2.json").read_text())
    assert set(index) == {"train", "test"}
    ids, keys = {}, []
    for split in ("train", "test"):
        entries = index[split]
        assert len(entries["filenames"]) == len(entries["keynames"]) == len(entries["captions"])
        names = entries["filenames"]
        assert len(names) % 10 == 0
        groups = [names[k:k + 10] for k in range(0, len(names), 10)]
        assert all(len(set(g)) == 1 for g in groups)                  # 10 consecutive captions per image
        ids[split] = [g[0] for g in groups]
        assert len(set(ids[split])) == len(groups)                    # each image once
        keys += entries["keynames"]
        for k in range(0, len(names), 10):
            assert len(set(entries["captions"][k:k + 10])) == 10
    assert not set(ids["train"]) & set(ids["test"])
    assert sorted(ids["train"] + ids["test"], key=int) == [str(i) for i in range(10)]
    assert len(ids["test"]) == 2
    assert keys == list(range(100))                                   # train first, then test
    attributes = json.loads((small_dataset / "attributes.json").read_text())
    assert attributes["0"] == sf.make_face(3, 0, 32)[0]


def test_captions_are_true_varied_and_in_the_mmceleba_style():
    vocabulary = set("this the person woman man she he has is and wears wearing no beard hair black brown blond gray "
                     "wavy straight bangs bald smiling mouth slightly open big lips nose bushy arched eyebrows narrow "
                     "eyes pale skin rosy cheeks eyeglasses lipstick heavy makeup earrings necklace hat".split())
    rng = np.random.default_rng(0)
    hair_mentions = total = 0
    for _ in range(30):
        attrs = sf.sample_attributes(rng)
        captions = sf.make_captions(attrs, rng)
        assert len(captions) == 10
        for caption in captions:
            assert re.fullmatch(r"([A-Z][a-z ,]+\.)( [A-Z][a-z ,]+\.)*", caption), caption
            assert set(re.findall(r"\w+", caption.lower())) <= vocabulary, caption
            stated = sf.caption_attributes(caption)
            assert stated and all(attrs[k] == v for k, v in stated.items()), (caption, attrs)
            if attrs["hair_style"] != "bald":
                hair_mentions += "hair_color" in stated
                total += 1
    assert hair_mentions > 0.7 * total


def test_caption_attributes_reads_back_phrases():
    stated = sf.caption_attributes("This smiling man has gray hair, and bangs. He has no beard. He wears hat.")
    assert stated == {"gender": "male", "smiling": True, "hair_color": "gray", "hair_style": "bangs",
                      "beard": False, "hat": True}


@pytest.mark.parametrize("name", sorted(COLOR_FLIPS))
def test_colour_only_attribute_changes_pixels_not_mask(name):
    base = plain_man()
    image, labels = render(base)
    image2, labels2 = render(dict(base, **{name: COLOR_FLIPS[name]}))
    assert np.array_equal(labels, labels2)
    assert np.abs(image.astype(int) - image2.astype(int)).max() > 20
    assert sf.predict_attributes(image, labels)[name] == base[name]
    assert sf.predict_attributes(image2, labels)[name] == COLOR_FLIPS[name]


@pytest.mark.parametrize("name", sorted(SHAPE_FLIPS))
def test_shape_attribute_changes_mask(name):
    base = plain_man()
    _, labels = render(base)
    _, labels2 = render(dict(base, **{name: SHAPE_FLIPS[name]}))
    assert (labels != labels2).sum() >= 3


def test_bald_has_no_hair_and_hat_and_glasses_their_classes():
    _, bald = render(dict(plain_man(), hair_style="bald"))
    assert not (bald == LABEL_ID["hair"]).any()
    _, dressed = render(dict(plain_man(), hat=True, eyeglasses=True, earrings=True, necklace=True))
    for name in ("hat", "eyeglasses", "earring", "necklace"):
        assert (dressed == LABEL_ID[name]).sum() >= 3, name


@pytest.mark.parametrize("size", [64, 128, 256])
def test_sizes(size):
    image, labels = render(dict(plain_man(), eyeglasses=True), size=size)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert labels.shape == (size, size) and labels.dtype == np.uint8
    present = set(np.unique(labels).tolist())
    assert {LABEL_ID[c] for c in ("skin", "nose", "l_eye", "r_eye", "l_brow", "r_brow", "u_lip", "l_lip", "hair",
                                   "neck", "cloth", "eyeglasses", "background")} <= present
    assert labels.max() < len(PALETTE)


def test_scorer_reads_rendered_faces_after_jpeg():
    hits: dict[str, list[bool]] = {}
    flipped_hits = []
    for i in range(100):
        attrs, image, labels, _ = sf.make_face(11, i, 64)
        image = jpeg_round_trip(image)
        for name, ok in sf.score_attributes(image, labels, attrs).items():
            hits.setdefault(name, []).append(ok)
        # The scorer must be able to say no: against the opposite lipstick it should disagree.
        flipped_hits += sf.score_attributes(image, labels, {"lipstick": not attrs["lipstick"]}).values()
    accuracy = {name: float(np.mean(v)) for name, v in hits.items()}
    assert set(accuracy) == set(sf.COLOR_ONLY)
    assert np.mean(list(accuracy.values())) >= 0.98, accuracy
    assert min(accuracy.values()) >= 0.95, accuracy
    assert np.mean(flipped_hits) <= 0.05


def test_scorer_skips_what_it_cannot_see():
    image, labels = render(dict(plain_man(), hair_style="bald"))
    assert "hair_color" not in sf.predict_attributes(image, labels)
    assert sf.predict_attributes(image, np.zeros_like(labels)) == {}


def test_bad_attributes_are_named():
    with pytest.raises(ValueError, match="hair_color = 'green'"):
        render(dict(plain_man(), hair_color="green"))
    with pytest.raises(ValueError, match="beard = True needs gender"):
        render(dict(plain_man(), gender="female", beard=True))


def test_non_empty_out_is_refused_and_left_alone(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "dataset2.json").write_text("precious")
    with pytest.raises(FileExistsError, match="not empty"):
        sf.write_dataset(out, num=4, size=32, seed=0)
    main = runpy.run_path(str(REPO_ROOT / "scripts/make_synthetic_faces.py"), run_name="cli")["main"]
    assert main(["--out", str(out), "--num", "4", "--size", "32"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["dataset2.json"]
    assert (out / "dataset2.json").read_text() == "precious"
    assert main(["--out", str(out), "--num", "4", "--size", "32", "--workers", "1", "--force"]) == 0
    assert len(json.loads((out / "dataset2.json").read_text())["train"]["captions"]) == 30


def test_bad_arguments_fail_before_writing(tmp_path):
    with pytest.raises(ValueError, match="num = 1"):
        sf.write_dataset(tmp_path / "x", num=1, size=32, seed=0)
    with pytest.raises(ValueError, match="size = 8"):
        sf.write_dataset(tmp_path / "x", num=4, size=8, seed=0)
    assert not (tmp_path / "x").exists()


def test_preview_grid_has_one_cell_per_face():
    sheet = sf.preview_grid(seed=0, count=2, size=64, columns=2)
    assert sheet.size == (2 * 128 + 8, 64 + 4 * int(64 * 0.12) + 8)
    pixels = np.asarray(sheet)
    assert (pixels[:64, :64] != 255).any() and (pixels[:64, 136:200] != 255).any()
