"""The package installed as a user without this checkout gets it: `pip install` (not editable) into a folder,
then used from another folder, with PIXELFACE_HOME unset or set.

pip builds in the source tree (a build/ folder whose stale files would end up in later wheels), so the
checkout's build inputs are copied to a temporary folder and installed from there.
"""
import configparser
import json
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from conftest import REPO_ROOT, load_script
from pixelface.data.masks import label_to_color
from pixelface.data.synthface import make_face

BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "cfg", "code")
COMMANDS = ("pixelface-train", "pixelface-sample", "pixelface-edit", "pixelface-eval", "pixelface-make-mask",
            "pixelface-editor", "pixelface-convert", "pixelface-export", "pixelface-align")
CAPTION = "a woman with blond hair"

# Printed by the installed copy: what it imports and where it puts things.
REPORT = """
import json, pixelface
from pixelface.core.config import checkout_root, load_config, project_home, resolve_path
cfg = load_config("smoke")
print(json.dumps({"package": pixelface.__file__, "checkout": str(checkout_root()), "home": str(project_home()),
                  "source": cfg._source, "data_root": str(resolve_path(cfg, "DATA.ROOT"))}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder the package is installed into, a working folder outside both checkout and site)."""
    pytest.importorskip("pip")
    base = tmp_path_factory.mktemp("install").resolve()    # compared with resolved paths below
    source, site = base / "source", base / "site"
    source.mkdir()
    for name in BUILD_INPUTS:
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "configs"))
        else:
            shutil.copy(REPO_ROOT / name, source / name)
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
           "--no-cache-dir", "--no-compile", "--quiet", "--target", str(site), str(source)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    work = base / "work"
    work.mkdir()
    return site, work


def run_installed(site, cwd, args, home=None):
    """`args` run with only the installed copy importable, from `cwd`, under PIXELFACE_HOME `home`."""
    env = {k: v for k, v in os.environ.items() if k not in ("PIXELFACE_HOME", "PYTHONPATH")}
    env.update(PYTHONPATH=str(site), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    if home is not None:
        env["PIXELFACE_HOME"] = str(home)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def report(site, cwd, home=None) -> dict:
    done = run_installed(site, cwd, [sys.executable, "-c", REPORT], home)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_installed_copy_ships_its_configs_and_resolves_paths_under_its_home(installed, tmp_path):
    site, work = installed
    assert sorted(p.name for p in (site / "pixelface" / "configs").glob("*.yml")) == \
        sorted(p.name for p in (REPO_ROOT / "cfg").glob("*.yml"))
    found = report(site, work)
    assert found["package"] == str(site / "pixelface" / "__init__.py")     # not the checkout's
    assert found["checkout"] == "None"
    assert found["source"] == str(site / "pixelface" / "configs" / "smoke.yml")
    assert found["home"] == str(work) and found["data_root"] == str(work / "data" / "smoke")
    home = tmp_path.resolve() / "home"
    found = report(site, work, home=home)
    assert found["home"] == str(home) and found["data_root"] == str(home / "data" / "smoke")
    assert not found["data_root"].startswith(str(REPO_ROOT))


# Each of the two tests below starts fresh interpreters that import torch and open_clip (20-35 s together on
# 2 busy cores): slow-marked. The config test above stays in the quick run and still builds the wheel.
@pytest.mark.slow
def test_installed_console_scripts_reach_their_commands(installed):
    site, work = installed
    entry_points = configparser.ConfigParser()
    entry_points.read(next(site.glob("pixelface-*.dist-info")) / "entry_points.txt")
    targets = dict(entry_points["console_scripts"])
    assert sorted(targets) == sorted(COMMANDS) and all((site / "bin" / name).is_file() for name in COMMANDS)
    check = "; ".join(f"import {t.split(':')[0]} as m; assert callable(m.{t.split(':')[1]})" for t in targets.values())
    done = run_installed(site, work, [sys.executable, "-c", check])
    assert done.returncode == 0, done.stderr[-2000:]
    for name in COMMANDS:       # from a folder outside the checkout
        done = run_installed(site, work, [str(site / "bin" / name), "--help"])
        assert done.returncode == 0 and "examples:" in done.stdout, (name, done.stderr[-2000:])
    # --help is quick because nothing heavy loads before the arguments parse (speed itself is a benchmark's
    # business, not a timed test's): each entry point's --help, then the heavy modules present
    probe = ("import sys\n"
             + "".join(f"from {t.split(':')[0]} import {t.split(':')[1]} as f{i}\n" for i, t in enumerate(targets.values()))
             + "for f in [" + ", ".join(f"f{i}" for i in range(len(targets))) + "]:\n"
             + "    try:\n        f(['--help'])\n    except SystemExit as e:\n        assert e.code == 0\n"
             + "print(sorted(m for m in ('torch', 'numpy', 'PIL', 'open_clip') if m in sys.modules))\n")
    done = run_installed(site, work, [sys.executable, "-c", probe])
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-500:] + done.stderr[-2000:]


@pytest.mark.slow
def test_installed_commands_sample_from_anywhere(installed, ckpt, tmp_path):
    site, work = installed
    done = run_installed(site, work, [sys.executable, "-m", "pixelface.commands.sample", "--help"])
    assert done.returncode == 0 and "--ckpt" in done.stdout, done.stderr[-2000:]

    mask = tmp_path / "mask.png"
    Image.fromarray(label_to_color(make_face(0, 1, 128)[2])).save(mask)
    args = ["--ckpt", str(ckpt), "--mask", str(mask), "--text", CAPTION, "--seeds", "0-1"]
    done = run_installed(site, work, [str(site / "bin" / "pixelface-sample"), *args, "--out", "out"],
                         home=tmp_path / "home")
    assert done.returncode == 0, done.stderr[-2000:]
    out = work / "out"          # a relative --out is where the user stands, as always
    assert {p.name for p in out.glob("*.png")} == {"000_seed0.png", "000_seed1.png", "grid.png"}
    # the same bytes as the checkout's scripts/sample.py
    assert load_script("sample").main([*args, "--out", str(tmp_path / "checkout")]) == 0
    assert (out / "000_seed1.png").read_bytes() == (tmp_path / "checkout" / "000_seed1.png").read_bytes()


def test_installed_package_declares_what_requirements_txt_installs(installed):
    """`pip install .` brings the same packages requirements.txt pins (pytest aside), and the extras."""
    import re
    site, _ = installed
    metadata = (next(site.glob("pixelface-*.dist-info")) / "METADATA").read_text()
    declared = {re.split(r"[<>=!~; \[]", line.split(":", 1)[1].strip())[0].lower()
                for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line}
    pinned = {re.split(r"[<>=!~ ]", line.strip())[0].lower()
              for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith(("#", "-"))}
    assert declared == pinned - {"pytest"}
    extras = {line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Provides-Extra:")}
    assert {"editor", "test"} <= extras
