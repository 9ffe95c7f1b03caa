import os

# Nothing in the test suite may reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

# Tiny models on 2 cores: one intra-op thread is faster than two fighting over caches, and subprocesses
# started by the tests inherit the setting through OMP_NUM_THREADS.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


import pytest  # noqa: E402

from pixelface.checkpoint import load_generator  # noqa: E402
from pixelface.config import REPO_ROOT, load_config  # noqa: E402
from pixelface.synthface import write_dataset  # noqa: E402
from pixelface.text_encoder import TextEncoder  # noqa: E402
from pixelface.trainer import Trainer, latest_checkpoint  # noqa: E402


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
