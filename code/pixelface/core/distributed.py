"""torch.distributed with defaults that let a single process run without any launcher.

Under torchrun (or pixelface-train --nproc) the environment carries RANK / WORLD_SIZE / LOCAL_RANK; without it
we are rank 0 of 1 and every collective below is a no-op.
"""
from __future__ import annotations

import datetime
import os
import time
import uuid

import torch
import torch.distributed as dist

# Long enough for rank 0 to render data, pretrain the tiny CLIP or run an evaluation while the other
# ranks wait at a barrier; the reference died at NCCL's one-hour timeout during its 30k-image FID.
TIMEOUT = datetime.timedelta(hours=6)
ATTEMPT_KEY = "pixelface/attempt_store"    # in torchrun's store: "port nonce" of this attempt's own store
NONCE_KEY = "pixelface/nonce"
_store_address: tuple = ()                 # how to reach the process group's store: ("file", path) / ("tcp", host, port)


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
        dist.init_process_group(backend, timeout=TIMEOUT, device_id=device if device_type == "cuda" else None,
                                store=_attempt_store(rank, world), rank=rank, world_size=world)
    return rank, world, device


def _attempt_store(rank: int, world: int):
    """The key-value store the ranks of this launch meet in, one that no earlier attempt has written to.

    pixelface-train --nproc (core/local_launcher.py): a FileStore in the launcher's private folder. Under torchrun
    with the agent's store (TORCHELASTIC_USE_AGENT_STORE, its default): that store outlives the worker group, so
    after a restart (--max-restarts) it still holds the previous attempt's addresses, and a rank reading them
    before the other ranks overwrite them connects to a dead worker (pytorch/pytorch#135712; torchrun's restart
    count cannot tell attempts apart, each agent counts its own). Rank 0 therefore opens a fresh store and posts
    its port with a random nonce on the agent's; the other ranks take the posted store whose nonce it holds, so
    a stale post (a closed port, or a port reused by another store) is skipped. Otherwise None: env://, whose
    store rank 0 hosts at MASTER_ADDR:MASTER_PORT for this launch only."""
    global _store_address
    if os.environ.get("PIXELFACE_STORE_FILE"):
        _store_address = ("file", os.environ["PIXELFACE_STORE_FILE"])
        return dist.FileStore(os.environ["PIXELFACE_STORE_FILE"], world)
    host, port = os.environ.get("MASTER_ADDR"), int(os.environ.get("MASTER_PORT", "0"))
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        _store_address = ("tcp", host, port)
        return None
    agent = dist.TCPStore(host, port, is_master=False, timeout=TIMEOUT, wait_for_workers=False)
    if rank == 0:
        store = dist.TCPStore(host, 0, world, is_master=True, timeout=TIMEOUT, wait_for_workers=False)
        nonce = uuid.uuid4().hex
        store.set(NONCE_KEY, nonce)
        agent.set(ATTEMPT_KEY, f"{store.port} {nonce}")
    else:
        store = _posted_store(agent, host)
    _store_address = ("tcp", host, store.port)
    return store


def _posted_store(agent, host: str):
    """A client of the store rank 0 posted on the agent's store, once the post is this attempt's."""
    deadline = time.monotonic() + TIMEOUT.total_seconds()
    while True:
        port, nonce = agent.get(ATTEMPT_KEY).decode().split()
        try:
            store = dist.TCPStore(host, int(port), is_master=False, timeout=datetime.timedelta(seconds=2),
                                  wait_for_workers=False)
            if store.get(NONCE_KEY).decode() == nonce:
                store.set_timeout(TIMEOUT)
                return store
        except (RuntimeError, dist.DistError):      # the previous attempt's store: gone, or not this nonce's
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank 0 posted no store of this attempt on {host} within {TIMEOUT}")
        time.sleep(0.2)


def store_client():
    """A new connection to the process group's store (a thread's own, e.g. the watchdog's: it never waits
    behind the main thread's collectives)."""
    if _store_address[0] == "file":
        return dist.FileStore(_store_address[1], world_size())
    _, host, port = _store_address
    return dist.TCPStore(host, port, is_master=False, timeout=datetime.timedelta(seconds=10), wait_for_workers=False)


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
