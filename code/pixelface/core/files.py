"""Writing files so that a crash never leaves half of one: write a temporary file next to the target,
flush it to disk, then rename it over the target (atomic on POSIX and Windows). Every file this package
writes goes through atomic_write; runs.remove_stale_temporaries cleans up after a killed save, and only
files whose names this writer alone produces (TEMPORARY_NAME)."""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Callable

try:
    import fcntl
except ImportError:          # not POSIX: no claims, the rest works
    fcntl = None

TEMPORARY_SUFFIX = ".pixelface-tmp"
TEMPORARY_NAME = re.compile(r"^\..+\.\d+" + re.escape(TEMPORARY_SUFFIX) + "$")   # .<name>.<pid>.pixelface-tmp


def temporary_path(path: Path) -> Path:
    """Where atomic_write writes `path` first: .<name>.<pid>.pixelface-tmp beside it."""
    return path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}")


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """write(temporary path) next to `path`, then rename it to `path`. The temporary file is named
    .<name>.<pid>.pixelface-tmp, so concurrent writers never share one, and it is removed if `write` fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        write(tmp)
        with open(tmp, "rb") as f:       # what was written reaches the disk before the rename
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as e:
        if isinstance(e, OSError) or not _failed_write(e):
            raise
        # torch.save and safetensors report a full disk or a vanished folder in their own exception types
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise OSError(f"could not write {path} ({reason}); nothing was replaced, any earlier {path.name} is kept") from e
    finally:
        tmp.unlink(missing_ok=True)


def _failed_write(error: Exception) -> bool:
    """Whether a library's non-OSError exception is its report of a failed write (not a bug of ours)."""
    return isinstance(error, RuntimeError) or type(error).__name__ == "SafetensorError"


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text_atomic(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json_atomic(path: str | Path, obj) -> None:
    """`obj` as indented JSON text with a final newline."""
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def file_hash(path: str | Path, length: int = 12) -> str:
    """Short sha256 of a file, recorded next to generated samples."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


class FolderInUse(OSError):
    """Another process holds the folder (a training on its run folder, a writer on its output folder)."""


class FolderLock:
    """An exclusive claim on a folder (flock on the directory itself), held until release() or process exit: the OS
    drops it when the holder dies, and nothing is written into the folder for it. `busy` is the error message when
    another process holds it."""

    def __init__(self, folder: Path, busy: str):
        self.folder, self.busy = Path(folder), busy
        self._fd = None

    def acquire(self) -> "FolderLock":
        fd = os.open(self.folder, os.O_RDONLY)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                holder = lock_holder(self.folder)
                raise FolderInUse(f"{self.busy} (held by {holder})" if holder else self.busy) from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)          # closing drops the flock
            self._fd = None


def lock_holder(folder: Path) -> str | None:
    """'process PID (its command line)' holding a flock on `folder`, read from Linux's /proc/locks (None elsewhere
    or when it cannot be told)."""
    try:
        st = os.stat(folder)
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == device and fields[4].isdigit():
            pid = int(fields[4])
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                command = ""
            return f"process {pid}" + (f" ({command.strip()[:120]})" if command.strip() else "")
    return None


_OUTPUT_CLAIMS: dict[Path, FolderLock] = {}


def claim_output_folder(folder: Path) -> None:
    """Hold `folder` for the rest of this process, so two commands writing into one folder cannot replace each
    other's files: the second stops at once, naming it (FolderInUse)."""
    key = Path(folder).resolve()
    if key not in _OUTPUT_CLAIMS:
        _OUTPUT_CLAIMS[key] = FolderLock(key, f"output folder {folder} is being written by another process; wait "
                                              f"for it to end or choose another output").acquire()
