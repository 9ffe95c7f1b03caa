"""N training processes on one machine that listen on loopback only (`pixelface-train --nproc N`).

torchrun's rendezvous store (a TCPStore) listens on every network interface whatever address it is given, and
the process group's gloo sockets bind the address the host name resolves to: a single-machine run is reachable,
unauthenticated, from the network. Here the workers meet through a FileStore in a private temporary folder (no
listening socket at all), and gloo and NCCL are told to use the loopback interface, so every socket the job
opens is bound to 127.0.0.1.

The launcher forwards SIGTERM, SIGINT and SIGUSR1 to every worker (each then checkpoints and stops), and when a
worker fails, stops the others: they would otherwise wait for it in their next collective. For restarts after
a failure and for several machines, use torchrun (README, "Training at scale").
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[2]     # the folder that holds the pixelface package
FORWARDED = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1") if hasattr(signal, name))
GRACE_S = 60.0        # how long workers get to checkpoint after a stop, before they are killed


def loopback_interface() -> str:
    """The name of the loopback network interface ('lo' on Linux, 'lo0' on macOS)."""
    names = [name for _, name in socket.if_nameindex()] if hasattr(socket, "if_nameindex") else []
    for name in names:
        if name.startswith("lo"):
            return name
    raise RuntimeError(f"no loopback network interface among {names}; use torchrun instead of --nproc")


def worker_env(rank: int, world: int, store_file: Path, interface: str) -> dict[str, str]:
    """A worker's environment: torchrun's variables, the FileStore and the loopback interface for gloo/NCCL
    (a user's own GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME win)."""
    env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
               LOCAL_WORLD_SIZE=str(world), PIXELFACE_STORE_FILE=str(store_file))
    # The workers import the package this launcher runs from (a second checkout on the machine may own the
    # editable install, and its code and project folder would otherwise train instead).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH"))))
    env.setdefault("GLOO_SOCKET_IFNAME", interface)
    env.setdefault("NCCL_SOCKET_IFNAME", interface)
    env.setdefault("OMP_NUM_THREADS", "1")       # as torchrun: the trainer then sets each rank's share
    return env


def run_workers(nproc: int, command: list[str]) -> int:
    """Run `command` as ranks 0..nproc-1 of one job; the first failing worker's exit code, else 0."""
    interface = loopback_interface()
    with tempfile.TemporaryDirectory(prefix="pixelface-rendezvous-") as folder:
        store_file = Path(folder) / "store"
        workers = [subprocess.Popen(command, env=worker_env(rank, nproc, store_file, interface))
                   for rank in range(nproc)]
        stopping = {"since": None}

        def forward(signum, frame):
            stopping["since"] = stopping["since"] or time.monotonic()
            for w in workers:
                if w.poll() is None:
                    w.send_signal(signum)

        previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
        try:
            return _wait(workers, stopping)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for w in workers:
                if w.poll() is None:
                    w.kill()
                    w.wait()


def _wait(workers: list[subprocess.Popen], stopping: dict) -> int:
    """Wait for every worker; after the first failure (or a forwarded stop) give the rest GRACE_S, then kill."""
    failed = 0
    while any(w.poll() is None for w in workers):
        for rank, w in enumerate(workers):
            code = w.poll()
            if code not in (None, 0) and not failed:
                failed = code
                print(f"pixelface-train: rank {rank} exited with code {code}; stopping the other ranks",
                      file=sys.stderr, flush=True)
                stopping["since"] = stopping["since"] or time.monotonic()
                for other in workers:
                    if other.poll() is None:
                        other.terminate()
        if stopping["since"] is not None and time.monotonic() - stopping["since"] > GRACE_S:
            for w in workers:
                if w.poll() is None:
                    w.kill()
        time.sleep(0.1)
    code = failed or next((w.returncode for w in workers if w.returncode != 0), 0)
    return 128 - code if code < 0 else code        # killed by signal n: 128 + n, as a shell reports it
