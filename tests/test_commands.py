"""The command-line front door: light parsers (no torch before the arguments parse), examples and defaults in
every --help, one launcher behind the console scripts, code/main.py and the scripts/ shells."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from pixelface.commands import launch, parsers

HEAVY = ("torch", "numpy", "PIL", "open_clip", "torchvision")


def test_parsing_loads_no_heavy_module():
    """--help and bad options are answered before torch, numpy or the networks load."""
    check = ("import sys; import pixelface.commands.launch as l; from pixelface.commands import parsers\n"
             "for name in l.COMMANDS: getattr(parsers, name)()\n"
             f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("name", sorted(launch.COMMANDS))
def test_every_help_shows_examples_and_defaults(name, capsys):
    with pytest.raises(SystemExit) as stop:
        launch.launch(name, ["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "pixelface-" in text
    if name not in ("export", "convert"):
        assert "(default: " in text


def test_parser_constants_match_the_library():
    from pixelface.data.masks import MASK_ORDERS
    from pixelface.editing.face_crop import ALIGN_MODES
    from pixelface.editing.manipulation import InversionSettings
    from pixelface.evaluation.registry import METRICS
    assert parsers.METRIC_NAMES == tuple(METRICS)
    assert parsers.INVERSION_STEPS == InversionSettings.steps
    assert parsers.MASK_ORDERS == MASK_ORDERS
    assert parsers.ALIGN_MODES == ALIGN_MODES
    assert set(launch.COMMANDS) == {n for n in dir(launch) if n in launch.COMMANDS}   # one function per command


def test_every_command_module_executes_parsed_arguments():
    import importlib
    for name, module in launch.COMMANDS.items():
        loaded = importlib.import_module(module)
        assert callable(loaded.execute) and callable(loaded.main), name


def test_bad_option_is_a_usage_error_before_anything_loads(capsys):
    with pytest.raises(SystemExit) as stop:
        launch.launch("sample", ["--ckpt", "x.pt", "--from-dataset", "test", "--out", "o"])   # no --ids
    assert stop.value.code == 2 and "--from-dataset needs --ids" in capsys.readouterr().err


def test_checkout_scripts_run_their_own_checkouts_code(tmp_path):
    """scripts/pixelface links to ../code/pixelface, so `python scripts/X.py` in a second checkout runs that
    checkout's package, not the one the environment has installed (as code/main.py does)."""
    other = tmp_path / "other"
    for name in ("code", "cfg", "scripts"):
        shutil.copytree(REPO_ROOT / name, other / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    assert (other / "scripts" / "pixelface").is_symlink()
    init = other / "code" / "pixelface" / "__init__.py"
    init.write_text(init.read_text() + "\nprint('the other checkout', flush=True)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIXELFACE_HOME")}
    for script in ("sample.py", "export_model.py"):
        done = subprocess.run([sys.executable, str(other / "scripts" / script), "--help"], capture_output=True,
                              text=True, timeout=120, cwd=tmp_path, env=env)
        assert done.returncode == 0 and done.stdout.startswith("the other checkout"), done.stdout[:300] + done.stderr
