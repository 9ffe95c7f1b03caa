"""The face parser: architecture, flips, learning its own training labels, saving/loading and the CLI."""
import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pixelface.core.config import load_config
from conftest import REPO_ROOT
from pixelface.data.masks import LABEL_ID, accuracy_from_confusion, confusion_matrix, label_to_color
from pixelface.evaluation.parser import (FaceParser, class_weights, evaluate_parser, fit_parser, flip_batch,
                                         label_frequencies, load_parser, train_parser)

SIZE = 16
# Each part gets its own colour, so the labels can be read off the image.
PART_COLOURS = {"background": (30, 30, 30), "skin": (220, 170, 140), "hair": (90, 50, 20), "l_eye": (40, 80, 200),
                "r_eye": (200, 60, 200), "u_lip": (200, 30, 40)}


def pooled_accuracy(pred, true) -> dict[str, float]:
    """{pixel_acc, miou} over every pixel of every image, as the mask metrics pool them."""
    return accuracy_from_confusion(confusion_matrix(pred, true))


def toy_faces(n: int, size: int = SIZE, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(images in [-1,1], labels): a skin square with hair above, two eyes and a lip at random offsets."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, size, size), np.int64)
    for i in range(n):
        top, left = rng.integers(1, size // 4, 2)
        labels[i, top:top + size // 2 + 2, left:left + size // 2 + 2] = LABEL_ID["skin"]
        labels[i, max(0, top - 2):top + 1, left:left + size // 2 + 2] = LABEL_ID["hair"]
        labels[i, top + 3, left + 2:left + 4] = LABEL_ID["l_eye"]
        labels[i, top + 3, left + 6:left + 8] = LABEL_ID["r_eye"]
        labels[i, top + 7, left + 3:left + 7] = LABEL_ID["u_lip"]
    palette = np.zeros((19, 3), np.float32)
    for name, colour in PART_COLOURS.items():
        palette[LABEL_ID[name]] = colour
    pixels = palette[labels] + rng.normal(0, 8, labels.shape + (3,))
    images = torch.from_numpy(np.clip(pixels, 0, 255) / 127.5 - 1).float().permute(0, 3, 1, 2)
    return images, torch.from_numpy(labels)


def write_toy_dataset(root, n_train=16, n_test=8):
    """The toy faces in our dataset layout (JPEG images, palette PNG masks, dataset2.json)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    images, labels = toy_faces(n_train + n_test)
    index = {}
    for split, ids in (("train", range(n_train)), ("test", range(n_train, n_train + n_test))):
        index[split] = {"filenames": [], "keynames": [], "captions": []}
        for i in ids:
            pixels = ((images[i].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
            Image.fromarray(pixels).save(root / "images" / f"{i}.jpg", quality=95)
            Image.fromarray(label_to_color(labels[i].numpy().astype(np.uint8))).save(root / "masks" / f"{i}.png")
            index[split]["filenames"] += [str(i)] * 10
            index[split]["keynames"] += list(range(10))
            index[split]["captions"] += [f"face number {i}"] * 10
    (root / "dataset2.json").write_text(json.dumps(index))
    return root


def toy_cfg(root):
    return load_config(None, [f"DATA.ROOT={root}", "DATA.NAME=toy", f"DATA.IMAGE_SIZE={SIZE}", "DATA.NUM_WORKERS=0",
                              "SEED=1"])


def quiet(line):
    pass


# ------------------------------------------------------------------------------------------------ the network
def test_default_parser_is_compact_and_keeps_resolution():
    parser = FaceParser()
    assert 100_000 < sum(p.numel() for p in parser.parameters()) < 1_000_000
    assert parser(torch.zeros(2, 3, 32, 32)).shape == (2, 19, 32, 32)
    with pytest.raises(ValueError, match="divisible by 8"):
        parser(torch.zeros(1, 3, 30, 30))


def test_predict_parses_any_size_at_the_training_resolution():
    parser = FaceParser(width=4, image_size=16)
    labels = parser.predict(torch.zeros(3, 3, 40, 40))
    assert labels.shape == (3, 40, 40) and labels.dtype == torch.int64


def test_flip_mirrors_and_swaps_left_and_right_parts():
    labels = torch.tensor([[[LABEL_ID["l_eye"], LABEL_ID["skin"], LABEL_ID["r_brow"]]]])
    images = torch.arange(9.0).reshape(1, 3, 1, 3)
    flipped_images, flipped = flip_batch(images, labels)
    assert flipped.tolist() == [[[LABEL_ID["l_brow"], LABEL_ID["skin"], LABEL_ID["r_eye"]]]]
    assert torch.equal(flipped_images, images.flip(-1))


# ------------------------------------------------------------------------------------------------ learning
def test_class_weights_favour_rare_classes_and_keep_the_average_pixel_at_one():
    weights = class_weights(torch.tensor([90, 10, 0]))
    assert weights[1] / weights[0] == pytest.approx(3.0) and weights[2] == 0
    assert 0.9 * weights[0] + 0.1 * weights[1] == pytest.approx(1.0)


def test_parser_learns_its_own_training_labels():
    torch.manual_seed(0)
    images, labels = toy_faces(32)
    parser = FaceParser(width=8, depth=1, image_size=SIZE)
    before = evaluate_parser(parser, [(images, labels)])

    def batches(epoch):
        for start in range(0, 32, 8):
            yield images[start:start + 8].clone(), labels[start:start + 8].clone()
    fit_parser(parser, batches, steps_per_epoch=4, epochs=40, lr=1e-2, generator=torch.Generator().manual_seed(0),
               log=quiet)
    after = pooled_accuracy(parser.predict(images), labels)
    assert after["pixel_acc"] > 0.99 and after["miou"] > 0.9
    assert after["miou"] > before["miou"] + 0.5


# ------------------------------------------------------------------------------------------------ files
@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toy"))


def test_label_frequencies_count_pixels_of_sampled_items(toy_root):
    from pixelface.data.datasets import FaceDataset
    dataset = FaceDataset(toy_cfg(toy_root), "train", train=False)
    everything = label_frequencies(dataset, len(dataset), seed=0)
    assert everything.sum() == len(dataset) * SIZE * SIZE
    assert everything[LABEL_ID["skin"]] > everything[LABEL_ID["l_eye"]] > 0 and everything[LABEL_ID["hat"]] == 0
    assert label_frequencies(dataset, 3, seed=0).sum() == 3 * SIZE * SIZE


def test_train_parser_saves_a_parser_that_loads_back(toy_root, tmp_path):
    out = tmp_path / "parser.pt"
    metrics = train_parser(toy_cfg(toy_root), out, epochs=2, batch_size=8, width=4, log=quiet)
    assert 0 <= metrics["test_pixel_acc"] <= 1 and 0 <= metrics["test_miou"] <= 1
    stored = torch.load(out, weights_only=True)
    assert stored["format"] == "pixelface-parser" and stored["metrics"] == metrics
    parser = load_parser(out)
    assert parser.arch == {"num_classes": 19, "width": 4, "depth": 3, "image_size": SIZE} and not parser.training
    images, _ = toy_faces(2, seed=5)
    assert torch.equal(parser.predict(images), load_parser(out).predict(images))


def test_train_parser_keeps_an_existing_file(toy_root, tmp_path):
    out = tmp_path / "parser.pt"
    out.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="--force"):
        train_parser(toy_cfg(toy_root), out, epochs=1, batch_size=8, width=4, log=quiet)
    assert out.read_bytes() == b"keep me"


def test_load_parser_names_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_parser.py"):
        load_parser(tmp_path / "absent.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a face parser"):
        load_parser(tmp_path / "other.pt")


def test_cli_trains_reports_and_refuses_to_overwrite(toy_root, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("train_parser_script", REPO_ROOT / "scripts/train_parser.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "parser.pt"
    overrides = [x for item in (f"DATA.ROOT={toy_root}", f"DATA.IMAGE_SIZE={SIZE}", "DATA.NUM_WORKERS=0")
                 for x in ("--set", item)]
    assert script.main(["--out", str(out), "--epochs", "1", "--batch", "8", "--width", "4"] + overrides) == 0
    assert "pixel accuracy" in capsys.readouterr().out
    written = out.read_bytes()
    assert script.main(["--out", str(out), "--epochs", "1"] + overrides) == 2
    assert "--force" in capsys.readouterr().err and out.read_bytes() == written
    assert script.main(["--out", str(tmp_path / "new.pt"), "--set", "DATA.ROOT=/nonexistent"]) == 2
    assert "DATA.ROOT" in capsys.readouterr().err
