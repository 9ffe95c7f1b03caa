"""Process-level settings that make CPU training fast on small machines."""
from __future__ import annotations

import ctypes
import os
import platform
import time
from dataclasses import dataclass


def tune_glibc_malloc(threshold: int = 1 << 30) -> bool:
    """Keep freed large blocks in the heap: mallopt(M_MMAP_THRESHOLD / M_TRIM_THRESHOLD, threshold).

    By default glibc returns every large tensor to the OS when it is freed and page-faults it back in
    on the next allocation; a training step allocates the same sizes over and over, and on CPU that
    churn costs 12-40% of the time (measured with scripts/benchmark.py). Returns False where glibc is
    absent (macOS, musl), which changes nothing.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, threshold)) and bool(libc.mallopt(m_trim_threshold, threshold))


def processes_on_this_machine() -> int:
    """How many ranks torchrun started here, known before the process group exists."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


def cores_available() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one).

    Read from the OS, not torch.get_num_threads(): torchrun sets OMP_NUM_THREADS=1 in every rank.
    """
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_threads_per_rank() -> int:
    """An equal share of the cores for each rank on this machine (at least one)."""
    return max(1, cores_available() // processes_on_this_machine())


def _cpuinfo(field: str) -> str | None:
    """The value of the first `field` line of /proc/cpuinfo (Linux), or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else platform.processor()): every speed figure names it, since
    kernels and their ratios differ between CPU families."""
    return _cpuinfo("model name") or platform.processor() or "unknown"


def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic units (AVX512-BF16 or AMX; Linux /proc/cpuinfo flags)."""
    return bool(set((_cpuinfo("flags") or "").split()) & {"avx512_bf16", "amx_bf16"})


def machine_busy_seconds() -> float | None:
    """CPU seconds every core of the machine has spent busy since boot (Linux /proc/stat: user, nice, system,
    irq, softirq, steal), or None elsewhere. The difference over an interval, minus this process's own CPU
    time, is what other processes and the kernel's own threads (page zeroing, compaction) took meanwhile."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass
class LoadWindow:
    """What the rest of the machine did while one piece of code ran: `foreign` is the share of every core's
    time (0..1) taken by anything but this process; None where the OS does not say."""
    wall_s: float
    cpu_s: float
    foreign: float | None


class load_window:
    """Context manager timing its block: wall seconds, this process's CPU seconds and the foreign load."""

    def __enter__(self) -> "load_window":
        self.start, self.start_cpu, self.start_busy = time.perf_counter(), time.process_time(), machine_busy_seconds()
        return self

    def __exit__(self, *exc) -> None:
        wall, cpu = time.perf_counter() - self.start, time.process_time() - self.start_cpu
        busy = machine_busy_seconds()
        foreign = None
        if busy is not None and self.start_busy is not None and wall > 0:
            # /proc/stat counts in clock ticks (10 ms): clamp the rounding below zero away
            foreign = max(0.0, (busy - self.start_busy - cpu) / (wall * (os.cpu_count() or 1)))
        self.result = LoadWindow(wall, cpu, foreign)


def settle_machine(max_wait_s: float, quiet: float = 0.05, window_s: float = 1.0) -> tuple[float, float | None]:
    """Wait, idle, until a `window_s` window in which the machine's cores were busy less than `quiet` of the
    time (other processes, or the kernel still zeroing and compacting memory this process just freed), at
    most `max_wait_s`. Returns (seconds waited, the last window's busy share; None where the OS does not say)."""
    waited, busy = 0.0, None
    while waited < max_wait_s:
        with load_window() as window:
            time.sleep(window_s)
        waited += window.result.wall_s
        busy = window.result.foreign
        if busy is None or busy < quiet:
            break
    return waited, busy
