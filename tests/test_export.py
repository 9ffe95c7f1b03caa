"""scripts/export_model.py: G_ema as safetensors + config JSON, loadable wherever a checkpoint is."""
import json

import pytest
import safetensors.torch
import torch
from PIL import Image

from pixelface.data.masks import label_to_color
from pixelface.data.synthface import make_face
from pixelface.networks.checkpoint import EXPORT_CONFIG, EXPORT_WEIGHTS, checkpoint_hash, load_generator
from conftest import load_script


@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "model"
    assert load_script("export_model").main(["--ckpt", str(ckpt), "--out", str(out)]) == 0
    return out


def test_export_holds_g_ema_and_config_without_pickles(ckpt, exported):
    assert sorted(p.name for p in exported.iterdir()) == sorted([EXPORT_WEIGHTS, EXPORT_CONFIG])
    tensors = safetensors.torch.load_file(exported / EXPORT_WEIGHTS)
    g, cfg = load_generator(ckpt)
    assert tensors.keys() == g.state_dict().keys()
    assert all(torch.equal(tensors[k], v) for k, v in g.state_dict().items())
    record = json.loads((exported / EXPORT_CONFIG).read_text())
    assert record["format"] == "pixelface-model" and record["source"]["file"] == ckpt.name
    assert record["config"]["MODEL"]["SIZE"] == cfg.MODEL.SIZE
    assert checkpoint_hash(exported) != checkpoint_hash(ckpt)   # each names the file that holds the weights


def test_sample_script_gives_the_same_images_from_the_export(ckpt, exported, tmp_path):
    _, _, labels, _ = make_face(0, 3, 64)
    Image.fromarray(label_to_color(labels)).save(tmp_path / "mask.png")
    sample = load_script("sample")
    for source, out in ((ckpt, "a"), (exported, "b")):
        args = ["--ckpt", source, "--mask", tmp_path / "mask.png", "--text", "she has gray hair", "--seeds", "0-1",
                "--out", tmp_path / out]
        assert sample.main([str(a) for a in args]) == 0
    for name in ("000_seed0.png", "000_seed1.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_export_keeps_an_earlier_export_unless_forced(ckpt, exported, capsys):
    before = (exported / EXPORT_WEIGHTS).read_bytes()
    script = load_script("export_model")
    assert script.main(["--ckpt", str(ckpt), "--out", str(exported)]) == 2
    assert "already exist" in capsys.readouterr().err
    assert (exported / EXPORT_WEIGHTS).read_bytes() == before
    assert script.main(["--ckpt", str(ckpt), "--out", str(exported), "--force"]) == 0


def test_damaged_export_folders_are_one_clear_error(exported, tmp_path):
    with pytest.raises(FileNotFoundError, match="is not an exported model: pixelface.json is missing"):
        load_generator(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / EXPORT_WEIGHTS).write_bytes((exported / EXPORT_WEIGHTS).read_bytes())
    (broken / EXPORT_CONFIG).write_text(json.dumps({"format": "something-else", "config": {}}))
    with pytest.raises(ValueError, match="not a pixelface-model config"):
        load_generator(broken)
    (broken / EXPORT_CONFIG).write_text((exported / EXPORT_CONFIG).read_text())
    (broken / EXPORT_WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_generator(broken)
