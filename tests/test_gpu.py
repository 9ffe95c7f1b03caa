"""GPU readiness: real training steps with nccl, bf16 autocast and channels_last on cfg/smoke.yml, and the
benchmark on CUDA. Every test here is skipped on machines without CUDA."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from conftest import MAIN, REPO_ROOT, SMOKE, free_port
from pixelface.core.config import load_config
from pixelface.training.runs import latest_checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="CUDA is not available: the GPU training and benchmark checks need a GPU")

GPU_SETTINGS = ["TRAIN.AMP=bf16", "TRAIN.CHANNELS_LAST=true", "TRAIN.TOTAL_KIMG=0.008", "TRAIN.SNAPSHOT_KIMG=0.004",
                "TRAIN.LOG_KIMG=0.004"]


def world() -> int:
    return max(1, torch.cuda.device_count())


def _losses_are_finite(run_dir: Path) -> None:
    rows = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert rows, "no statistics were logged"
    for row in rows:
        for key, value in row.items():
            if key.startswith("loss/"):
                assert math.isfinite(value), (key, row)


def _nccl_worker(rank, world_size, port, root, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank), HF_HUB_OFFLINE="1")
    from pixelface.training.trainer import Trainer
    device = torch.device("cuda", rank)
    torch.cuda.set_device(device)
    # pixelface.core.distributed.init joins a group only for world > 1; join here so one GPU runs nccl too
    torch.distributed.init_process_group("nccl", rank=rank, world_size=world_size, device_id=device)
    try:
        cfg = load_config(SMOKE, [f"DATA.ROOT={root}", "DATA.SYNTHESIZE=false", *GPU_SETTINGS])
        trainer = Trainer(cfg, Path(out), device, progress_bar=False)
        trainer.run()
        assert trainer.amp is torch.bfloat16
        assert trainer.G.input.input.is_contiguous(memory_format=torch.channels_last)
    finally:
        torch.distributed.destroy_process_group()


def test_nccl_bf16_channels_last_training_writes_checkpoints(smoke_root, tmp_path):
    mp.spawn(_nccl_worker, args=(world(), free_port(), str(smoke_root), str(tmp_path)), nprocs=world(), join=True)
    _losses_are_finite(tmp_path)
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["world_size"] == world()


def test_torchrun_cli_on_every_gpu(smoke_root, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world()), "--master_port",
           str(free_port()), str(MAIN), "--cfg", str(SMOKE), "--device", "cuda",
           "--out", str(tmp_path), "--no-progress", "--set", f"DATA.ROOT={smoke_root}",
           "--set", "DATA.SYNTHESIZE=false"] + [a for s in GPU_SETTINGS for a in ("--set", s)]
    done = subprocess.run(cmd, env=dict(os.environ, HF_HUB_OFFLINE="1"), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    _losses_are_finite(tmp_path / "smoke-00000")
    assert latest_checkpoint(tmp_path / "smoke-00000") is not None


def test_benchmark_on_cuda_with_bf16_and_channels_last():
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "benchmark.py"), "--cfg", str(SMOKE), "--device", "cuda",
           "--batch", "4", "--repeats", "1", "--amp", "bf16", "--channels-last", "--reference"]
    done = subprocess.run(cmd, env=dict(os.environ, HF_HUB_OFFLINE="1"), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["amp"] == "bf16" and result["channels_last"]
    step = result["phases"]["train_step"]
    assert step["ours"]["wall_s"] > 0 and step["reference"]["wall_s"] > 0 and step["ours"]["peak_mb"] > 0
