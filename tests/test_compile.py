"""TRAIN.COMPILE: a few training steps with torch.compile'd G and D give the eager losses (cfg/smoke.yml)."""
import time
from pathlib import Path

import pytest
import torch

from conftest import SMOKE
from pixelface.core.config import load_config
from pixelface.training.trainer import Trainer

STEPS = 3          # step 0 runs R1 and path length, step 2 path length again (smoke intervals 4 and 2)
LOSSES = ("loss/D", "loss/R1", "loss/G", "loss/CLIP", "loss/PL")


def run_steps(root: Path, run_dir: Path, compiled: bool) -> dict[str, list[float]]:
    """The recorded losses of STEPS training steps from the same seed and batches."""
    torch.set_num_threads(1)
    cfg = load_config(SMOKE, [f"DATA.ROOT={root}", "DATA.SYNTHESIZE=false", f"TRAIN.COMPILE={compiled}"])
    trainer = Trainer(cfg, run_dir, torch.device("cpu"), progress_bar=False)
    batches = iter(trainer._loader())
    for _ in range(STEPS):
        trainer.train_step(next(batches))
    return {k: [float(v) for v in trainer.stats[k]] for k in LOSSES}


@pytest.mark.slow      # compiling G and D took 2-10 minutes on 2 shared cores
def test_compiled_steps_give_the_eager_losses(smoke_root, tmp_path, monkeypatch):
    # Inductor draws its own random numbers unless told to call torch's: then z, noise and the GCMF
    # dropout masks are the eager ones, and only floating-point reassociation differs.
    import torch._inductor.config as inductor_config
    monkeypatch.setattr(inductor_config, "fallback_random", True)
    torch._dynamo.reset()
    eager = run_steps(smoke_root, tmp_path / "eager", compiled=False)
    start = time.perf_counter()
    compiled = run_steps(smoke_root, tmp_path / "compiled", compiled=True)
    print(f"compiled run (compilation included): {time.perf_counter() - start:.1f} s")
    assert [len(eager[k]) for k in LOSSES] == [STEPS, 1, STEPS, STEPS, 2]
    for key in LOSSES:
        assert all(torch.isfinite(torch.tensor(compiled[key]))), key
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-4, atol=1e-5, msg=key)
