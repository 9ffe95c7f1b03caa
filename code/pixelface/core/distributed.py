"""torch.distributed with defaults that let a single process run without any launcher.

Under torchrun (or pixelface-train --nproc) the environment carries RANK / WORLD_SIZE / LOCAL_RANK; without it
we are rank 0 of 1 and every collective below is a no-op.
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

# Long enough for rank 0 to render data, pretrain the tiny CLIP or run an evaluation while the other
# ranks wait at a barrier; the reference died at NCCL's one-hour timeout during its 30k-image FID.
TIMEOUT = datetime.timedelta(hours=6)


def init(device_type: str) -> tuple[int, int, torch.device]:
    """Join the process group if launched by torchrun; returns (rank, world_size, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        # pixelface-train --nproc (core/local_launcher.py): the ranks meet through a file, not a TCP store
        store_file = os.environ.get("PIXELFACE_STORE_FILE")
        store = dist.FileStore(store_file, world) if store_file else None
        dist.init_process_group(backend, timeout=TIMEOUT, device_id=device if device_type == "cuda" else None,
                                **({"store": store, "rank": rank, "world_size": world} if store else {}))
    return rank, world, device


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


def any_rank(flag: bool, device) -> bool:
    """True on every rank when `flag` is True on at least one (e.g. a stop request or a NaN)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def any_rank_each(flags: list[bool], device) -> list[bool]:
    """any_rank of several flags in one all-reduce: each True on every rank when True on at least one."""
    if not dist.is_initialized():
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def gather_objects(obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
