"""A progress watchdog for training (TRAIN.STALL_TIMEOUT_S).

One stalled rank (a hung GPU, a frozen node, a SIGSTOP) would otherwise hold every other rank in its next
collective until the process group's timeout, hours later, without a word. Each rank's training loop calls
`Watchdog.beat(what)` at every phase; a thread publishes the rank's beats on a board that every rank can read
(the process group's key-value store) and watches everyone's. When no rank has made progress for the timeout,
the whole job is stuck: each rank's watchdog names the rank that stopped first (the one whose last beat is the
oldest) and what it was doing, and ends its process; the newest checkpoint was written atomically and stays
loadable, so `--resume auto` (or torchrun's `--max-restarts`) continues from it.

Ages are measured by each watcher on its own clock, from the moment it saw a rank's beat change, so clocks of
different machines need not agree.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

from pixelface.core import distributed

# The exit code of a rank stopped by the watchdog (distinct from a crash's 1 and a signal's 128+n).
STALL_EXIT_CODE = 75


class LocalBoard:
    """Beats kept in this process: a single-rank run, or tests standing in for several ranks."""

    def __init__(self):
        self.values: dict[int, str] = {}

    def publish(self, rank: int, value: str) -> None:
        self.values[rank] = value

    def read(self, rank: int) -> str | None:
        return self.values.get(rank)


class StoreBoard:
    """Beats in a torch.distributed key-value store (TCPStore or FileStore), under a prefix of this attempt."""

    def __init__(self, store, prefix: str):
        self.store, self.prefix = store, prefix

    def publish(self, rank: int, value: str) -> None:
        self.store.set(f"{self.prefix}/{rank}", value)

    def read(self, rank: int) -> str | None:
        key = f"{self.prefix}/{rank}"
        return self.store.get(key).decode() if self.store.check([key]) else None


def store_board() -> StoreBoard:
    """A board on the process group's own store (core/distributed.py: the FileStore of `pixelface-train --nproc`,
    or this launch attempt's TCP store, which no earlier attempt has written to), through a connection of its
    own, so the watchdog thread never waits behind the main thread's collectives."""
    return StoreBoard(distributed.store_client(), "pixelface/watchdog")


class Watchdog:
    """Watches the beats of ranks 0..world-1 on `board`; calls `on_stall(message)` once when none of them has
    changed for `timeout_s` seconds (then stops watching).

    beat() is cheap (two assignments) and called from the training loop; publishing and reading happen in
    the watch thread (start/stop) or in check(), which tests call directly with their own clock."""

    def __init__(self, timeout_s: float, rank: int, world: int, board, on_stall: Callable[[str], None],
                 poll_s: float | None = None, clock: Callable[[], float] = time.monotonic):
        if timeout_s <= 0:
            raise ValueError(f"watchdog timeout must be > 0 s, got {timeout_s}")
        self.timeout_s, self.rank, self.world, self.board = timeout_s, rank, world, board
        self.on_stall, self.clock = on_stall, clock
        self.poll_s = poll_s if poll_s is not None else min(max(timeout_s / 10, 0.05), 30.0)
        self._count, self._what, self._polls = 0, "starting", 0
        started = clock()
        # rank -> (last (beats, what) / polls seen, when it changed on this watcher's clock)
        self._progress = {r: (None, started) for r in range(world)}
        self._alive = {r: (None, started) for r in range(world)}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self, what: str) -> None:
        """This rank is alive and now doing `what` (e.g. 'step 120: D main')."""
        self._count += 1
        self._what = what

    def check(self) -> str | None:
        """Publish this rank's beat, read every rank's; the stall message, or None while anyone progresses.

        A value is 'beats|polls|what': beats change with the training loop's progress, polls with every check
        of the rank's watchdog, so a rank waiting in a collective (its watchdog still polls) is told apart from
        a frozen one (SIGSTOP, a dead node: nothing of it moves)."""
        self._polls += 1
        self.board.publish(self.rank, f"{self._count}|{self._polls}|{self._what}")
        now = self.clock()
        for r in range(self.world):
            try:
                value = self.board.read(r)
            except Exception:        # an unreachable store counts as no news: the ages keep growing
                continue
            if value is None:
                continue
            beats, polls, what = value.split("|", 2)
            if (beats, what) != self._progress[r][0]:
                self._progress[r] = ((beats, what), now)
            if polls != self._alive[r][0]:
                self._alive[r] = (polls, now)
        ages = {r: now - changed for r, (_, changed) in self._progress.items()}
        if min(ages.values()) < self.timeout_s:
            return None
        frozen = {r for r, (_, changed) in self._alive.items() if now - changed >= self.timeout_s / 2}
        # The rank to name: a frozen one before a merely waiting one, then the longest silent, then one that
        # never started, then the lowest rank.
        stalled = max(ages, key=lambda r: (r in frozen, ages[r], self._progress[r][0] is None, -r))
        last = self._progress[stalled][0]
        doing = last[1] if last else "not started"
        verdict = (f"stopped responding {now - self._alive[stalled][1]:.0f} s ago" if stalled in frozen
                   else f"made no progress for {ages[stalled]:.0f} s")
        return (f"rank {stalled} {verdict} (last: {doing}) and no rank has progressed for "
                f"{min(ages.values()):.0f} s (TRAIN.STALL_TIMEOUT_S={self.timeout_s:g}): stopping every rank; "
                f"the newest checkpoint is kept, continue with --resume auto")

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                message = self.check()
            except Exception:        # publishing failed: the store is gone; the others will see this rank age
                continue
            if message is not None:
                self.on_stall(message)
                return

    def start(self) -> "Watchdog":
        self._thread = threading.Thread(target=self._watch, name="pixelface-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
