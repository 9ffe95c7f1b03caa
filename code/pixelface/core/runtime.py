"""Process-level settings that make CPU training fast on small machines."""
from __future__ import annotations

import ctypes
import os
import platform


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
