import pytest

from pixelface.config import ConfigError, REPO_ROOT, describe, load_config, require_path, to_yaml, from_plain


def test_defaults_and_overrides_are_typed(tmp_path):
    f = tmp_path / "x.yml"
    f.write_text("TRAIN:\n  BATCH_SIZE: 8\n  LR_G: 1\nTEXT:\n  MODEL: custom\n")
    cfg = load_config(f, ["TRAIN.R1_GAMMA=2", "DATA.ROOT=0", "MODEL.GCMF_GATE=true"])
    assert cfg.TRAIN.BATCH_SIZE == 8
    assert cfg.TRAIN.LR_G == 1.0 and isinstance(cfg.TRAIN.LR_G, float)
    assert cfg.TRAIN.R1_GAMMA == 2.0
    assert cfg.DATA.ROOT == "0"          # strings stay verbatim
    assert cfg.MODEL.GCMF_GATE is True
    assert cfg.TEXT.MODEL == "custom"
    assert cfg.SEED == 3201               # untouched default


def test_unknown_key_names_key_and_file(tmp_path):
    f = tmp_path / "bad.yml"
    f.write_text("TRAIN:\n  BATCHSIZE: 8\n")
    with pytest.raises(ConfigError, match=r"bad.yml: unknown key TRAIN.BATCHSIZE \(did you mean TRAIN.BATCH_SIZE\?\)"):
        load_config(f)


def test_wrong_type_names_key_and_file(tmp_path):
    f = tmp_path / "bad.yml"
    f.write_text("TRAIN:\n  BATCH_SIZE: four\n")
    with pytest.raises(ConfigError, match=r"bad.yml: TRAIN.BATCH_SIZE = 'four' has type str, expected int"):
        load_config(f)
    with pytest.raises(ConfigError, match=r"--set MODEL.GCMF_GATE=3: MODEL.GCMF_GATE = 3 has type int, expected bool"):
        load_config(None, ["MODEL.GCMF_GATE=3"])


def test_section_cannot_be_set_to_a_value():
    with pytest.raises(ConfigError, match="unknown key TRAIN"):
        load_config(None, ["TRAIN=3"])


def test_missing_required_path_names_key(tmp_path):
    f = tmp_path / "c.yml"
    f.write_text("DATA:\n  ROOT: /nonexistent/dataset\n")
    cfg = load_config(f)
    with pytest.raises(ConfigError, match=r"c.yml: DATA.ROOT = '/nonexistent/dataset': dataset folder does not exist"):
        require_path(cfg, "DATA.ROOT", "dataset folder")


def test_relative_paths_resolve_against_repo_root():
    cfg = load_config(None, ["DATA.ROOT=data/x"])
    from pixelface.config import resolve_path
    assert resolve_path(cfg, "DATA.ROOT") == REPO_ROOT / "data" / "x"


def test_yaml_round_trip_and_every_key_documented():
    cfg = load_config(None, ["TRAIN.BATCH_SIZE=3"])
    import yaml
    again = from_plain(yaml.safe_load(to_yaml(cfg)))
    assert again == {k: v for k, v in cfg.items() if not k.startswith("_")}
    lines = describe()
    assert all("  # " in line and line.split("  # ")[1].strip() for line in lines)
