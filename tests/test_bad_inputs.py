"""Every CLI against bad input and faults: one table, one check.

Each case runs one CLI in this process and asserts (1) its exit code, (2) exactly one "error: ..." line
that names the culprit (key, file or value), and (3) that no file changed outside the place the case
allows: the shared inputs, the case's own inputs and the repository's data/, models/ and cfg/ are
snapshotted before and compared after.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO_ROOT, load_script
from pixelface.core.config import load_config
from pixelface.data.masks import PALETTE
from pixelface.training.trainer import write_config

MAIN = REPO_ROOT / "code" / "main.py"
WATCHED_REPO_FOLDERS = ("data", "models", "cfg")


def load_main():
    spec = importlib.util.spec_from_file_location("pixelface_main", MAIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------- inputs
@pytest.fixture(scope="module")
def shared(ckpt, tmp_path_factory) -> dict[str, Path]:
    """Inputs every case may read and none may change: a dataset, a run folder with a checkpoint, an
    image and a mask."""
    base = tmp_path_factory.mktemp("shared")
    data = base / "data"
    ckpt_cfg = torch.load(ckpt, map_location="cpu", weights_only=True)["config"]
    shutil.copytree(Path(ckpt_cfg["DATA"]["ROOT"]), data)
    run = base / "runs" / "smoke-00000"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(ckpt, run / "checkpoints" / ckpt.name)
    (run / "checkpoints" / "latest").write_text(ckpt.name + "\n")
    write_config(run, smoke_cfg(data))
    image = data / "images" / "0.jpg"
    mask = data / "masks" / "0.png"
    return {"base": base, "data": data, "run": run, "ckpt": run / "checkpoints" / ckpt.name,
            "image": image, "mask": mask}


def smoke_cfg(data: Path, *overrides: str):
    return load_config(REPO_ROOT / "cfg" / "smoke.yml", [f"DATA.ROOT={data}", "DATA.SYNTHESIZE=false", *overrides])


def smoke_args(s, *overrides: str) -> list[str]:
    """main.py options: cfg/smoke.yml on the shared dataset, runs under the case's own out/."""
    sets = [f"DATA.ROOT={s['data']}", "DATA.SYNTHESIZE=false", *overrides]
    return ["--cfg", str(REPO_ROOT / "cfg" / "smoke.yml"), "--out", str(s["out"]), "--no-progress",
            *(a for o in sets for a in ("--set", o))]


def write(path: Path, content: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def truncated_copy(source: Path, target: Path) -> Path:
    return write(target, source.read_bytes()[: source.stat().st_size // 2])


def noise_png(path: Path, size=(64, 64)) -> Path:
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def label_png(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((64, 64), value, np.uint8), mode="L").save(path)
    return path


def index_with_ids(s, ids: list[str]) -> Path:
    """A dataset2.json whose train split names `ids` (10 captions each)."""
    names = [i for i in ids for _ in range(10)]
    tree = {"train": {"filenames": names, "keynames": names, "captions": ["a face"] * len(names)},
            "test": {"filenames": ["t0"] * 10, "keynames": ["t0"] * 10, "captions": ["a face"] * 10}}
    return write(s["tmp"] / "index" / "dataset2.json", json.dumps(tree))


def dataset_copy(s, name="data") -> Path:
    target = s["tmp"] / name
    shutil.copytree(s["data"], target)
    return target


def run_copy(s) -> Path:
    target = s["out"] / "smoke-00000"
    shutil.copytree(s["run"], target)
    return target


def foreign_torch_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weights": torch.zeros(3)}, path)
    return path


def checkpoint_with_nan(s, part: str) -> Path:
    """The shared checkpoint with one value of `part` (G, D or G_ema) set to NaN."""
    ckpt = torch.load(s["ckpt"], map_location="cpu", weights_only=True)
    name = next(k for k, v in ckpt[part].items() if v.is_floating_point())
    ckpt[part][name].view(-1)[0] = float("nan")
    path = s["tmp"] / "nan" / "ckpt.pt"
    path.parent.mkdir(parents=True)
    torch.save(ckpt, path)
    return path


def checkpoint_without(s, key: str) -> Path:
    ckpt = torch.load(s["ckpt"], map_location="cpu", weights_only=True)
    del ckpt[key]
    path = s["tmp"] / "broken" / "ckpt.pt"
    path.parent.mkdir(parents=True)
    torch.save(ckpt, path)
    return path


# ------------------------------------------------------------------------------------------------ cases
@dataclass
class Case:
    id: str
    cli: str                                    # "main" or a scripts/ name
    argv: Callable[[dict], list[str]]
    message: str                                # must appear in the one error line
    code: int = 2
    setup: Callable[[dict], None] | None = None
    writes: Callable[[dict], list[Path]] = field(default=lambda s: [])   # the only places allowed to change
    slow: bool = False
    align: bool = False                         # needs the 'align' extra (face detection) and scikit-image


def out_only(s):
    return [s["out"]]


SMOKE = str(REPO_ROOT / "cfg" / "smoke.yml")

CASES = [
    # --- config: keys, types, values and ranges, in files and on the command line
    Case("unknown-key", "main", lambda s: smoke_args(s, "TRAIN.LR=1"), "unknown key TRAIN.LR (did you mean TRAIN.LR_G?)"),
    Case("wrong-type", "main", lambda s: smoke_args(s, "TRAIN.BATCH_SIZE=abc"), "TRAIN.BATCH_SIZE = 'abc' has type str"),
    Case("bad-choice", "main", lambda s: smoke_args(s, "TRAIN.MISMATCH_ON=both"), "TRAIN.MISMATCH_ON = 'both': expected one of 'fake', 'real'"),
    Case("bad-amp", "main", lambda s: smoke_args(s, "TRAIN.AMP=fp8"), "TRAIN.AMP = 'fp8'"),
    Case("zero-batch", "main", lambda s: smoke_args(s, "TRAIN.BATCH_SIZE=0"), "TRAIN.BATCH_SIZE = 0: expected a value >= 1"),
    Case("infinite-kimg", "main", lambda s: smoke_args(s, "TRAIN.TOTAL_KIMG=.inf"), "TRAIN.TOTAL_KIMG = inf: expected a finite number"),
    Case("nan-lr", "main", lambda s: smoke_args(s, "TRAIN.LR_G=.nan"), "TRAIN.LR_G = nan"),
    Case("negative-lr", "main", lambda s: smoke_args(s, "TRAIN.LR_G=-1e-3"), "TRAIN.LR_G = -0.001: expected a value > 0"),
    Case("name-escapes", "main", lambda s: smoke_args(s, "CONFIG_NAME=../escape"), "CONFIG_NAME = '../escape'"),
    Case("name-absolute", "main", lambda s: smoke_args(s, "CONFIG_NAME=/tmp/x"), "CONFIG_NAME = '/tmp/x'"),
    Case("index-escapes", "main", lambda s: smoke_args(s, "DATA.INDEX=../../etc/passwd"), "DATA.INDEX = '../../etc/passwd'"),
    Case("model-size", "main", lambda s: smoke_args(s, "MODEL.SIZE=128"), "MODEL.SIZE = 128: expected one of 64, 256, 1024"),
    Case("dropout-range", "main", lambda s: smoke_args(s, "MODEL.GCMF_DROPOUT=1.0"), "MODEL.GCMF_DROPOUT = 1.0"),
    Case("eval-caption", "main", lambda s: smoke_args(s, "DATA.EVAL_CAPTION=10"), "DATA.EVAL_CAPTION = 10"),
    Case("key-without-partner", "main", lambda s: smoke_args(s, "TRAIN.RECON_ZONE_NAMED_SHARE=0.6"),
         "TRAIN.RECON_ZONE_NAMED_SHARE = 0.6 acts only with TRAIN.RECON_ZONE_CHROMA_WEIGHT > 0, which is 0.0"),
    Case("set-bad-yaml", "main", lambda s: smoke_args(s, "TRAIN.EVAL_METRICS=[fid_clip,clip_score"),
         "--set TRAIN.EVAL_METRICS=[fid_clip,clip_score: the value is not valid YAML"),
    Case("set-without-value", "main", lambda s: smoke_args(s, "TRAIN.LR_G"), "--set TRAIN.LR_G: expected KEY.SUB=VALUE"),
    Case("cfg-missing", "main", lambda s: ["--cfg", str(s["tmp"] / "nope.yml"), "--out", str(s["out"])], "nope.yml does not exist"),
    Case("cfg-not-yaml", "main", lambda s: ["--cfg", str(write(s["tmp"] / "bad.yml", "TRAIN: [1, 2\n")), "--out", str(s["out"])],
         "bad.yml: not valid YAML"),
    Case("cfg-not-mapping", "main", lambda s: ["--cfg", str(write(s["tmp"] / "list.yml", "- 1\n- 2\n")), "--out", str(s["out"])],
         "list.yml: expected a mapping"),
    Case("cfg-unknown-key", "main", lambda s: ["--cfg", str(write(s["tmp"] / "typo.yml", "TRAIN:\n  BATCH: 4\n")), "--out", str(s["out"])],
         "typo.yml: unknown key TRAIN.BATCH"),
    Case("cfg-bad-value-in-file", "main", lambda s: ["--cfg", str(write(s["tmp"] / "v.yml", "MODEL:\n  UNFOLD_INIT: magic\n")),
                                                      "--out", str(s["out"])], "v.yml: MODEL.UNFOLD_INIT = 'magic'"),
    Case("eval-metric-unknown", "main", lambda s: smoke_args(s, "TRAIN.EVAL_KIMG=1", "TRAIN.EVAL_METRICS=[fidd]"), "TRAIN.EVAL_METRICS: unknown metric(s) ['fidd']"),
    Case("batch-above-share", "main", lambda s: smoke_args(s, "TRAIN.BATCH_SIZE=64"), "TRAIN.BATCH_SIZE = 64 is more than"),
    Case("out-is-a-file", "main", lambda s: smoke_args({**s, "out": write(s["tmp"] / "runs.txt", "x")}), "runs.txt is a file"),
    Case("data-root-missing", "main", lambda s: smoke_args(s, f"DATA.ROOT={s['tmp'] / 'nodata'}"), "nodata"),
    Case("synthesize-over-user-files", "main",
         lambda s: smoke_args(s, f"DATA.ROOT={write(s['tmp'] / 'mine' / 'holiday.jpg', b'jpeg').parent}", "DATA.SYNTHESIZE=true"),
         "is not empty and holds no dataset2.json"),
    # --- data
    Case("id-escapes", "main", lambda s: smoke_args(s, f"DATA.ROOT={index_with_ids(s, ['0', '../../secret']).parent}"),
         "image id '../../secret' is not a plain name"),
    Case("id-absolute", "main", lambda s: smoke_args(s, f"DATA.ROOT={index_with_ids(s, ['/etc/passwd']).parent}"),
         "image id '/etc/passwd'"),
    Case("index-not-json", "main", lambda s: smoke_args(s, f"DATA.ROOT={write(s['tmp'] / 'd' / 'dataset2.json', '{oops').parent}"),
         "dataset2.json: not a readable dataset2.json"),
    Case("image-missing", "main", lambda s: smoke_args(s, f"DATA.ROOT={s['data_copy']}"), "images/1.jpg",
         setup=lambda s: (s.update(data_copy=dataset_copy(s)), (s["data_copy"] / "images" / "1.jpg").unlink())),
    Case("image-truncated", "main", lambda s: smoke_args(s, f"DATA.ROOT={s['data_copy']}"), "truncated",
         setup=lambda s: (s.update(data_copy=dataset_copy(s)),
                          [truncated_copy(p, p) for p in (s["data_copy"] / "images").glob("*.jpg")]),
         writes=out_only),
    Case("image-truncated-in-worker", "main", lambda s: smoke_args(s, f"DATA.ROOT={s['data_copy']}", "DATA.NUM_WORKERS=1"),
         "truncated", setup=lambda s: (s.update(data_copy=dataset_copy(s)),
                                       [truncated_copy(p, p) for p in (s["data_copy"] / "images").glob("*.jpg")]),
         writes=out_only),
    Case("mask-off-palette", "main", lambda s: smoke_args(s, f"DATA.ROOT={s['data_copy']}"), "off the CelebAMask-HQ palette",
         setup=lambda s: (s.update(data_copy=dataset_copy(s)),
                          [noise_png(p) for p in (s["data_copy"] / "masks").glob("*.png")]),
         writes=out_only),
    # --- checkpoints and resume
    Case("resume-missing", "main", lambda s: smoke_args(s) + ["--resume", str(s["tmp"] / "gone.pt")], "no such checkpoint or run folder"),
    Case("resume-zero-bytes", "main", lambda s: smoke_args(s) + ["--resume", str(write(s["tmp"] / "empty.pt", b""))],
         "empty.pt cannot be read"),
    Case("resume-text-file", "main", lambda s: smoke_args(s) + ["--resume", str(write(s["tmp"] / "notes.pt", "hello"))],
         "notes.pt cannot be read"),
    Case("resume-foreign", "main", lambda s: smoke_args(s) + ["--resume", str(foreign_torch_file(s["tmp"] / "other.pt"))],
         "other.pt is not a PixelFace+ checkpoint"),
    Case("resume-other-architecture", "main", lambda s: smoke_args(s, "MODEL.STYLE_DIM=48") + ["--resume", str(s["run_copy"])],
         "does not fit this config", setup=lambda s: s.update(run_copy=run_copy(s))),
    Case("resume-missing-keys", "main", lambda s: smoke_args(s) + ["--resume", str(checkpoint_without(s, "opt_G"))],
         "lacks opt_G"),
    Case("resume-not-a-run", "main", lambda s: smoke_args(s) + ["--resume", str((s["tmp"] / "plain").mkdir() or s["tmp"] / "plain")],
         "is not a run folder"),
    Case("resume-run-without-checkpoint", "main", lambda s: smoke_args(s) + ["--resume", str(s["bare_run"])],
         "holds no readable checkpoint",
         setup=lambda s: s.update(bare_run=write(s["out"] / "smoke-00000" / "config.yaml", "CONFIG_NAME: smoke\n").parent)),
    Case("resume-locked-run", "main", lambda s: smoke_args(s) + ["--resume", str(s["run_copy"])], "is in use by another training",
         setup=lambda s: (s.update(run_copy=run_copy(s)), hold_lock(s, s["run_copy"]))),
    Case("resume-auto-unreadable", "main", lambda s: smoke_args(s) + ["--resume", "auto"], "no readable checkpoint",
         setup=lambda s: write(run_copy(s) / "checkpoints" / s["ckpt"].name, b"")),
    # --- sampling
    Case("sample-ckpt-missing", "sample", lambda s: ["--ckpt", str(s["tmp"] / "no.pt"), "--mask", str(s["mask"]), "--text", "a face",
                                                     "--out", str(s["out"])], "no.pt does not exist"),
    Case("sample-ckpt-zero", "sample", lambda s: ["--ckpt", str(write(s["tmp"] / "z.pt", b"")), "--mask", str(s["mask"]),
                                                  "--text", "a", "--out", str(s["out"])], "z.pt cannot be read"),
    Case("sample-ckpt-foreign", "sample", lambda s: ["--ckpt", str(foreign_torch_file(s["tmp"] / "f.pt")), "--mask", str(s["mask"]),
                                                     "--text", "a", "--out", str(s["out"])], "f.pt is not a PixelFace+ checkpoint"),
    Case("sample-duplicate-seeds", "sample", lambda s: sample_args(s, "--seeds", "0,1,1"), "[1] appear more than once"),
    Case("sample-giant-seeds", "sample", lambda s: sample_args(s, "--seeds", "0-4000000000"), "more than 100,000 seeds"),
    Case("sample-bad-seeds", "sample", lambda s: sample_args(s, "--seeds", "x1"), "seeds 'x1'"),
    Case("sample-truncation", "sample", lambda s: sample_args(s, "--truncation", "2"), "--truncation 2.0"),
    Case("sample-batch", "sample", lambda s: sample_args(s, "--batch-size", "0"), "--batch-size 0"),
    Case("sample-out-is-file", "sample", lambda s: sample_args({**s, "out": write(s["tmp"] / "o.png", "x")}), "o.png is a file"),
    Case("sample-mask-missing", "sample", lambda s: sample_args({**s, "mask": s["tmp"] / "m.png"}), "m.png: mask does not exist"),
    Case("sample-mask-truncated", "sample", lambda s: sample_args({**s, "mask": truncated_copy(s["mask"], s["tmp"] / "t.png")}), "t.png: mask cannot be read as an image"),
    Case("sample-mask-off-palette", "sample", lambda s: sample_args({**s, "mask": noise_png(s["tmp"] / "n.png")}), "n.png: 44.5% of pixels are off the CelebAMask-HQ palette"),
    Case("sample-mask-label-range", "sample", lambda s: sample_args({**s, "mask": label_png(s["tmp"] / "l.png", 40)}), "l.png"),
    Case("sample-mask-not-image", "sample", lambda s: sample_args({**s, "mask": write(s["tmp"] / "x.png", "not a png")}), "x.png: mask cannot be read as an image"),
    Case("sample-text-file-missing", "sample", lambda s: ["--ckpt", str(s["ckpt"]), "--mask", str(s["mask"]), "--text-file",
                                                          str(s["tmp"] / "caps.txt"), "--out", str(s["out"])], "caps.txt does not exist"),
    Case("sample-text-file-empty", "sample", lambda s: ["--ckpt", str(s["ckpt"]), "--mask", str(s["mask"]), "--text-file",
                                                        str(write(s["tmp"] / "e.txt", "\n\n")), "--out", str(s["out"])], "e.txt holds no captions"),
    Case("sample-text-file-binary", "sample", lambda s: ["--ckpt", str(s["ckpt"]), "--mask", str(s["mask"]), "--text-file",
                                                         str(write(s["tmp"] / "b.txt", b"\xff\xfe\x00bad")), "--out", str(s["out"])],
         "b.txt is not UTF-8"),
    Case("sample-unpaired", "sample", lambda s: ["--ckpt", str(s["ckpt"]), "--mask", str(s["mask"]), "--mask", str(s["mask"]),
                                                 "--text", "a", "--text", "b", "--text", "c", "--out", str(s["out"])],
         "2 masks and 3 captions cannot be paired"),
    Case("sample-existing-output", "sample", lambda s: sample_args(s), "output files exist already",
         setup=lambda s: write(s["out"] / "grid.png", b"mine")),
    Case("sample-unknown-option", "sample", lambda s: sample_args(s, "--sedes", "1"), "unrecognized arguments: --sedes"),
    # --- manipulation
    Case("edit-image-missing", "manipulate", lambda s: edit_args(s, image=s["tmp"] / "face.jpg"), "face.jpg: image does not exist"),
    Case("edit-image-truncated", "manipulate", lambda s: edit_args(s, image=truncated_copy(s["image"], s["tmp"] / "cut.jpg")), "cut.jpg: image cannot be read as an image"),
    Case("edit-aspect-mismatch", "manipulate", lambda s: edit_args(s, mask=wide_mask(s)), "wide.png"),
    Case("edit-steps", "manipulate", lambda s: edit_args(s, "--steps", "0"), "--steps 0"),
    Case("edit-inversion-zero", "manipulate", lambda s: ["--ckpt", str(s["ckpt"]), "--inversion", str(write(s["tmp"] / "inv.pt", b"")),
                                                         "--edit-text", "a face", "--out", str(s["out"])], "inv.pt cannot be read"),
    Case("edit-no-caption", "manipulate", lambda s: ["--ckpt", str(s["ckpt"]), "--image", str(s["image"]), "--mask", str(s["mask"]),
                                                     "--edit-text", "a", "--out", str(s["out"])], "--caption is required"),
    Case("edit-edit-mask-missing", "manipulate", lambda s: edit_args(s, "--edit-mask", str(s["tmp"] / "e.png")), "e.png: mask does not exist"),
    Case("edit-parser-foreign", "manipulate", lambda s: ["--ckpt", str(s["ckpt"]), "--image", str(s["image"]), "--parser",
                                                         str(foreign_torch_file(s["tmp"] / "p.pt")), "--caption", "a face",
                                                         "--edit-text", "a", "--steps", "1", "--out", str(s["out"])],
         "p.pt is neither a face parser"),
    # --- masks of your own photo
    Case("editor-ckpt-missing", "editor", lambda s: ["--ckpt", str(s["tmp"] / "no.pt")], "does not exist"),
    Case("editor-parser-missing", "editor", lambda s: ["--ckpt", str(s["ckpt"]), "--parser", str(s["tmp"] / "no.pth")],
         "does not exist"),
    Case("editor-data-root-missing", "editor", lambda s: ["--ckpt", str(s["ckpt"]), "--data-root", str(s["tmp"] / "nope")],
         "is not a folder"),
    Case("mask-image-missing", "make_mask", lambda s: ["--image", str(s["tmp"] / "me.jpg"), "--parser", str(s["tmp"] / "p.pt"),
                                                       "--out", str(s["out"] / "m.png")], "me.jpg: image does not exist"),
    Case("mask-parser-foreign", "make_mask", lambda s: ["--image", str(s["image"]), "--parser",
                                                        str(foreign_torch_file(s["tmp"] / "p.pt")), "--out", str(s["out"] / "m.png")],
         "p.pt is neither a face parser written by scripts/train_parser.py nor"),
    # --- evaluation
    Case("eval-ckpt-missing", "evaluate", lambda s: ["--ckpt", str(s["tmp"] / "no.pt"), "--num", "4"], "no.pt does not exist"),
    Case("eval-unknown-metric", "evaluate", lambda s: ["--ckpt", str(s["ckpt"]), "--num", "4", "--metrics", "fidd"], "fidd"),
    Case("eval-duplicate-seeds", "evaluate", lambda s: ["--ckpt", str(s["ckpt"]), "--num", "4", "--seeds", "3,3"], "[3] appear more than once"),
    Case("eval-existing-report", "evaluate", lambda s: ["--ckpt", str(s["ckpt"]), "--num", "4", "--out", str(s["out"])], "metrics.json",
         setup=lambda s: write(s["out"] / "metrics.json", "{}")),
    Case("eval-parser-zero", "evaluate", lambda s: ["--ckpt", str(s["ckpt"]), "--num", "4", "--metrics", "mask_acc", "--parser",
                                                    str(write(s["tmp"] / "parser.pt", b""))], "parser.pt"),
    Case("eval-too-few", "evaluate", lambda s: ["--ckpt", str(s["ckpt"]), "--num", "1"], "--num >= 2"),
    Case("curve-no-checkpoints", "learning_curve", lambda s: [str(s["tmp"]), "--num", "4"], "holds no ckpt-*.pt"),
    Case("figures-ckpt-missing", "model_figures", lambda s: ["--ckpt", str(s["tmp"] / "no.pt"), "--out", str(s["out"] / "m")],
         "no.pt does not exist"),
    Case("figures-existing", "model_figures", lambda s: ["--ckpt", str(s["ckpt"]), "--out", str(s["out"] / "m")], "--force",
         setup=lambda s: write(s["out"] / "m_seeds.png", b"mine")),
    # --- data tools
    Case("prepare-id-escapes", "prepare_mmceleba", lambda s: ["--celeba-hq", str(s["tmp"]), "--parts", str(s["tmp"]), "--index",
                                                              str(index_with_ids(s, ["../../outside"])), "--out", str(s["out"])],
         "'../../outside' is not a plain name"),
    Case("prepare-out-is-file", "prepare_mmceleba", lambda s: ["--celeba-hq", str(s["tmp"]), "--parts", str(s["tmp"]), "--index",
                                                               str(index_with_ids(s, ["0"])), "--out", str(write(s["tmp"] / "o", "x"))], "is a file"),
    Case("prepare-index-missing", "prepare_mmceleba", lambda s: ["--celeba-hq", str(s["tmp"]), "--parts", str(s["tmp"]), "--index",
                                                                 str(s["tmp"] / "idx.json"), "--out", str(s["out"])], "idx.json"),
    Case("synth-out-not-empty", "make_synthetic_faces", lambda s: ["--out", str(s["mine"]), "--num", "4", "--size", "32"], "is not empty",
         setup=lambda s: s.update(mine=write(s["tmp"] / "mine" / "photo.jpg", b"x").parent)),
    Case("synth-num", "make_synthetic_faces", lambda s: ["--out", str(s["out"]), "--num", "1"], "num = 1"),
    Case("clip-bad-config", "pretrain_clip", lambda s: ["--cfg", SMOKE, "--set", "TEXT.CUSTOM.TEXT_HEADS=0", "--out", str(s["out"] / "c.pt")],
         "TEXT.CUSTOM.TEXT_HEADS = 0"),
    Case("parser-no-data", "train_parser", lambda s: ["--cfg", SMOKE, "--out", str(s["out"] / "p.pt"), "--set",
                                                      f"DATA.ROOT={s['tmp'] / 'none'}"], "none"),
    Case("export-ckpt-zero", "export_model", lambda s: ["--ckpt", str(write(s["tmp"] / "z.pt", b"")), "--out", str(s["out"])], "z.pt"),
    Case("export-out-exists", "export_model", lambda s: ["--ckpt", str(s["ckpt"]), "--out", str(s["out"])], "pixelface.json already exist",
         setup=lambda s: write(s["out"] / "pixelface.json", "{}")),
    Case("export-out-in-use", "export_model", lambda s: ["--ckpt", str(s["ckpt"]), "--out", str(s["out"])],
         "is being written by another process", setup=lambda s: (s["out"].mkdir(parents=True, exist_ok=True), hold_lock(
             s, s["out"], "from pixelface.core.files import FolderLock; lock = FolderLock(folder, 'busy')"))),
    Case("convert-missing", "convert_reference", lambda s: ["--in", str(s["tmp"] / "ref.pth"), "--out", str(s["out"] / "c.pt")], "ref.pth"),
    Case("convert-foreign", "convert_reference", lambda s: ["--in", str(write(s["tmp"] / "ref.pth", "text")), "--out",
                                                            str(s["out"] / "c.pt")], "ref.pth"),
    Case("convert-zero-bytes", "convert_reference", lambda s: ["--in", str(write(s["tmp"] / "ref.pth", b"")), "--out",
                                                               str(s["out"] / "c.pt")], "ref.pth cannot be read"),
    Case("convert-out-is-in", "convert_reference", lambda s: ["--in", str(write(s["tmp"] / "ref.pth", "official")), "--out",
                                                              str(s["tmp"] / "ref.pth"), "--force"], "is the official file being converted"),
    Case("export-out-is-ckpt", "export_model", lambda s: ["--ckpt", str(s["ckpt"]), "--out", str(s["ckpt"]), "--force"],
         "would overwrite the model being exported"),
    Case("sample-ckpt-no-gema", "sample", lambda s: ["--ckpt", str(checkpoint_without(s, "G_ema")), "--mask", str(s["mask"]),
                                                     "--text", "a", "--out", str(s["out"])], "lacks G_ema"),
    Case("sample-ckpt-no-config", "sample", lambda s: ["--ckpt", str(checkpoint_without(s, "config")), "--mask", str(s["mask"]),
                                                       "--text", "a", "--out", str(s["out"])], "lacks config"),
    Case("sample-ckpt-nan", "sample", lambda s: ["--ckpt", str(checkpoint_with_nan(s, "G_ema")), "--mask", str(s["mask"]),
                                                 "--text", "a", "--out", str(s["out"])], "non-finite value (NaN or inf)"),
    Case("export-ckpt-nan", "export_model", lambda s: ["--ckpt", str(checkpoint_with_nan(s, "G_ema")), "--out", str(s["out"])],
         "G_ema: tensor"),
    Case("edit-ckpt-no-gema", "manipulate", lambda s: ["--ckpt", str(checkpoint_without(s, "G_ema")), "--image", str(s["image"]),
                                                       "--mask", str(s["mask"]), "--caption", "a", "--out", str(s["out"])],
         "lacks G_ema"),
    Case("resume-nan-weights", "main", lambda s: smoke_args(s) + ["--resume", str(checkpoint_with_nan(s, "D"))],
         "D: tensor"),
    Case("sample-out-in-use", "sample", lambda s: sample_args(s), "is being written by another process; wait for it to "
         "end or choose another output (held by process ",
         setup=lambda s: (s["out"].mkdir(parents=True, exist_ok=True), hold_lock(
             s, s["out"], "from pixelface.core.files import FolderLock; lock = FolderLock(folder, 'busy')"))),
    Case("edit-out-in-use", "manipulate", lambda s: edit_args(s), "is being written by another process",
         setup=lambda s: (s["out"].mkdir(parents=True, exist_ok=True), hold_lock(
             s, s["out"], "from pixelface.core.files import FolderLock; lock = FolderLock(folder, 'busy')"))),
    Case("sample-ckpt-complex", "sample", lambda s: ["--ckpt", str(checkpoint_with_complex(s)), "--mask", str(s["mask"]),
                                                     "--text", "a", "--out", str(s["out"])], "is complex64; expected real"),
    Case("eval-ckpt-nan", "evaluate", lambda s: ["--ckpt", str(checkpoint_with_nan(s, "G_ema")), "--num", "2",
                                                 "--out", str(s["out"])], "non-finite value", writes=out_only),
    Case("eval-ckpt-no-gema", "evaluate", lambda s: ["--ckpt", str(checkpoint_without(s, "G_ema")), "--num", "2",
                                                     "--out", str(s["out"])], "lacks G_ema", writes=out_only),
    Case("eval-out-in-use", "evaluate", lambda s: ["--ckpt", str(s["ckpt"]), "--num", "2", "--out", str(s["out"])],
         "is being written by another process", setup=lambda s: (s["out"].mkdir(parents=True, exist_ok=True), hold_lock(
             s, s["out"], "from pixelface.core.files import FolderLock; lock = FolderLock(folder, 'busy')"))),
    Case("export-ckpt-no-config", "export_model", lambda s: ["--ckpt", str(checkpoint_without(s, "config")),
                                                             "--out", str(s["out"])], "lacks config"),
    Case("edit-ckpt-nan", "manipulate", lambda s: ["--ckpt", str(checkpoint_with_nan(s, "G_ema")), "--image", str(s["image"]),
                                                   "--mask", str(s["mask"]), "--caption", "a", "--out", str(s["out"])],
         "non-finite value"),
    Case("resume-no-rng", "main", lambda s: smoke_args(s) + ["--resume", str(checkpoint_without(s, "rng"))],
         "lacks rng"),
    Case("mask-out-in-use", "make_mask", lambda s: ["--image", str(s["image"]), "--parser", str(s["parser"]),
                                                    "--out", str(s["out"] / "m.png")], "is being written by another process",
         setup=lambda s: (s.update(parser=tiny_parser(s)), s["out"].mkdir(parents=True, exist_ok=True),
                          hold_lock(s, s["out"], "from pixelface.core.files import FolderLock; lock = FolderLock(folder, 'busy')"))),
    Case("align-image-missing", "align_face", lambda s: ["--image", str(s["tmp"] / "me.jpg"), "--out", str(s["out"] / "c.png")],
         "me.jpg"),
    Case("align-out-not-png", "align_face", lambda s: ["--image", str(s["image"]), "--out", str(s["out"] / "c.jpg")],
         "--out " ),
    Case("align-bad-size", "align_face", lambda s: ["--image", str(s["image"]), "--out", str(s["out"] / "c.png"), "--size", "0"],
         "--size 0"),
    Case("align-bad-detector", "align_face", lambda s: ["--image", str(s["image"]), "--out", str(s["out"] / "c.png"),
                                                        "--detector", "retinaface"], "--detector 'retinaface'"),
    Case("align-out-exists", "align_face", lambda s: ["--image", str(s["image"]), "--out", str(s["out"] / "c.png")],
         "pass --force", setup=lambda s: write(s["out"] / "c.png", b"mine"), align=True),
    Case("align-no-face", "align_face", lambda s: ["--image", str(brick_photo(s)), "--out", str(s["out"] / "c.png")],
         "wall.png: no face found", writes=out_only, align=True),
    Case("align-face-index", "align_face", lambda s: ["--image", str(astronaut_photo(s)), "--out", str(s["out"] / "c.png"),
                                                      "--face", "3"], "face 3 asked for, but 1 found", writes=out_only,
         align=True),
    Case("edit-align-no-face", "manipulate", lambda s: edit_args(s, "--align", "on", image=brick_photo(s), mask=wide_mask(s)),
         "no face found", writes=out_only, align=True),
    Case("mask-align-no-face", "make_mask", lambda s: ["--image", str(brick_photo(s)), "--parser", str(s["parser"]),
                                                       "--out", str(s["out"] / "m.png"), "--align", "on"], "no face found",
         setup=lambda s: s.update(parser=tiny_parser(s)), writes=out_only, align=True),
    Case("report-no-run", "report_run", lambda s: [str(s["tmp"] / "norun"), "--out", str(s["out"] / "r")], "norun"),
]


def sample_args(s, *extra: str) -> list[str]:
    return ["--ckpt", str(s["ckpt"]), "--mask", str(s["mask"]), "--text", "a face", "--out", str(s["out"]), *extra]


def edit_args(s, *extra: str, image=None, mask=None) -> list[str]:
    return ["--ckpt", str(s["ckpt"]), "--image", str(image or s["image"]), "--mask", str(mask or s["mask"]),
            "--caption", "a face", "--edit-text", "a face with blond hair", "--steps", "1", "--out", str(s["out"]), *extra]


def wide_mask(s) -> Path:
    path = s["tmp"] / "wide.png"
    Image.fromarray(np.tile(PALETTE[1], (64, 128, 1))).save(path)
    return path


def brick_photo(s, name="wall.png", size=(200, 160)) -> Path:
    """A photo without a face: scikit-image's brick texture."""
    from skimage import data
    path = s["tmp"] / name
    Image.fromarray(data.brick()[: size[1], : size[0]]).convert("RGB").save(path)
    return path


def astronaut_photo(s, name="astronaut.png") -> Path:
    """A photo with one face: scikit-image's astronaut."""
    from skimage import data
    path = s["tmp"] / name
    Image.fromarray(data.astronaut()).save(path)
    return path


def tiny_parser(s) -> Path:
    """An untrained face parser file of this project's format (make_mask's --parser)."""
    from pixelface.evaluation.parser import FaceParser, save_parser
    torch.manual_seed(0)
    path = s["tmp"] / "parser.pt"
    save_parser(FaceParser(width=4, depth=2), path, {}, {})
    return path


def checkpoint_with_complex(s) -> Path:
    ckpt = torch.load(s["ckpt"], map_location="cpu", weights_only=True)
    name = next(k for k, v in ckpt["G_ema"].items() if v.is_floating_point())
    ckpt["G_ema"][name] = ckpt["G_ema"][name].to(torch.complex64)
    path = s["tmp"] / "complex" / "ckpt.pt"
    path.parent.mkdir(parents=True)
    torch.save(ckpt, path)
    return path


def hold_lock(s, run_dir: Path, claim: str = "from pixelface.training.runs import RunLock as Lock; lock = Lock(folder)") -> None:
    """Another process holds the run's lock (or, with another `claim`, an output folder) until the test ends."""
    code = ("import sys, time; from pathlib import Path; folder = Path(sys.argv[1]); " + claim +
            "; lock.acquire(); print('locked', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    s["cleanup"].append(proc.kill)


# ------------------------------------------------------------------------------------------------ check
def snapshot(roots: list[Path]) -> dict[str, str]:
    """path -> sha256 (files) or 'dir' of everything under `roots`."""
    found = {}
    for root in roots:
        if not root.exists():
            continue
        for path in [root, *root.rglob("*")]:
            if "__pycache__" in path.parts:
                continue
            found[str(path)] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def run_cli(name: str, argv: list[str], capsys) -> tuple[int, list[str]]:
    module = load_main() if name == "main" else load_script(name)
    threads = torch.get_num_threads()
    try:
        code = module.main(argv)
    except SystemExit as e:      # argparse usage errors
        code = e.code
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err.splitlines()
    return code, [line for line in err if line.startswith("error: ") or ": error: " in line]


# The editor's own errors come after its optional dependency is imported; without gradio it stops earlier, with
# the one line that says to install it, which the README's set-up (requirements.txt alone) must let pass.
NO_GRADIO = pytest.mark.skipif(importlib.util.find_spec("gradio") is None,
                               reason="the editor needs gradio: pip install -r requirements-editor.txt")


NO_ALIGN = pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("dlib", "face_recognition_models", "skimage")),
                              reason="needs the 'align' extra and scikit-image: pip install -r requirements-align.txt")


def _marks(case: Case) -> list:
    return (([pytest.mark.slow] if case.slow else []) + ([NO_GRADIO] if case.cli == "editor" else [])
            + ([NO_ALIGN] if case.align else []))


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=_marks(c)) for c in CASES])
def test_bad_input(case: Case, shared, tmp_path, capsys):
    s = {**shared, "tmp": tmp_path / "inputs", "out": tmp_path / "out", "cleanup": []}
    s["tmp"].mkdir()
    try:
        if case.setup:
            case.setup(s)
        argv = case.argv(s)
        watched = [shared["base"], s["tmp"], tmp_path / "out", *(REPO_ROOT / f for f in WATCHED_REPO_FOLDERS)]
        allowed = [str(p) for p in case.writes(s)]
        before = snapshot(watched)
        code, errors = run_cli(case.cli, argv, capsys)
        after = snapshot(watched)
    finally:
        for stop in s["cleanup"]:
            stop()
    assert code == case.code, f"exit {code}, errors {errors}"
    assert len(errors) == 1, errors
    assert case.message in errors[0], errors[0]
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p)
                     and not any(p == a or p.startswith(a + os.sep) for a in allowed))
    assert not changed, f"files changed outside {allowed}: {changed[:5]}"


def test_the_table_covers_every_cli():
    clis = {c.cli for c in CASES}
    scripts = {p.stem for p in (REPO_ROOT / "scripts").glob("*.py")}
    untested = scripts - clis - {"ablate", "benchmark", "benchmark_data", "compare_runs", "synthface_probes"}
    assert not untested and "main" in clis and len(CASES) >= 60, untested


# --------------------------------------------------------------------------------------- run-folder faults
def test_resume_auto_falls_back_to_the_newest_readable_checkpoint(shared, tmp_path, capsys):
    run = tmp_path / "out" / "smoke-00000"
    shutil.copytree(shared["run"], run)
    newer = run / "checkpoints" / "ckpt-000999999.pt"
    newer.write_bytes(b"")                                      # a save that never finished
    (run / "checkpoints" / "latest").write_text(newer.name + "\n")
    stale = write(run / "checkpoints" / ".ckpt-000999999.pt.4242.pixelface-tmp", b"half")
    mine = [write(run / "checkpoints" / ".notes.123.tmp", b"a user's"), write(run / ".draft.tmp", b"a user's")]
    s = {**shared, "out": tmp_path / "out"}
    code, errors = run_cli("main", smoke_args(s) + ["--resume", "auto"], capsys)
    assert code == 0 and not errors
    log = (run / "log.txt").read_text()
    assert f"resumed from {run / 'checkpoints' / shared['ckpt'].name}" in log
    assert not stale.exists()                                   # only the atomic writer's own temporaries go
    assert all(p.read_bytes() == b"a user's" for p in mine)


def test_a_resume_that_changes_the_config_logs_every_changed_key(shared, tmp_path, capsys):
    run = tmp_path / "out" / "smoke-00000"
    shutil.copytree(shared["run"], run)
    s = {**shared, "out": tmp_path / "out"}
    code, errors = run_cli("main", smoke_args(s, "TRAIN.LR_G=0.00123") + ["--resume", "auto"], capsys)
    assert code == 0 and not errors
    saved = torch.load(shared["ckpt"], map_location="cpu", weights_only=True)["config"]["TRAIN"]["LR_G"]
    log = (run / "log.txt").read_text()
    assert f"config changed on resume: TRAIN.LR_G: {saved!r} -> 0.00123" in log


def test_a_failed_start_leaves_no_empty_run_folder(shared, tmp_path, capsys):
    s = {**shared, "out": tmp_path / "out", "tmp": tmp_path}
    code, errors = run_cli("main", smoke_args(s, "TRAIN.BATCH_SIZE=64"), capsys)
    assert code == 2 and len(errors) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_trainings_cannot_share_a_run_folder(shared, tmp_path):
    """The second training on a run folder that a live one holds stops at once, naming the folder."""
    run = tmp_path / "out" / "smoke-00000"
    shutil.copytree(shared["run"], run)
    s = {**shared, "out": tmp_path / "out"}
    cmd = [sys.executable, str(MAIN), *smoke_args(s, "TRAIN.TOTAL_KIMG=10"), "--resume", str(run)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        log = run / "log.txt"
        while not (log.exists() and "resumed from" in log.read_text()):
            assert time.time() < deadline and first.poll() is None, "first training did not start"
            time.sleep(0.5)
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    finally:
        first.terminate()
        first.wait(timeout=120)
    assert second.returncode == 2
    assert f"run folder {run} is in use by another training" in second.stderr


def test_a_write_that_fails_inside_a_library_is_one_oserror_and_keeps_the_old_file(tmp_path):
    """torch.save reports a full disk as RuntimeError, safetensors as its own error: the atomic writer turns either
    into an OSError naming the file (one `error:` line in every CLI), keeps the earlier file, leaves no temporary."""
    from pixelface.core.files import atomic_write
    target = write(tmp_path / "model.pt", b"old")

    def full_disk(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    with pytest.raises(OSError, match=r"could not write .*model.pt \(PytorchStreamWriter failed writing file data/0: "
                                      r"file write failed\); nothing was replaced, any earlier model.pt is kept"):
        atomic_write(target, full_disk)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    with pytest.raises(TypeError):      # a bug stays a bug
        atomic_write(target, lambda tmp: None + 1)
