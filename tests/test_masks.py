import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from pixelface.core.errors import InputWarning
from pixelface.data.masks import (LABELS, NUM_CLASSES, PALETTE, MaskError, color_tensor, color_to_label,
                                  label_to_color, one_hot)
from pixelface.editing.inputs import read_mask


def test_palette_is_celebamask_hq():
    assert NUM_CLASSES == 19 and len(PALETTE) == 19 and len({tuple(c) for c in PALETTE}) == 19
    assert tuple(PALETTE[LABELS.index("hair")]) == (0, 0, 204)
    assert tuple(PALETTE[LABELS.index("skin")]) == (204, 0, 0)


def test_noisy_colours_snap_back_to_their_labels():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, NUM_CLASSES, (64, 64))
    noisy = np.clip(label_to_color(labels).astype(int) + rng.integers(-20, 21, (64, 64, 3)), 0, 255)
    assert (color_to_label(noisy.astype(np.uint8)) == labels).all()


def test_too_many_off_palette_pixels_name_the_file():
    rgb = label_to_color(np.zeros((10, 10), int)).copy()
    rgb[:2] = (128, 128, 128)  # 20% grey, far from every palette colour
    with pytest.raises(MaskError, match=r"masks/7.png: 20.0% of pixels are off the CelebAMask-HQ palette"):
        color_to_label(rgb, name="masks/7.png")
    assert color_to_label(rgb, max_off_palette=0.25).shape == (10, 10)  # tolerated share


def test_bad_label_ids_and_shapes_are_errors():
    with pytest.raises(MaskError, match="0..18"):
        label_to_color(np.array([[19]]))
    with pytest.raises(MaskError, match="expected an RGB colour mask"):
        color_to_label(np.zeros((4, 4), np.uint8))


def test_tensor_forms():
    labels = torch.tensor([[[0, 13], [1, 18]]])
    oh = one_hot(labels)
    assert oh.shape == (1, 19, 2, 2) and oh.sum(1).eq(1).all() and oh[0, 13, 0, 1] == 1
    col = color_tensor(labels)
    assert col.shape == (1, 3, 2, 2) and col.min() >= -1 and col.max() <= 1
    assert torch.allclose((col[0, :, 0, 1] + 1) * 127.5, torch.tensor([0.0, 0.0, 204.0]))


def test_a_noisy_colour_mask_is_read_with_a_warning(tmp_path):
    """Heavy JPEG-like noise snaps some pixels to wrong classes: the user is told, a clean mask says nothing."""
    labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.uint8), 4)[None].repeat(8, 0)      # (8, 76)
    clean = label_to_color(labels)
    Image.fromarray(clean).save(tmp_path / "clean.png")
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 18, clean.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(tmp_path / "noisy.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(read_mask(tmp_path / "clean.png", 8)[0], torch.from_numpy(labels[0, 34:42]).long())
    with pytest.warns(InputWarning, match="noisy.png: .* may not be the one meant"):
        read_mask(tmp_path / "noisy.png", 8)
