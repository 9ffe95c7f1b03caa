"""Your own photo: finding the face, the CelebA-HQ/FFHQ crop, and putting an edit back (pixelface.data.face_detection,
.face_alignment, pixelface.editing.face_crop, .paste_back, scripts/align_face.py).

The geometry tests need nothing; the pipeline tests need the 'align' extra (dlib-bin, face_recognition_models)
and scikit-image, whose astronaut photo and brick texture the scenes are built from (requirements-align.txt).
"""
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pixelface.core.errors import InputError, InputWarning
from pixelface.data.face_alignment import Alignment, crop_frame, landmark_residual, warp_to_crop
from pixelface.data.masks import LABEL_ID, label_to_color
from pixelface.editing.face_crop import face_crop, read_face
from pixelface.editing.paste_back import face_weight, paste_back, photo_weight
from conftest import load_script

HAS_ALIGN = all(importlib.util.find_spec(m) for m in ("dlib", "face_recognition_models", "skimage"))
needs_align = pytest.mark.skipif(not HAS_ALIGN, reason="needs the 'align' extra and scikit-image: "
                                                       "pip install -r requirements-align.txt")
SIZE = 128
MAX_ALIGNED_MAE = 8.0    # mean |difference| (0-255) over the crop's central 60%, aligned vs the original crop


def upright_landmarks(eye_mid=(100.0, 80.0), eye_distance=40.0):
    x, y = eye_mid
    d = eye_distance
    return np.array([(x - d / 2, y), (x + d / 2, y), (x, y + 0.55 * d), (x - 0.45 * d, y + 0.9 * d),
                     (x + 0.45 * d, y + 0.9 * d)])


def test_crop_square_follows_the_celeba_hq_geometry():
    """Level eyes 40 px apart, mouth 36 px below: side 2·max(2·40, 1.8·36) = 160, centre 3.6 px below the eyes."""
    centre, x, y = crop_frame(upright_landmarks())
    np.testing.assert_allclose(centre, (100, 83.6))
    np.testing.assert_allclose(x, (80, 0), atol=1e-9)
    np.testing.assert_allclose(y, (0, 80), atol=1e-9)


def test_alignment_inverse_and_rotation():
    turn = np.radians(30)
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    landmarks = upright_landmarks() @ rotation.T + (40, 10)
    alignment = Alignment.from_landmarks(landmarks, 64, (300, 200))
    assert alignment.angle == pytest.approx(30, abs=1e-6)
    assert alignment.scale == pytest.approx(160 / 64)
    points = np.array([(0.0, 0.0), (10.5, 60.0), (64.0, 64.0)])
    np.testing.assert_allclose(alignment.photo_to_crop(alignment.crop_to_photo(points)), points, atol=1e-9)
    again = Alignment.from_json(json.loads(json.dumps(alignment.to_json())))
    np.testing.assert_allclose(again.matrix, alignment.matrix, atol=1e-5)


def test_warp_is_exact_for_a_shifted_photo_and_fills_outside_it():
    """An integer shift of the photo and of its landmarks gives the same crop (to one grey level: float rounding
    of the sampling positions); where the square leaves the
    photo the crop is filled (mirrored, blurred, faded), not black."""
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (200, 240, 3), dtype=np.uint8)
    crop = warp_to_crop(photo, Alignment.from_landmarks(upright_landmarks(), 80, (240, 200)))
    shifted = np.zeros((230, 260, 3), np.uint8)
    shifted[30:, 20:] = photo
    again = warp_to_crop(shifted, Alignment.from_landmarks(upright_landmarks() + (20, 30), 80, (260, 230)))
    inner = slice(20, 60)   # inside the photo in both
    assert np.abs(again[inner, inner].astype(int) - crop[inner, inner]).max() <= 1
    corner = warp_to_crop(photo, Alignment.from_landmarks(upright_landmarks((5.0, 5.0)), 80, (240, 200)))
    assert corner[:10, :10].mean() > 40   # the top-left corner lies outside the photo


def test_landmark_residual_tells_a_face_from_other_points():
    assert landmark_residual(upright_landmarks()) < 0.05
    scrambled = upright_landmarks()[[3, 1, 4, 0, 2]]
    assert landmark_residual(scrambled) > 0.3


def round_face_labels(size):
    """A label map: hair above, skin disc in the middle, background around, cloth at the bottom."""
    yy, xx = np.mgrid[:size, :size] + 0.5
    labels = np.zeros((size, size), np.int64)
    labels[(yy - size * 0.45) ** 2 + (xx - size / 2) ** 2 < (size * 0.38) ** 2] = LABEL_ID["hair"]
    labels[(yy - size * 0.55) ** 2 + (xx - size / 2) ** 2 < (size * 0.3) ** 2] = LABEL_ID["skin"]
    labels[yy > size * 0.9] = LABEL_ID["cloth"]
    return labels


def test_face_weight_is_one_inside_and_zero_at_the_crop_border():
    weight = face_weight(round_face_labels(64))
    assert weight[35, 32] == 1 and weight[2, 2] == 0 and weight[63, 32] == 0
    assert (weight[0] == 0).all() and (weight[:, -1] == 0).all()


# ---------------------------------------------------------------------------------------------------------------
# The pipeline on a real photo


def brick(width, height):
    from skimage import data
    tile = np.asarray(Image.fromarray(data.brick()).convert("RGB"))
    return np.tile(tile, (height // tile.shape[0] + 1, width // tile.shape[1] + 1, 1))[:height, :width].copy()


def place(canvas, photo, angle, scale, centre):
    """`photo` scaled, turned by `angle` degrees (counter-clockwise) and pasted whole with its centre at `centre`."""
    picture = Image.fromarray(photo).convert("RGBA")
    picture = picture.resize((round(picture.width * scale), round(picture.height * scale)), Image.LANCZOS)
    picture = picture.rotate(angle, Image.BICUBIC, expand=True)
    base = Image.fromarray(canvas).convert("RGBA")
    base.alpha_composite(picture, (round(centre[0] - picture.width / 2), round(centre[1] - picture.height / 2)))
    return np.asarray(base.convert("RGB"))


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data
    return data.astronaut()


@pytest.fixture(scope="module")
def aligned_astronaut(astronaut):
    return face_crop(Image.fromarray(astronaut), SIZE, "on")


def central_mae(a, b):
    inner = slice(SIZE // 5, SIZE - SIZE // 5)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64))[inner, inner].mean())


@needs_align
@pytest.mark.parametrize("angle,scale,centre", [(25, 1.5, (620, 330)), (-30, 0.8, (250, 300)), (-40, 1.2, (500, 350))])
def test_a_turned_scaled_shifted_face_comes_back_to_its_aligned_crop(astronaut, aligned_astronaut, angle, scale, centre):
    """The astronaut's aligned crop, then the whole photo turned, scaled and moved into a larger brick-wall scene:
    the pipeline's crop of the scene matches the original crop (central MAE < 8 of 255), a centre crop does not."""
    scene = Image.fromarray(place(brick(900, 700), astronaut, angle, scale, centre))
    found = face_crop(scene, SIZE, "on")
    assert found.how == "aligned" and len(found.faces) == 1
    assert central_mae(found.crop, aligned_astronaut.crop) < MAX_ALIGNED_MAE
    assert found.alignment.angle == pytest.approx(aligned_astronaut.alignment.angle - angle, abs=2)
    assert central_mae(face_crop(scene, SIZE, "off").crop, aligned_astronaut.crop) > 4 * MAX_ALIGNED_MAE


@needs_align
def test_paste_back_changes_only_the_feathered_face_of_an_exif_rotated_photo(tmp_path, astronaut):
    """A JPEG stored on its side with EXIF orientation 6: read upright, edited (colours inverted), pasted back:
    same upright size, every pixel outside the feathered face region byte-identical, the face changed."""
    scene = place(brick(640, 480), astronaut, 15, 0.9, (300, 250))
    sideways = Image.fromarray(scene).transpose(Image.Transpose.ROTATE_90)   # what the camera stored
    exif = Image.Exif()
    exif[0x0112] = 6                                                         # "rotate 90° clockwise to view"
    path = tmp_path / "phone.jpg"
    sideways.save(path, exif=exif, quality=95)
    face = read_face(path, SIZE, "on")
    assert face.photo.shape == (480, 640, 3)                                 # upright, as a viewer shows it
    labels = round_face_labels(SIZE)
    edited = 255 - face.crop
    whole = face.paste(edited, labels)
    assert whole.shape == face.photo.shape
    weight = photo_weight(labels, face.alignment)
    outside = weight == 0
    assert outside.mean() > 0.8
    np.testing.assert_array_equal(whole[outside], face.photo[outside])
    inside = weight > 0.99
    assert inside.sum() > 1000
    assert np.abs(whole[inside].astype(int) - face.photo[inside]).mean() > 50
    np.testing.assert_array_equal(paste_back(face.photo, face.crop, labels, face.alignment)[outside], face.photo[outside])


@needs_align
def test_a_photo_without_a_face_is_refused_in_one_line():
    wall = Image.fromarray(brick(500, 400))
    for mode in ("on", "auto"):                     # auto: a photo that is not square cannot be a crop already
        with pytest.raises(InputError, match="no face found"):
            face_crop(wall, SIZE, mode)
    square = face_crop(Image.fromarray(brick(300, 300)), SIZE, "auto")
    assert square.alignment is None and "no face found" in square.how


@needs_align
def test_two_faces_the_largest_by_default_or_the_one_asked_for(astronaut):
    scene = place(brick(1000, 600), astronaut, 0, 0.7, (250, 300))
    scene = Image.fromarray(place(scene, astronaut, 0, 1.0, (720, 300)))
    largest = face_crop(scene, SIZE, "on")
    assert len(largest.faces) == 2
    widths = [f.width for f in largest.faces]
    assert largest.faces[largest.index].width == max(widths)
    other = 1 - largest.index
    chosen = face_crop(scene, SIZE, "on", face=other)
    assert chosen.index == other and chosen.alignment.scale < largest.alignment.scale
    with pytest.raises(InputError, match="face 2 asked for, but 2 found"):
        face_crop(scene, SIZE, "on", face=2)


@needs_align
def test_a_small_face_is_refused_naming_the_minimum(astronaut):
    scene = Image.fromarray(place(brick(400, 300), astronaut, 0, 0.45, (200, 150)))
    with pytest.raises(InputError, match="the minimum is 48 px"):
        face_crop(scene, SIZE, "on")


@needs_align
def test_a_square_photo_whose_face_is_too_small_is_used_as_it_is_in_auto_mode(astronaut):
    """auto: a small square picture whose face cannot be aligned is most likely a crop already (a warning says
    why); on: the same photo is refused."""
    scene = Image.fromarray(place(brick(300, 300), astronaut, 0, 0.45, (150, 150)))
    with pytest.warns(InputWarning, match=r"the minimum is 48 px .*; using the square photo as it is"):
        kept = face_crop(scene, SIZE, "auto")
    assert kept.alignment is None and kept.how == "as is (square; its face could not be aligned)"
    with pytest.raises(InputError, match="the minimum is 48 px"):
        face_crop(scene, SIZE, "on")


@needs_align
def test_an_aligned_crop_is_used_as_it_is_in_auto_mode(aligned_astronaut):
    again = face_crop(Image.fromarray(aligned_astronaut.crop), SIZE, "auto")
    assert again.alignment is None and again.how == "as is (already an aligned crop)"
    np.testing.assert_array_equal(again.crop, aligned_astronaut.crop)


@needs_align
def test_align_face_command_writes_the_crop_and_its_json(tmp_path, astronaut):
    photo = tmp_path / "scene.png"
    Image.fromarray(place(brick(700, 500), astronaut, -20, 1.0, (380, 260))).save(photo)
    out = tmp_path / "crop.png"
    done = subprocess.run([sys.executable, "-m", "pixelface.commands.launch", "align_face", "--image", str(photo),
                           "--out", str(out), "--size", "96"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert Image.open(out).size == (96, 96)
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["how"] == "aligned" and report["face"] == 0 and len(report["faces"]) == 1
    assert set(report["faces"][0]["landmarks"]) == {"left_eye", "right_eye", "nose", "mouth_left", "mouth_right"}
    alignment = Alignment.from_json(report["alignment"])
    assert alignment.angle == pytest.approx(20, abs=3)
    again = subprocess.run([sys.executable, "-m", "pixelface.commands.launch", "align_face", "--image",
                            str(tmp_path / "wall.png"), "--out", str(tmp_path / "x.png")], capture_output=True, text=True)
    assert again.returncode == 2 and again.stderr.count("\n") == 1


@needs_align
def test_manipulate_edits_a_photo_and_puts_the_face_back(ckpt, tmp_path, astronaut):
    """scripts/manipulate.py on a photo that is not an aligned crop: the face is aligned, inverted, edited, and
    each result is also written as the whole photo (same size, same format), unchanged outside the face."""
    scene = place(brick(480, 360), astronaut, 20, 0.8, (240, 180))
    Image.fromarray(scene).save(tmp_path / "scene.png")
    labels = round_face_labels(64)
    Image.fromarray(label_to_color(labels.astype(np.uint8))).save(tmp_path / "mask.png")
    out = tmp_path / "out"
    assert load_script("manipulate").main([str(a) for a in (
        "--ckpt", ckpt, "--image", tmp_path / "scene.png", "--mask", tmp_path / "mask.png", "--caption", "a woman",
        "--edit-text", "a woman with blond hair", "--steps", 2, "--out", out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["alignment"]["how"] == "aligned" and len(report["alignment"]["faces"]) == 1
    alignment = Alignment.from_json(report["alignment"]["alignment"])
    outside = photo_weight(labels, alignment) == 0
    for name in ("photo_reconstruction.png", "photo_edit_1.png"):
        whole = np.asarray(Image.open(out / name))
        assert whole.shape == scene.shape
        np.testing.assert_array_equal(whole[outside], scene[outside])
        assert not np.array_equal(whole, scene)


class FixedDetector:
    """A detector plugged in from outside: one face with known landmarks."""
    def detect(self, rgb):
        from pixelface.data.face_detection import Face
        return [Face((60.0, 50.0, 140.0, 130.0), 2.0, upright_landmarks())]


def fixed_detector():
    return FixedDetector()


def test_any_detector_plugs_in_without_dlib(tmp_path, monkeypatch):
    """--detector package.module:factory (and the API's detector=) take any object with detect(rgb); the crop
    is cut from its landmarks; a factory without detect() or a bad spec is one clear error."""
    (tmp_path / "my_detector.py").write_text("from test_face_alignment import fixed_detector, FixedDetector\n"
                                             "def broken():\n    return object()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    photo = np.random.default_rng(0).integers(0, 256, (200, 240, 3), dtype=np.uint8)
    expected = warp_to_crop(photo, Alignment.from_landmarks(upright_landmarks(), 64, (240, 200)))
    for detector in ("my_detector:fixed_detector", FixedDetector()):
        found = face_crop(Image.fromarray(photo), 64, "on", detector=detector)
        assert found.how == "aligned" and np.array_equal(found.crop, expected)
    with pytest.raises(InputError, match="has no detect"):
        face_crop(Image.fromarray(photo), 64, "on", detector="my_detector:broken")
    with pytest.raises(InputError, match="expected 'dlib', a dlib .dat file or 'package.module:name'"):
        face_crop(Image.fromarray(photo), 64, "on", detector="retinaface")


def test_landmarks_that_are_no_face_layout_are_refused():
    from pixelface.data.face_detection import Face
    from pixelface.editing.face_crop import check_face
    check_face(Face((0, 0, 100, 100), 1.0, upright_landmarks()), "photo.jpg")
    with pytest.raises(InputError, match="photo.jpg: landmark confidence too low"):
        check_face(Face((0, 0, 100, 100), 1.0, upright_landmarks()[[3, 1, 4, 0, 2]]), "photo.jpg")
