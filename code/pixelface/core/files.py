"""Writing files so that a crash never leaves half of one: write a temporary file next to the target,
flush it to disk, then rename it over the target (atomic on POSIX and Windows). Every file this package
writes goes through atomic_write; runs.remove_stale_temporaries cleans up after a killed save."""
from __future__ import annotations

import json
import os
import hashlib
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """write(temporary path) next to `path`, then rename it to `path`. The temporary file is named
    .<name>.<pid>.tmp, so concurrent writers never share one, and it is removed if `write` fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:       # what was written reaches the disk before the rename
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
