import pytest

from pixelface.core import config
from pixelface.core.config import (ConfigError, describe, load_config, project_home, require_path, resolve_path,
                                   to_yaml, from_plain)
from conftest import REPO_ROOT


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


@pytest.mark.parametrize("key, value, partner, partner_off", [
    ("TEXT.ATTEND_EOT", "true", "TEXT.FIXED_LENGTH", "false"),
    ("MODEL.MASK_POINT_CHANNELS", "4", "MODEL.MASK_KERNEL", "1"),
    ("MODEL.UNFOLD_BLUR_FINAL", "false", "MODEL.UNFOLD_BLUR", "false"),
    ("MODEL.PIXEL_STRIPES_CLASSES", "[hair]", "MODEL.PIXEL_STRIPES", "false"),
    ("TRAIN.LR_RAMPDOWN_FINAL", "0.5", "TRAIN.LR_RAMPDOWN_KIMG", "0"),
    ("TRAIN.RECON_FADE_KIMG", "3", "TRAIN.RECON_WEIGHT", "0"),
    ("TRAIN.RECON_NAMED_ZONES", "true", "TRAIN.RECON_NAMED_WEIGHT", "0"),
    ("TRAIN.RECON_ZONE_NAMED_BOOST", "9", "TRAIN.RECON_ZONE_CHROMA_WEIGHT", "0"),
    ("TRAIN.RECON_ZONE_NAMED_SHARE", "0.6", "TRAIN.RECON_ZONE_CHROMA_WEIGHT", "0"),
    ("TRAIN.MODE_SEEKING_CAP", "2", "TRAIN.MODE_SEEKING_WEIGHT", "0")])
def test_a_key_whose_partner_is_off_is_refused_unless_a_later_layer_turned_the_partner_off(tmp_path, key, value,
                                                                                           partner, partner_off):
    """Every PARTNERS row: the key set while its partner is off (in the same file, or with the partner at its
    default) changes nothing, so it is an error naming both keys; the partner switched off by --set after the file
    set both (an ablation) parks the key instead."""
    assert (key, partner) in [(k, p) for k, p, *_ in config.PARTNERS]
    section, name = key.split(".")
    partner_name = partner.split(".")[1]
    alone, both = tmp_path / "alone.yml", tmp_path / "both.yml"
    alone.write_text(f"{section}:\n  {name}: {value}\n  {partner_name}: {partner_off}\n")
    with pytest.raises(ConfigError, match=rf"alone.yml: {key} = .* acts only with {partner} .*: set {partner} too, "
                                          rf"or leave {key} at its default"):
        load_config(alone)
    with pytest.raises(ConfigError, match=rf"--set: {key} = .* acts only with {partner}"):
        load_config(None, [f"{key}={value}", f"{partner}={partner_off}"])
    both.write_text(f"{section}:\n  {name}: {value}\n")
    parked = load_config(both, [f"{partner}={partner_off}"])
    assert parked[section][name] != config.default_config()[section][name]


def test_partners_cover_every_key_documented_as_acting_with_another():
    documented = {k for k in config._flatten(config.default_config())
                  if config._leaf(k)[0][1].startswith("with ")}
    assert documented <= {k for k, *_ in config.PARTNERS}


def test_alternatives_are_refused_together():
    with pytest.raises(ConfigError, match=r"--set: TRAIN.RECON_ZONE_NAMED_BOOST = 3.0 and "
                                          r"TRAIN.RECON_ZONE_NAMED_SHARE = 0.6: expected only one of them set"):
        load_config(None, ["TRAIN.RECON_ZONE_CHROMA_WEIGHT=1", "TRAIN.RECON_ZONE_NAMED_BOOST=3",
                           "TRAIN.RECON_ZONE_NAMED_SHARE=0.6"])
    cfg = load_config("synthface", ["TRAIN.RECON_ZONE_NAMED_BOOST=0", "TRAIN.RECON_ZONE_NAMED_SHARE=0.6"])
    assert cfg.TRAIN.RECON_ZONE_NAMED_SHARE == 0.6


def test_missing_required_path_names_key(tmp_path):
    f = tmp_path / "c.yml"
    f.write_text("DATA:\n  ROOT: /nonexistent/dataset\n")
    cfg = load_config(f)
    with pytest.raises(ConfigError, match=r"c.yml: DATA.ROOT = '/nonexistent/dataset': dataset folder does not exist"):
        require_path(cfg, "DATA.ROOT", "dataset folder")


def test_relative_paths_resolve_against_repo_root():
    cfg = load_config(None, ["DATA.ROOT=data/x"])
    assert project_home() == config.checkout_root() == REPO_ROOT
    assert resolve_path(cfg, "DATA.ROOT") == REPO_ROOT / "data" / "x"


def test_pixelface_home_moves_every_relative_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELFACE_HOME", str(tmp_path / "home"))
    cfg = load_config("synthface")
    assert project_home() == tmp_path / "home"
    assert resolve_path(cfg, "DATA.ROOT") == tmp_path / "home" / "data" / "synthface"
    assert resolve_path(cfg, "TEXT.PRETRAINED") == tmp_path / "home" / "models" / "clip_synthface_p8.pt"


def test_bare_config_names_find_the_checkout_configs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)     # names, not paths: the working directory plays no part
    for name in ("smoke", "smoke.yml"):
        cfg = load_config(name)
        assert cfg._source == str(REPO_ROOT / "cfg" / "smoke.yml")
        assert cfg == load_config(REPO_ROOT / "cfg" / "smoke.yml")
    (tmp_path / "smoke.yml").write_text("CONFIG_NAME: mine\n")
    assert load_config("smoke.yml").CONFIG_NAME == "mine"     # an existing file comes first
    with pytest.raises(ConfigError, match=r"^config 'smok' is neither a file nor a known config name "
                                          r"\(known: mmceleba, smoke, synthface"):
        load_config("smok")
    with pytest.raises(ConfigError, match=r"config file cfg/smok.yml does not exist"):
        load_config("cfg/smok.yml")                             # a path stays a path


def test_an_installed_copy_uses_its_packaged_configs(tmp_path, monkeypatch):
    packaged = tmp_path / "configs"
    packaged.mkdir()
    (packaged / "tiny.yml").write_text("CONFIG_NAME: tiny\n")
    monkeypatch.setattr(config, "checkout_root", lambda: None)
    monkeypatch.setattr(config, "PACKAGED_CONFIGS", packaged)
    monkeypatch.chdir(tmp_path)
    assert load_config("tiny").CONFIG_NAME == "tiny"
    assert project_home() == tmp_path                           # no checkout, no PIXELFACE_HOME: where one stands
    with pytest.raises(ConfigError, match=r"\(known: tiny\)$"):
        load_config("smoke")


def test_yaml_round_trip_and_every_key_documented():
    cfg = load_config(None, ["TRAIN.BATCH_SIZE=3"])
    import yaml
    again = from_plain(yaml.safe_load(to_yaml(cfg)))
    assert again == {k: v for k, v in cfg.items() if not k.startswith("_")}
    lines = describe()
    assert all("  # " in line and line.split("  # ")[1].strip() for line in lines)


def test_every_key_is_read_by_the_code_and_set_in_a_cfg_file_or_a_test():
    """No dead switches: each key's name is read somewhere in the package outside config.py, and each key
    appears in some cfg/*.yml or, by its dotted name, in a test."""
    import re
    import yaml
    from conftest import REPO_ROOT

    def flat(tree, prefix=""):
        for key, value in tree.items():
            yield from flat(value, f"{prefix}{key}.") if isinstance(value, dict) else [prefix + key]
    keys = list(flat(config.default_config()))
    package = REPO_ROOT / "code" / "pixelface"
    code = "\n".join(p.read_text() for p in package.rglob("*.py") if p.name != "config.py")
    tests = "\n".join(p.read_text() for p in (REPO_ROOT / "tests").glob("*.py"))
    in_cfgs = {k for p in (REPO_ROOT / "cfg").glob("*.yml") for k in flat(yaml.safe_load(p.read_text()) or {})}
    unread = [k for k in keys if not re.search(rf"(\.|\[\"|\"){k.split('.')[-1]}\b", code)]
    unset = [k for k in keys if k not in in_cfgs and k not in tests]
    assert len(keys) > 80
    assert not unread, f"config keys no module reads: {unread}"
    assert not unset, f"config keys in no cfg file and no test: {unset}"


def test_checkpoints_written_before_a_switch_was_retired_still_load():
    stored = config.to_plain(config.default_config())
    stored["MODEL"]["POSFOLD_WIDTH"] = 0             # what every earlier checkpoint holds
    assert config.from_plain(stored).MODEL.SIZE == 256
    stored["MODEL"]["POSFOLD_WIDTH"] = 16
    with pytest.raises(config.ConfigError, match="MODEL.POSFOLD_WIDTH = 16"):
        config.from_plain(stored)
