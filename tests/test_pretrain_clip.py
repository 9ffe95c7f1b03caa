"""Small-CLIP pretraining: a one-epoch round trip on a tiny fake dataset, loaded back by path."""
import importlib.util
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pixelface.core.config import load_config
from pixelface.training.clip_pretrain import (CaptionTokens, clip_input, contrastive_loss, load_images,
                                              pretrain_clip, retrieval_metrics)
from conftest import REPO_ROOT
from pixelface.data.datasets import FaceDataset
from pixelface.data.hard_negatives import HardNegatives
from pixelface.data.masks import label_to_color
from pixelface.networks.text_encoder import TextEncoder, build_custom_clip, custom_arch

SIZE = 16
HAIR = {"black": (20, 20, 20), "blond": (230, 200, 90), "red": (200, 40, 30)}
TINY = ["TEXT.MODEL=custom", "TEXT.EMBEDDING_DIM=64", "TEXT.SENTENCE_DIM=32", "TEXT.CUSTOM.EMBED_DIM=32",
        f"TEXT.CUSTOM.IMAGE_SIZE={SIZE}", "TEXT.CUSTOM.VISION_LAYERS=1", "TEXT.CUSTOM.VISION_WIDTH=64",
        "TEXT.CUSTOM.VISION_PATCH=8", "TEXT.CUSTOM.TEXT_LAYERS=1", "TEXT.CUSTOM.TEXT_WIDTH=64",
        "TEXT.CUSTOM.TEXT_HEADS=2", "TEXT.CUSTOM.CONTEXT_LENGTH=32", "TEXT.PRETRAIN_EPOCHS=1",
        f"DATA.IMAGE_SIZE={SIZE}", "DATA.NAME=fake"]


def write_fake_dataset(root, n_train=12, n_test=6):
    """MMCelebA layout: 10 consecutive captions per image id, JPEG faces, palette-colour PNG masks."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    index = {}
    for split, ids in (("train", range(n_train)), ("test", range(n_train, n_train + n_test))):
        entry = {"filenames": [], "keynames": [], "captions": []}
        for image_id in ids:
            hair = list(HAIR)[image_id % len(HAIR)]
            pixels = np.clip(rng.normal(HAIR[hair], 20, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "images" / f"{image_id}.jpg")
            labels = np.zeros((SIZE, SIZE), np.uint8)
            labels[4:12, 4:12] = 1  # skin
            Image.fromarray(label_to_color(labels)).save(root / "masks" / f"{image_id}.png")
            for slot in range(10):
                entry["filenames"].append(str(image_id))
                entry["keynames"].append(len(entry["keynames"]))
                entry["captions"].append(f"The person has {hair} hair. Caption {slot} of face {image_id}.")
        index[split] = entry
    (root / "dataset2.json").write_text(json.dumps(index))
    return root


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    return write_fake_dataset(tmp_path_factory.mktemp("fake"))


def fake_cfg(root, *extra):
    return load_config(None, TINY + [f"DATA.ROOT={root}", "SEED=5"] + list(extra))


def test_round_trip_loads_by_path_and_reproduces_the_trained_model(fake_root, tmp_path):
    cfg = fake_cfg(fake_root)
    out = tmp_path / "clip.pt"
    lines = []
    clip, metrics = pretrain_clip(cfg, out, batch_size=4, log=lines.append)
    assert out.is_file() and any("top1" in line for line in lines)
    assert metrics["gallery"] == 6 and 0 <= metrics["top1"] <= metrics["top5"] <= 1

    stored = torch.load(out, weights_only=True)
    assert stored["metrics"] == metrics and stored["train"]["epochs"] == 1

    # training moved the weights away from the same seeded initialisation
    untrained = TextEncoder.from_config(fake_cfg(fake_root, "TEXT.PRETRAINED=", "SEED=5"))
    assert not torch.allclose(untrained.clip.token_embedding.weight, clip.token_embedding.weight)

    encoder = TextEncoder.from_config(fake_cfg(fake_root, f"TEXT.PRETRAINED={out}"))
    test_set = FaceDataset(cfg, "test", train=False)
    captions = [test_set.caption(i) for i in range(len(test_set))]
    tokens = encoder.tokenize(captions)
    assert torch.allclose(encoder.encode(captions).sentence, clip.encode_text(tokens), atol=1e-5)
    # the encoder's normalize=True image path is the one the model was trained with
    images = torch.stack([test_set[i]["image"] for i in range(len(test_set))])
    trained_input = clip_input(load_images(test_set, SIZE))
    assert torch.allclose(encoder.encode_image(images, normalize=True), clip.encode_image(trained_input), atol=1e-5)
    # the stored retrieval figures are what the loaded encoder scores on the test split
    again = retrieval_metrics(encoder.clip, load_images(test_set, SIZE), CaptionTokens(32)(captions))
    assert again == pytest.approx(metrics)


def test_refuses_to_overwrite_without_force(fake_root, tmp_path):
    out = tmp_path / "clip.pt"
    out.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="--force"):
        pretrain_clip(fake_cfg(fake_root), out, log=lambda line: None)
    assert out.read_bytes() == b"keep me"


def load_script():
    spec = importlib.util.spec_from_file_location("pretrain_clip_script", REPO_ROOT / "scripts/pretrain_clip.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_writes_where_the_config_points_and_never_overwrites(fake_root, tmp_path, capsys):
    out = tmp_path / "models" / "clip.pt"
    config = tmp_path / "fake.yml"
    config.write_text(yaml.safe_dump({"TEXT": {"PRETRAINED": str(out)}}))
    script = load_script()
    overrides = [x for item in TINY + [f"DATA.ROOT={fake_root}"] for x in ("--set", item)]
    assert script.main(["--cfg", str(config), "--batch", "6"] + overrides) == 0
    assert "top-1" in capsys.readouterr().out and out.is_file()
    written = out.read_bytes()
    assert script.main(["--cfg", str(config)] + overrides) == 2
    assert "--force" in capsys.readouterr().err and out.read_bytes() == written


class _Captions:
    """The part of FaceDataset HardNegatives reads."""

    def __init__(self, per_image, words=30):
        self.per_image, self.words = per_image, words

    def __len__(self):
        return len(self.per_image)

    def captions(self, i):
        return self.per_image[i]


def test_hard_negatives_assert_only_what_no_caption_of_the_face_names():
    data = _Captions([["She has rosy cheeks.", "The woman wears lipstick, and heavy makeup."],
                      ["The man has black hair."],
                      ["She has rosy cheeks and pale skin.", "She wears lipstick and heavy makeup."]])
    negatives = HardNegatives(data)
    assert negatives.sentences == [["she has pale skin"],
                                   ["he has rosy cheeks", "he has pale skin", "he wears lipstick",
                                    "he wears heavy makeup"],
                                   []]
    made = negatives([0, 1, 2], ["the woman has brown hair", "the man has black hair", "she is smiling"],
                     torch.Generator().manual_seed(0))
    assert made[0] == "the woman has brown hair she has pale skin" and made[2] is None
    assert made[1].startswith("the man has black hair he ") and made[1].split(" he ", 1)[1] in (
        "has rosy cheeks", "has pale skin", "wears lipstick", "wears heavy makeup")
    long = " ".join(["word"] * 28)                     # 28 + 3 words would be cut back to the caption itself
    assert negatives([0], [long], torch.Generator().manual_seed(0)) == [None]


def test_hard_negatives_are_further_wrong_answers_for_the_images_only(fake_root):
    cfg = fake_cfg(fake_root)
    clip = build_custom_clip(custom_arch(cfg))
    tokens = CaptionTokens(32)
    images = torch.randn(3, 3, SIZE, SIZE)
    captions = tokens(["the person has red hair", "the person has black hair", "the person has blond hair"])
    negatives = tokens(["the person has red hair she wears lipstick"])
    plain = contrastive_loss(clip, images, captions)
    with_negatives = contrastive_loss(clip, images, captions, negatives)
    assert with_negatives > plain                       # one more wrong answer in each image's softmax
    assert torch.equal(contrastive_loss(clip, images, captions, negatives[:0]), plain)


def test_pretraining_with_hard_negatives_records_it(fake_root, tmp_path):
    cfg = fake_cfg(fake_root, "TEXT.PRETRAIN_HARD_NEGATIVES=true")
    pretrain_clip(cfg, tmp_path / "clip.pt", batch_size=4, log=lambda line: None)
    stored = torch.load(tmp_path / "clip.pt", weights_only=True)
    assert stored["train"]["hard_negatives"] is True
