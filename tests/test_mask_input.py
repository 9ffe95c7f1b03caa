"""G's mask input rule: MODEL.MASK_INPUT 'onehot_zones' adds the cheeks and eyelids to the one-hot classes."""
import torch

from pixelface.core.config import load_config
from pixelface.data.face_zones import face_zones
from pixelface.data.mask_input import ZONE_CHANNELS, generator_input, mask_channels_from_config
from pixelface.data.masks import LABEL_ID, NUM_CLASSES
from pixelface.networks.discriminator import Discriminator
from pixelface.networks.generator import Generator

TINY = ["MODEL.SIZE=64", "MODEL.CHANNEL_MAX=32", "MODEL.STYLE_DIM=32", "MODEL.MASK_DIM=16", "MODEL.N_MLP=1",
        "TEXT.EMBEDDING_DIM=24"]


def upright_face(size=64):
    """Skin with two eyes and a lip row, at `size` px."""
    labels = torch.zeros(size, size, dtype=torch.long)
    k = size // 32
    labels[4 * k:28 * k, 4 * k:28 * k] = LABEL_ID["skin"]
    for name, col in (("r_eye", 10 * k), ("l_eye", 21 * k)):
        labels[12 * k:14 * k, col:col + 2 * k] = LABEL_ID[name]
    labels[22 * k, 12 * k:20 * k] = LABEL_ID["u_lip"]
    return labels


def test_onehot_zones_are_the_one_hot_then_the_cheeks_and_eyelids_at_the_input_size():
    labels = upright_face(128)
    plain = generator_input(labels, 64, "onehot", "nearest")
    zoned = generator_input(labels, 64, "onehot_zones", "nearest")
    assert zoned.shape == (NUM_CLASSES + len(ZONE_CHANNELS), 64, 64) and torch.equal(zoned[:NUM_CLASSES], plain)
    expected = face_zones(plain.argmax(0).numpy())            # placed on the labels at the input's own size
    for channel, name in zip(zoned[NUM_CLASSES:], ZONE_CHANNELS):
        assert channel.sum() > 0 and torch.equal(channel.bool(), torch.from_numpy(expected[name]))
    no_eyes = torch.full((64, 64), LABEL_ID["skin"])
    assert generator_input(no_eyes, 64, "onehot_zones", "nearest")[NUM_CLASSES:].sum() == 0


def test_onehot_zones_widen_both_networks():
    cfg = load_config(None, ["MODEL.MASK_INPUT=onehot_zones", *TINY])
    assert mask_channels_from_config(cfg) == NUM_CLASSES + 2
    assert Generator.from_config(cfg).mask_encoder.in_channels == NUM_CLASSES + 2
    plain = Discriminator.from_config(load_config(None, ["MODEL.MASK_INPUT=onehot", *TINY]))
    zoned = Discriminator.from_config(cfg)
    assert sum(p.numel() for p in zoned.parameters()) > sum(p.numel() for p in plain.parameters())
