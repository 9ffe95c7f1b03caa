"""evaluate_generator and scripts/evaluate.py with a tiny random generator and CLIP on a tiny synthface."""
import importlib.util
import json

import pytest
from PIL import Image
import torch
import yaml

from pixelface.core.config import load_config, to_yaml
from pixelface.evaluation import extractors, registry
from pixelface.networks.checkpoint import FORMAT, atomic_save
from conftest import REPO_ROOT
from pixelface.data.datasets import FaceDataset
from pixelface.data.synthface import write_dataset
from pixelface.evaluation.context import generate_images
from pixelface.evaluation.extractors import MissingWeightsError
from pixelface.evaluation.metrics import evaluate_generator
from pixelface.evaluation.parser import FaceParser, save_parser
from pixelface.networks.generator import Generator
from pixelface.networks.text_encoder import TextEncoder

TINY = ["TEXT.MODEL=custom", "TEXT.PRETRAINED=", "TEXT.EMBEDDING_DIM=64", "TEXT.SENTENCE_DIM=32",
        "TEXT.CUSTOM.EMBED_DIM=32", "TEXT.CUSTOM.IMAGE_SIZE=16", "TEXT.CUSTOM.VISION_LAYERS=1",
        "TEXT.CUSTOM.VISION_WIDTH=64", "TEXT.CUSTOM.VISION_PATCH=8", "TEXT.CUSTOM.TEXT_LAYERS=1",
        "TEXT.CUSTOM.TEXT_WIDTH=64", "TEXT.CUSTOM.TEXT_HEADS=2", "TEXT.CUSTOM.CONTEXT_LENGTH=32",
        "TEXT.MAX_WORDS=16", "MODEL.SIZE=64", "MODEL.STYLE_DIM=32", "MODEL.N_MLP=2", "MODEL.CHANNEL_MAX=32",
        "MODEL.MASK_DIM=16", "DATA.IMAGE_SIZE=64", "DATA.NAME=synthtiny", "DATA.NUM_WORKERS=0"]


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch, tmp_path):
    """No download can happen, and no Inception weights a developer keeps in models/ or the hub are seen."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args}")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(extractors, "inception_weight_paths", lambda path=None: [tmp_path / "no-inception.pth"])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(cfg, g_ema, text encoder, parser path) on a 15-face synthface (12 train, 3 test images)."""
    root = write_dataset(tmp_path_factory.mktemp("synth") / "synthtiny", num=15, size=64, seed=0, workers=1)
    cfg = load_config(None, TINY + [f"DATA.ROOT={root}"])
    torch.manual_seed(0)
    g_ema = Generator.from_config(cfg).eval()
    parser_path = root.parent / "parser.pt"
    save_parser(FaceParser(width=4, image_size=64), parser_path, {}, {"name": "synthtiny", "root": str(root)})
    return cfg, g_ema, TextEncoder.from_config(cfg), parser_path


def run(setup, tmp_path, **kwargs):
    cfg, g_ema, text_encoder, parser_path = setup
    options = dict(num=6, seeds=[0, 1], batch_size=3, parser_path=parser_path, cache_dir=tmp_path / "cache")
    return evaluate_generator(g_ema, cfg, text_encoder, **{**options, **kwargs})


def test_every_available_metric_is_computed_and_the_rest_say_why_not(setup, tmp_path):
    report = run(setup, tmp_path)
    values = report["metrics"]
    for key in ("fid_clip", "clip_score", "r_precision", "mask_pixel_acc", "mask_miou", "diversity", "fid_parser",
                "sharpness_ratio", "seed_spread"):
        assert key in values and isinstance(values[key], float), key
    assert values["fid_clip"] >= 0 and -100 <= values["clip_score"] <= 100
    assert 0 <= values["r_precision"] <= 1 and 0 <= values["mask_pixel_acc"] <= 1 and values["diversity"] > 0
    assert set(report["skipped"]) == {"fid", "kid"} and "Inception" in report["skipped"]["fid"]
    # Six samples cycle through the three test faces, each with its fixed caption, recorded.
    test = FaceDataset(setup[0], "test", train=False)
    assert [(s["id"], s["caption"]) for s in report["samples"]] == \
        [(test.ids[k % 3], test.caption(k % 3)) for k in range(6)]
    assert report["settings"]["diversity_space"] == "clip-cosine"
    assert report["settings"]["num_real"] == 3


def test_images_depend_on_seed_and_sample_number_not_on_the_batch(setup):
    cfg, g_ema, text_encoder, _ = setup
    items = [FaceDataset(cfg, "test", train=False)[i] for i in range(3)]
    batch = {"caption": [it["caption"] for it in items], "mask": torch.stack([it["mask"] for it in items]),
             "labels": torch.stack([it["labels"] for it in items])}
    together = generate_images(g_ema, cfg, text_encoder, batch, [0, 1, 2], seed=7)
    alone = generate_images(g_ema, cfg, text_encoder, {k: v[1:2] for k, v in batch.items()}, [1], seed=7)
    torch.testing.assert_close(together[1:2], alone, atol=1e-5, rtol=1e-4)
    other_seed = generate_images(g_ema, cfg, text_encoder, {k: v[1:2] for k, v in batch.items()}, [1], seed=8)
    assert (other_seed - alone).abs().max() > 1e-3


def test_real_statistics_are_cached_and_reused(setup, tmp_path, monkeypatch):
    seen = []
    original = extractors.ClipImageExtractor.__call__
    monkeypatch.setattr(extractors.ClipImageExtractor, "__call__",
                        lambda self, images: seen.append(images.shape[0]) or original(self, images))
    first = run(setup, tmp_path, metrics=["fid_clip"])
    assert sum(seen) == 6 + 3  # fakes, then the three real test images
    cached = list((tmp_path / "cache").glob("synthtiny-test-clip-custom-*-64px-n3-*.npz"))
    assert len(cached) == 1
    seen.clear()
    second = run(setup, tmp_path, metrics=["fid_clip"])
    assert sum(seen) == 6  # only the fakes
    assert second["metrics"]["fid_clip"] == pytest.approx(first["metrics"]["fid_clip"], rel=1e-6)


def test_missing_inception_weights_stop_fid_with_a_clear_error_but_not_fid_clip(setup, tmp_path):
    with pytest.raises(MissingWeightsError, match="Inception"):
        run(setup, tmp_path, metrics=["fid_clip", "fid"])
    assert "fid_clip" in run(setup, tmp_path, metrics=["fid_clip"])["metrics"]


def test_named_metrics_that_cannot_run_are_errors(setup, tmp_path):
    with pytest.raises(ValueError, match="unknown metric.*available: fid"):
        run(setup, tmp_path, metrics=["fidd"])
    with pytest.raises(ValueError, match="at least two"):
        run(setup, tmp_path, metrics=["diversity"], seeds=[0])
    with pytest.raises(FileNotFoundError, match="train_parser.py"):
        run(setup, tmp_path, metrics=["mask_acc"], parser_path=tmp_path / "absent.pt")


def test_attribute_scorer_reads_real_synthface_and_judges_fakes(setup, tmp_path):
    report = run(setup, tmp_path, split="train", num=12, metrics=["attr_acc"])
    values, settings = report["metrics"], report["settings"]
    assert sum(settings["attr_judged"].values()) >= 12
    assert values["attr_acc_real"] >= 0.9  # the scorer reads the real faces' stated colours back
    assert 0 <= values["attr_acc"] <= 1
    assert all(key.partition("/")[2] in settings["attr_judged"] for key in values if key.startswith("attr_acc/"))
    colours = [key for key in values if key.startswith("attr_acc/hair_color/")]
    assert colours, "hair colour is broken down per asked colour"
    # the per-colour shares are a partition of the overall hair-colour share
    counts = {key: settings["attr_judged"][key.partition("/")[2]] for key in colours}
    assert sum(counts.values()) == settings["attr_judged"]["hair_color"]
    assert sum(values[k] * counts[k] for k in colours) / sum(counts.values()) == \
        pytest.approx(values["attr_acc/hair_color"])


class IgnoresZ(torch.nn.Module):
    """The generator with z and noise zeroed: every seed gives the same image."""

    def __init__(self, g):
        super().__init__()
        self.g, self.style_dim = g, g.style_dim

    def make_noise(self, *args, **kwargs):
        return self.g.make_noise(*args, **kwargs)

    def forward(self, masks, words, styles, noise=None, **kwargs):
        return self.g(masks, words, [torch.zeros_like(styles[0])], noise=[torch.zeros_like(n) for n in noise], **kwargs)


def test_seed_spread_is_zero_when_z_is_ignored_and_positive_when_it_is_not(setup, tmp_path):
    cfg, g_ema, text_encoder, parser_path = setup
    report = run(setup, tmp_path, split="train", num=4, metrics=["seed_spread"])
    values = report["metrics"]
    assert values["seed_spread"] > 0 and values["seed_spread_real/background"] > 0
    assert values["seed_spread"] == pytest.approx(
        (values["seed_spread/background"] + values["seed_spread/cloth"]) / 2)
    assert report["settings"]["seed_spread_seeds"] == registry.SPREAD_SEEDS
    still = run((cfg, IgnoresZ(g_ema).eval(), text_encoder, parser_path), tmp_path, split="train", num=4,
                metrics=["seed_spread"])["metrics"]
    assert still["seed_spread"] == pytest.approx(0.0, abs=1e-6)


def test_sharpness_and_parser_distance_compare_fakes_with_the_real_faces(setup, tmp_path):
    values = run(setup, tmp_path, split="train", num=8, metrics=["sharpness", "fid_parser"])["metrics"]
    assert values["sharpness_real"] > 0
    assert values["sharpness_ratio"] == pytest.approx(values["sharpness"] / values["sharpness_real"])
    # the whole face's ratio is the edges' and the interiors' weighed by the data's energy in each
    edges, inside, share = (values[k] for k in ("sharpness_ratio/edges", "sharpness_ratio/interior",
                                                 "sharpness_real/edge_share"))
    assert 0 < share < 1 and values["sharpness_ratio"] == pytest.approx(share * edges + (1 - share) * inside)
    assert share > 0.8          # synthetic faces: flat regions, so most of their energy sits on the mask's edges
    assert values["fid_parser"] > 0


def test_unasked_attributes_are_counted_apart_from_the_stated_ones(setup, tmp_path):
    report = run(setup, tmp_path, split="train", num=12, metrics=["attr_acc"])
    unasked_real = report["settings"]["attr_unasked_real"]
    assert unasked_real and set(unasked_real) <= {"lipstick", "heavy_makeup", "rosy_cheeks", "pale_skin", "beard"}
    assert all(0 <= v <= 1 for v in unasked_real.values())
    assert {k.partition("/")[2] for k in report["metrics"] if k.startswith("attr_unasked/")} == set(unasked_real)


def test_texture_metric_reads_real_faces_and_fakes(setup, tmp_path):
    values = run(setup, tmp_path, split="train", num=8, metrics=["texture"])["metrics"]
    assert 0 < values["texture_std_real"] < 30     # synthface regions are nearly flat
    assert values["texture_ratio"] == pytest.approx(values["texture_std"] / values["texture_std_real"])


def load_script():
    spec = importlib.util.spec_from_file_location("evaluate_script", REPO_ROOT / "scripts/evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_compares_checkpoints_in_one_table_and_keeps_existing_reports(setup, tmp_path, capsys):
    cfg, g_ema, _, parser_path = setup
    ckpts = []
    for name in ("a.pt", "b.pt"):
        atomic_save({"format": FORMAT, "config": yaml.safe_load(to_yaml(cfg)), "G_ema": g_ema.state_dict()},
                    tmp_path / name)
        ckpts.append(str(tmp_path / name))
    out = tmp_path / "eval"
    args = ["--ckpt", *ckpts, "--num", "4", "--seeds", "0-1", "--metrics", "fid_clip,clip_score", "--batch", "2",
            "--device", "cpu", "--cache", str(tmp_path / "cache"), "--out", str(out)]
    assert load_script().main(args) == 0
    printed = capsys.readouterr().out
    assert printed == (out / "metrics.md").read_text()
    assert printed.splitlines()[0] == "| checkpoint | fid_clip | clip_score |" and len(printed.splitlines()) == 4
    reports = json.loads((out / "metrics.json").read_text())
    assert list(reports) == ckpts and reports[ckpts[0]]["metrics"] == reports[ckpts[1]]["metrics"]
    written = (out / "metrics.json").read_bytes()
    assert load_script().main(args) == 2
    assert "--force" in capsys.readouterr().err and (out / "metrics.json").read_bytes() == written
    assert load_script().main(args[:-2] + ["--metrics", "fid"]) == 2
    assert "Inception" in capsys.readouterr().err


def test_learning_curve_evaluates_each_checkpoint_once(setup, tmp_path, capsys):
    cfg, g_ema, _, parser_path = setup
    run = tmp_path / "run"
    for nimg in (4000, 8000):
        atomic_save({"format": FORMAT, "config": yaml.safe_load(to_yaml(cfg)), "G_ema": g_ema.state_dict(),
                     "progress": {"nimg": nimg}}, run / "checkpoints" / f"ckpt-{nimg:09d}.pt")
    spec = importlib.util.spec_from_file_location("learning_curve", REPO_ROOT / "scripts/learning_curve.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = [str(run), "--num", "4", "--metrics", "sharpness,fid_parser", "--parser", str(parser_path),
            "--cache", str(tmp_path / "cache")]
    assert script.main(args) == 0
    rows = [json.loads(line) for line in (run / "curve.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in rows] == [4.0, 8.0]
    assert all({"sharpness_ratio", "fid_parser"} <= set(r) for r in rows)
    assert rows[0]["sharpness_ratio"] == rows[1]["sharpness_ratio"]      # the same G twice
    assert script.main(args) == 0                                        # nothing new: nothing appended
    assert len((run / "curve.jsonl").read_text().splitlines()) == 2
    assert script.main([str(tmp_path / "empty")]) == 2
    assert "holds no ckpt-" in capsys.readouterr().err


def test_model_figures_draws_three_pictures_and_keeps_existing_ones(setup, tmp_path, capsys):
    cfg, g_ema, _, _ = setup
    ckpt = tmp_path / "model.pt"
    atomic_save({"format": FORMAT, "config": yaml.safe_load(to_yaml(cfg)), "G_ema": g_ema.state_dict()}, ckpt)
    spec = importlib.util.spec_from_file_location("model_figures", REPO_ROOT / "scripts/model_figures.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "figs" / "m"
    assert script.main(["--ckpt", str(ckpt), "--out", str(out)]) == 0
    pictures = [out.parent / f"m_{name}.png" for name in ("vs_data", "seeds", "attributes")]
    assert all(Image.open(p).size[0] > 300 for p in pictures)
    before = pictures[0].read_bytes()
    assert script.main(["--ckpt", str(ckpt), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and pictures[0].read_bytes() == before
