"""Saving and loading: training states for exact resume, and generator snapshots for sampling.

A training checkpoint holds everything needed to continue bit-for-bit (networks, optimisers, counters,
every RNG state, the config); the same file also holds everything needed to sample (G_ema and the config
that rebuilds it), so one file serves both.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import safetensors.torch
import torch

from pixelface.core.config import ConfigError, from_plain
from pixelface.core.files import atomic_write, file_hash
from pixelface.networks.generator import Generator

FORMAT = "pixelface-checkpoint"
# An exported model: a folder with G_ema's tensors as safetensors and a JSON holding the config (which pins
# the CLIP file's sha256). No pickle anywhere, so it can be shared and loaded without trusting its author.
EXPORT_FORMAT = "pixelface-model"
EXPORT_WEIGHTS = "g_ema.safetensors"
EXPORT_CONFIG = "pixelface.json"


def atomic_save(obj, path: str | Path) -> None:
    """torch.save, atomically (a crash never leaves half a file)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


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
        reason = (str(e).strip().splitlines() or ["empty or truncated file"])[0]
        raise error(f"{what} {path} cannot be read ({type(e).__name__}: {reason})") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise error(f"{path} is not a {what} (missing format={fmt!r})")
    return data


def load_checkpoint(path: str | Path, map_location="cpu", needs: tuple[str, ...] = ("config", "G_ema")) -> dict:
    """Load one of our training checkpoints, refusing one that lacks any of the entries `needs`."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    data = load_formatted(path, FORMAT, "PixelFace+ checkpoint", map_location=map_location)
    missing = [key for key in needs if key not in data]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {', '.join(missing)}: it is damaged or was edited; use another "
                         f"checkpoint of the run")
    return data


def check_weights(state: dict, source: str, expected: dict | None = None) -> None:
    """Refuse weights that would silently poison every image: a tensor that is complex, or not floating point where
    `expected` (the model's own state dict) has a floating-point one, or that holds NaN or inf. One error naming the
    first such tensor and `source`."""
    for name, tensor in state.items():
        if not torch.is_tensor(tensor):
            continue
        want = None if expected is None else expected.get(name)
        if tensor.is_complex() or (want is not None and want.is_floating_point() and not tensor.is_floating_point()):
            raise ValueError(f"{source}: tensor {name} is {str(tensor.dtype).replace('torch.', '')}; expected real "
                             f"floating-point weights")
        if tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise ValueError(f"{source}: tensor {name} holds {bad} non-finite value{'s' * (bad > 1)} (NaN or "
                                 f"inf) of {tensor.numel()}; the weights are damaged")


def export_model(ckpt_path: str | Path, out_dir: str | Path, overwrite: bool = False,
                 before_writing: Callable[[list[Path]], None] | None = None) -> list[Path]:
    """Write G_ema and its config from training checkpoint `ckpt_path` into the folder `out_dir`, as
    EXPORT_WEIGHTS (safetensors) and EXPORT_CONFIG (JSON). Existing files are kept unless `overwrite`.
    before_writing(targets) runs once the checkpoint is read and checked, before anything is written (the
    command claims the folder there, so a bad input leaves no folder behind)."""
    out_dir = Path(out_dir)
    targets = [out_dir / EXPORT_WEIGHTS, out_dir / EXPORT_CONFIG]
    if Path(ckpt_path).resolve() in {p.resolve() for p in (out_dir, *targets)}:
        raise ValueError(f"--out {out_dir} would overwrite the model being exported ({ckpt_path}); choose another folder")
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{' and '.join(existing)} already exist; pass --force to replace them")
    g_ema, _ = load_generator(ckpt_path)   # checks that the weights fit the config before anything is written
    ckpt = load_checkpoint(ckpt_path)
    if before_writing is not None:
        before_writing(targets)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in g_ema.state_dict().items()}
    atomic_write(targets[0], lambda tmp: safetensors.torch.save_file(tensors, tmp, metadata={"format": EXPORT_FORMAT}))
    record = {"format": EXPORT_FORMAT, "config": ckpt["config"],
              "source": {"file": Path(ckpt_path).name, "sha256": file_hash(ckpt_path, length=64),
                         "nimg": ckpt.get("progress", {}).get("nimg")}}
    atomic_write(targets[1], lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1) + "\n"))
    return targets


def _read_export(folder: Path) -> tuple[dict, dict]:
    """(config tree, G_ema state dict) of an exported model folder, each file checked for what it is."""
    config_path, weights_path = folder / EXPORT_CONFIG, folder / EXPORT_WEIGHTS
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not an exported model: {path.name} is missing "
                                    f"(write one with scripts/export_model.py)")
    try:
        record = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{config_path}: not valid JSON ({e})") from None
    if not isinstance(record, dict) or record.get("format") != EXPORT_FORMAT or "config" not in record:
        raise ValueError(f"{config_path}: not a {EXPORT_FORMAT} config (format {record.get('format')!r})"
                         if isinstance(record, dict) else f"{config_path}: expected a JSON object")
    try:
        state = safetensors.torch.load_file(weights_path)
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{weights_path}: not a readable safetensors file ({e})") from None
    return record["config"], state


def checkpoint_hash(path: str | Path, length: int = 12) -> str:
    """Short sha256 of a checkpoint file, or of an exported model folder's weights."""
    path = Path(path)
    return file_hash(path / EXPORT_WEIGHTS if path.is_dir() else path, length)



def load_generator(path: str | Path, device="cpu"):
    """(G_ema in eval mode, the run's config) from a training checkpoint or an exported model folder."""

    if Path(path).is_dir():
        tree, state = _read_export(Path(path))
    else:
        ckpt = load_checkpoint(path)
        tree, state = ckpt["config"], ckpt["G_ema"]
    try:
        cfg = from_plain(tree)
    except ConfigError as e:
        raise ValueError(f"checkpoint {path}: its config does not match this code ({e})") from None
    g_ema = Generator.from_config(cfg)
    check_weights(state, f"checkpoint {path}: G_ema", g_ema.state_dict())
    try:
        g_ema.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"checkpoint {path}: G_ema does not fit the architecture its config describes "
                         f"({str(e).splitlines()[0]})") from None
    return g_ema.to(device).eval().requires_grad_(False), cfg
