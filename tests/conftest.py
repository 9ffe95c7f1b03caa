import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

# Nothing in the test suite may reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The suite tests the checkout it lives in: relative config paths and models/, runs/, data/ resolve against
# it (pixelface.core.config.project_home), whatever PIXELFACE_HOME the caller's shell holds.
os.environ.pop("PIXELFACE_HOME", None)
# The checkout's root: its cfg/, code/main.py and scripts/ are what the tests run.
REPO_ROOT = Path(__file__).resolve().parents[1]

import torch  # noqa: E402

# Tiny models on 2 cores: one intra-op thread is faster than two fighting over caches, and subprocesses
# started by the tests inherit the setting through OMP_NUM_THREADS.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


import pytest  # noqa: E402

from pixelface.core.config import load_config  # noqa: E402
from pixelface.data.synthface import write_dataset  # noqa: E402
from pixelface.networks.checkpoint import load_generator  # noqa: E402
from pixelface.networks.text_encoder import TextEncoder  # noqa: E402
from pixelface.training.runs import latest_checkpoint  # noqa: E402
from pixelface.training.trainer import Trainer  # noqa: E402

SMOKE = REPO_ROOT / "cfg" / "smoke.yml"
MAIN = REPO_ROOT / "code" / "main.py"


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory) -> Path:
    """A 40-face synthface dataset at 64 px for the smoke config's training runs."""
    root = tmp_path_factory.mktemp("smoke_data")
    write_dataset(root, 40, 64, 0, workers=1, force=True)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smoke_env(**extra) -> dict:
    """The environment of a training subprocess: offline, one thread, unbuffered output."""
    return dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)


def run_main(root, out, *args, **kw) -> subprocess.Popen:
    """code/main.py on the smoke config and data `root`, writing runs under `out`; stdout and stderr merged."""
    cmd = [sys.executable, str(MAIN), "--cfg", str(SMOKE), "--out", str(out), "--no-progress",
           "--set", f"DATA.ROOT={root}", "--set", "DATA.SYNTHESIZE=false", *args]
    return subprocess.Popen(cmd, env=smoke_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def load_script(name):
    """scripts/<name>.py as a module (the scripts are not a package): tests call its main(argv)."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# cfg/smoke.yml grown into a model that follows its text and masks after about 6 minutes on 2 CPU cores:
# the synthface generator, a tiny CLIP pretrained on the fly (20 s), and settings that speed up early
# learning (higher learning rates, a weak R1 for 64 px, a strong CLIP loss, a short EMA half-life).
# Measured with two seeds: at 10 kimg text edits move the hair of 6 of 6 unseen faces toward the requested
# colour, 34-52% of the way on average (the test asks for 20%), and mask edits act 9-38x more where the mask
# changed than away from it (it asks for 5x); at 8 kimg one seed left one face of six behind. The untrained
# smoke checkpoint fails both tests.
TRAINED_OVERRIDES = [
    "DATA.SYNTH_NUM=2000", "TEXT.PRETRAIN_IF_MISSING=true", "TEXT.PRETRAIN_EPOCHS=20",
    "MODEL.STYLE_DIM=128", "MODEL.N_MLP=4", "MODEL.CHANNEL_MAX=32", "MODEL.MASK_DIM=32",
    "TRAIN.BATCH_SIZE=4", "TRAIN.TOTAL_KIMG=10", "TRAIN.LR_G=0.005", "TRAIN.LR_D=0.005", "TRAIN.R1_GAMMA=1",
    "TRAIN.CLIP_WEIGHT=10", "TRAIN.EMA_HALFLIFE_KIMG=0.5", "TRAIN.R1_INTERVAL=16", "TRAIN.PL_INTERVAL=4",
    "TRAIN.LOG_KIMG=1", "TRAIN.SAMPLE_KIMG=10", "TRAIN.SNAPSHOT_KIMG=10", "TRAIN.KEEP_CHECKPOINTS=1",
]


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory):
    """A tiny trained checkpoint: cfg/smoke.yml's 8 steps on a 40-face synthface (shared by the sampling
    and editing tests)."""
    folder = tmp_path_factory.mktemp("smoke")
    root = write_dataset(folder / "data", 40, 64, 0, workers=1)
    cfg = load_config(REPO_ROOT / "cfg" / "smoke.yml", [f"DATA.ROOT={root}", "DATA.SYNTHESIZE=false"])
    Trainer(cfg, folder / "run", torch.device("cpu"), progress_bar=False).run()
    return latest_checkpoint(folder / "run")


@pytest.fixture(scope="session")
def model(ckpt):
    """(G_ema, its config, its text encoder) of the tiny checkpoint."""
    g, cfg = load_generator(ckpt)
    return g, cfg, TextEncoder.from_config(cfg)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(G_ema, config, text encoder) of a model trained to follow text and masks: TRAINED_OVERRIDES run by
    `torchrun --nproc_per_node 2 code/main.py` from a fresh folder (it renders the data and pretrains its
    CLIP itself), or the checkpoint PIXELFACE_TRAINED_CKPT names (e.g. a cfg/synthface.yml run)."""
    path = os.environ.get("PIXELFACE_TRAINED_CKPT")
    if not path:
        folder = tmp_path_factory.mktemp("trained")
        overrides = [f"DATA.ROOT={folder / 'data'}", f"TEXT.PRETRAINED={folder / 'clip.pt'}", *TRAINED_OVERRIDES]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO_ROOT / "code" / "main.py"), "--cfg", str(REPO_ROOT / "cfg" / "smoke.yml"),
               "--out", str(folder / "runs"), "--no-progress", *(a for o in overrides for a in ("--set", o))]
        env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        path = latest_checkpoint(folder / "runs" / "smoke-00000")
    g, cfg = load_generator(path)
    return g, cfg, TextEncoder.from_config(cfg)
