"""Saving and loading: training states for exact resume, and generator snapshots for sampling.

A training checkpoint holds everything needed to continue bit-for-bit (networks, optimisers, counters,
every RNG state, the config); the same file also holds everything needed to sample (G_ema and the config
that rebuilds it), so one file serves both.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch

from .config import ConfigError, from_plain

FORMAT = "pixelface-checkpoint"


def atomic_save(obj, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_formatted(path: str | Path, fmt: str, what: str, error=ValueError, map_location="cpu") -> dict:
    """A dict saved by this project with {"format": fmt, ...}, read with weights_only (no pickled code runs).

    One error for every way the file can be wrong (missing, truncated, foreign), naming the file and
    `what` it should have been.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, foreign or corrupt files all land here
        raise error(f"{what} {path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise error(f"{path} is not a {what} (missing format={fmt!r})")
    return data


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load one of our training checkpoints."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return load_formatted(path, FORMAT, "PixelFace+ checkpoint", map_location=map_location)


def file_hash(path: str | Path, length: int = 12) -> str:
    """Short sha256 of a file, recorded next to generated samples."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


def load_generator(path: str | Path, device="cpu"):
    """(G_ema in eval mode, the run's config) from a checkpoint, ready for sampling."""
    from .generator import Generator

    ckpt = load_checkpoint(path)
    try:
        cfg = from_plain(ckpt["config"])
    except ConfigError as e:
        raise ValueError(f"checkpoint {path}: its config does not match this code ({e})") from None
    g_ema = Generator.from_config(cfg)
    try:
        g_ema.load_state_dict(ckpt["G_ema"])
    except RuntimeError as e:
        raise ValueError(f"checkpoint {path}: G_ema does not fit the architecture its config describes "
                         f"({str(e).splitlines()[0]})") from None
    return g_ema.to(device).eval().requires_grad_(False), cfg
