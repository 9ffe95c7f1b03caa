"""Label-id masks numbered in face-parsing.PyTorch (BiSeNet) order: the table, the order heuristic in both
directions, reading files, arrays and palette PNGs in either order, and datasets with DATA.MASK_ORDER."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from pixelface.core import errors
from pixelface.core.config import ConfigError, load_config
from pixelface.core.errors import InputWarning
from pixelface.data.datasets import FaceDataset
from pixelface.data.masks import (FACE_PARSING_LABELS, FACE_PARSING_TO_CELEBAMASK, LABEL_ID, LABELS, NUM_CLASSES,
                                  PALETTE, MaskError, color_to_label, guess_mask_order, label_to_color,
                                  to_celebamask)
from pixelface.data.synthface import make_face, write_dataset
from pixelface.editing import inputs

# CelebAMask-HQ id -> face-parsing id: writes a CelebAMask-HQ map the way a BiSeNet parser would.
TO_FACE_PARSING = np.argsort(FACE_PARSING_TO_CELEBAMASK)


def head(size: int = 32) -> np.ndarray:
    """A CelebAMask-HQ label map of a short-haired head: hair on top, skin, lower lip, neck below."""
    labels = np.zeros((size, size), np.uint8)
    q = size // 8
    labels[q:3 * q, 2 * q:6 * q] = LABEL_ID["hair"]
    labels[3 * q:6 * q, 2 * q:6 * q] = LABEL_ID["skin"]
    labels[5 * q:5 * q + 2, 3 * q:5 * q] = LABEL_ID["l_lip"]
    labels[6 * q:, 3 * q:5 * q] = LABEL_ID["neck"]
    return labels


@pytest.fixture(scope="module")
def face_labels():
    """A synthface label map (CelebAMask-HQ ids) whose hair lies mostly above the face."""
    labels = make_face(0, 1, 64)[2]
    assert guess_mask_order(labels) == "celebamask"
    return labels


def test_face_parsing_table_names_the_same_classes():
    assert sorted(FACE_PARSING_TO_CELEBAMASK.tolist()) == list(range(NUM_CLASSES))  # a permutation
    renamed = {"eye_g": "eyeglasses", "ear_r": "earring", "neck_l": "necklace"}
    assert [LABELS[i] for i in FACE_PARSING_TO_CELEBAMASK] == [renamed.get(n, n) for n in FACE_PARSING_LABELS]
    assert FACE_PARSING_TO_CELEBAMASK[[14, 17, 13, 10, 6]].tolist() == [17, 13, 12, 2, 3]  # neck hair l_lip nose glasses
    ids = np.arange(NUM_CLASSES)
    assert np.array_equal(to_celebamask(ids, "celebamask"), ids)
    with pytest.raises(MaskError, match="mask order 'bisenet'"):
        to_celebamask(ids, "bisenet")


def test_guess_mask_order_in_both_directions():
    labels = head()
    assert guess_mask_order(labels) == "celebamask"                       # id 13 (hair) above the face
    assert guess_mask_order(TO_FACE_PARSING[labels]) == "faceparsing"     # id 17 (hair) above the face
    no_skin = np.where(labels == LABEL_ID["skin"], 0, labels)
    assert guess_mask_order(no_skin) is None
    long_hair = labels.copy()
    long_hair[3 * 4:, :2 * 4] = LABEL_ID["hair"]  # hair down both sides: most of it below the face's centre
    long_hair[3 * 4:, 6 * 4:] = LABEL_ID["hair"]
    assert guess_mask_order(long_hair) is None and guess_mask_order(TO_FACE_PARSING[long_hair]) is None


def test_face_parsing_masks_read_as_their_celebamask_equivalent(tmp_path, face_labels):
    Image.fromarray(label_to_color(face_labels)).save(tmp_path / "colour.png")
    Image.fromarray(TO_FACE_PARSING[face_labels].astype(np.uint8)).save(tmp_path / "faceparsing.png")
    expected = inputs.read_mask(tmp_path / "colour.png", 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(inputs.read_mask(tmp_path / "faceparsing.png", 32, mask_order="faceparsing"), expected)
        assert torch.equal(inputs.read_mask(TO_FACE_PARSING[face_labels], 32, mask_order="faceparsing"), expected)
        # colour masks are the CelebAMask-HQ palette whatever the order
        assert torch.equal(inputs.read_mask(tmp_path / "colour.png", 32, mask_order="faceparsing"), expected)
    with pytest.warns(InputWarning):
        assert not torch.equal(inputs.read_mask(tmp_path / "faceparsing.png", 32), expected)
    with pytest.raises(errors.InputError, match="mask order 'bisenet'"):
        inputs.read_mask(tmp_path / "colour.png", 32, mask_order="bisenet")


def test_reading_a_mask_in_the_wrong_order_warns(tmp_path, face_labels):
    Image.fromarray(TO_FACE_PARSING[face_labels].astype(np.uint8)).save(tmp_path / "faceparsing.png")
    Image.fromarray(face_labels).save(tmp_path / "celebamask.png")
    with pytest.warns(InputWarning, match=r"faceparsing\.png: .*look like faceparsing order, not celebamask.*"
                                          r"--mask-order faceparsing.*DATA\.MASK_ORDER"):
        inputs.read_mask(tmp_path / "faceparsing.png", 32)
    with pytest.warns(InputWarning, match=r"celebamask\.png: .*look like celebamask order, not faceparsing.*"
                                          r"--mask-order celebamask"):
        inputs.read_mask(tmp_path / "celebamask.png", 32, mask_order="faceparsing")


def test_palette_png_whose_indices_are_label_ids_reads_as_label_ids(tmp_path, face_labels):
    expected = inputs.read_mask(face_labels, 32)
    celebamask = Image.fromarray(face_labels)
    celebamask.putpalette(PALETTE.reshape(-1).tolist())  # mode L -> P: the ids become palette indices
    celebamask.save(tmp_path / "palette.png")
    grey = Image.fromarray(TO_FACE_PARSING[face_labels].astype(np.uint8))
    grey.putpalette([v for i in range(256) for v in (i, i, i)])  # colours that are no CelebAMask-HQ colours
    grey.save(tmp_path / "grey_faceparsing.png")
    assert Image.open(tmp_path / "palette.png").mode == "P" == Image.open(tmp_path / "grey_faceparsing.png").mode
    assert torch.equal(inputs.read_mask(tmp_path / "palette.png", 32), expected)
    assert torch.equal(inputs.read_mask(Image.open(tmp_path / "palette.png"), 32), expected)
    assert torch.equal(inputs.read_mask(tmp_path / "grey_faceparsing.png", 32, mask_order="faceparsing"), expected)


def test_dataset_label_masks_are_remapped_with_mask_order(tmp_path):
    root = write_dataset(tmp_path / "data", 4, 32, 0, workers=1)
    (root / "labels").mkdir()
    for path in (root / "masks").glob("*.png"):
        ids = color_to_label(np.asarray(Image.open(path).convert("RGB")))
        Image.fromarray(TO_FACE_PARSING[ids].astype(np.uint8)).save(root / "labels" / path.name)
    base = [f"DATA.ROOT={root}", "DATA.IMAGE_SIZE=32"]
    colour = FaceDataset(load_config(None, base), "train", train=False)
    remapped = FaceDataset(load_config(None, base + ["DATA.MASK_DIR=labels", "DATA.MASK_KIND=label",
                                                      "DATA.MASK_ORDER=faceparsing"]), "train", train=False)
    as_celebamask = FaceDataset(load_config(None, base + ["DATA.MASK_DIR=labels", "DATA.MASK_KIND=label"]),
                                "train", train=False)
    for i in range(len(colour)):
        assert torch.equal(remapped[i]["labels"], colour[i]["labels"])
        assert torch.equal(remapped[i]["mask"], colour[i]["mask"])
    assert not torch.equal(as_celebamask[0]["labels"], colour[0]["labels"])
    with pytest.raises(ConfigError, match="MASK_ORDER"):
        load_config(None, ["DATA.MASK_ORDER=bisenet"])
