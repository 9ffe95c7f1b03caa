"""Run folders: <out>/<CONFIG_NAME>-<NNNNN>, each holding config.yaml, checkpoints/, samples/, logs.

What a run folder guarantees (README "Failure behaviour"):
* one training at a time: rank 0 holds an exclusive lock on <run>/.lock for the life of the run;
* checkpoints are written atomically and `checkpoints/latest` names the newest; a kill at any moment
  leaves a loadable checkpoint, and the temporary files of a killed save are removed on the next start;
* a resume names which checkpoint it continues from, and nothing in the folder is written before that
  checkpoint has been read and found to fit the config.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pixelface.core.config import ConfigError, plain_name_problem
from pixelface.core.files import TEMPORARY_NAME, FolderLock
from pixelface.networks.checkpoint import load_checkpoint

CHECKPOINT_GLOB = "ckpt-*.pt"
_RUN_NUMBER = r"-(\d{5})"


class RunFolderError(ConfigError):
    """A run folder cannot be used: in use, not a run folder, or no readable checkpoint."""


@dataclass
class ResumePlan:
    """Where a training continues: run_dir None = a new run folder; checkpoint None = from scratch."""
    run_dir: Path | None
    checkpoint: Path | None
    note: str = ""               # what was chosen and why, for the log


def new_run_dir(out: Path, name: str) -> Path:
    """<out>/<name>-<NNNNN> with the next free number (stylegan2-ada style)."""
    problem = plain_name_problem(name)
    if problem:
        raise ConfigError(f"CONFIG_NAME: {problem}")
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file, expected a folder for run folders")
    out.mkdir(parents=True, exist_ok=True)
    while True:   # another process may take a number between the listing and the mkdir
        numbers = [int(m.group(1)) for d in out.iterdir()
                   if (m := re.fullmatch(re.escape(name) + _RUN_NUMBER, d.name))]
        run_dir = out / f"{name}-{max(numbers, default=-1) + 1:05d}"
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file()


def checkpoint_candidates(run_dir: Path) -> list[Path]:
    """The run's checkpoints, newest first: the one `latest` names, then the others by image count."""
    folder = run_dir / "checkpoints"
    found = sorted(folder.glob(CHECKPOINT_GLOB), reverse=True) if folder.is_dir() else []
    pointer = folder / "latest"
    if pointer.is_file():
        named = folder / pointer.read_text().strip()
        if named in found:
            found.remove(named)
            found.insert(0, named)
    return found


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint `checkpoints/latest` names, when it exists (no reading)."""
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = run_dir / "checkpoints" / pointer.read_text().strip()
    return path if path.is_file() else None


def newest_readable_checkpoint(run_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint of the run that loads, and one line per newer one that did not."""
    skipped = []
    for path in checkpoint_candidates(run_dir):
        try:
            load_checkpoint(path)
            return path, skipped
        except (ValueError, OSError) as e:
            skipped.append(str(e))
    return None, skipped


def _resume_from_run(run_dir: Path, asked: str) -> ResumePlan:
    ckpt, skipped = newest_readable_checkpoint(run_dir)
    if ckpt is None:
        why = f" ({'; '.join(skipped)})" if skipped else ""
        raise RunFolderError(f"--resume {asked}: run folder {run_dir} holds no readable checkpoint{why}")
    note = f"resuming {run_dir} from {ckpt.name}"
    if skipped:
        note += f"; skipped {len(skipped)} newer unreadable checkpoint(s): {'; '.join(skipped)}"
    return ResumePlan(run_dir, ckpt, note)


def plan_resume(out: Path, name: str, resume: str | None) -> ResumePlan:
    """What --resume auto|RUN_DIR|CHECKPOINT means here (reads, never writes).

    auto: the newest run of `name` under `out` that holds a readable checkpoint (a new run when `out`
    holds no run of that name). RUN_DIR: its newest readable checkpoint. A checkpoint inside a run's
    checkpoints/: that run, from that file. Any other checkpoint file: a new run initialised from it.
    """
    if not resume:
        return ResumePlan(None, None)
    if resume == "auto":
        runs = sorted(d for d in out.glob(f"{name}-*")
                      if re.fullmatch(re.escape(name) + _RUN_NUMBER, d.name) and is_run_dir(d)) \
            if out.is_dir() else []
        for run_dir in reversed(runs):
            if checkpoint_candidates(run_dir):
                return _resume_from_run(run_dir, resume)
        return ResumePlan(None, None, f"--resume auto: no checkpoint of {name} under {out}; starting a new run")
    path = Path(resume)
    if path.is_dir():
        if not is_run_dir(path):
            raise RunFolderError(f"--resume {resume}: {path} is not a run folder (no config.yaml)")
        return _resume_from_run(path, resume)
    if not path.is_file():
        raise RunFolderError(f"--resume {resume}: no such checkpoint or run folder")
    load_checkpoint(path)   # readable, ours (raises naming the file otherwise)
    run_dir = path.parent.parent
    if path.parent.name == "checkpoints" and is_run_dir(run_dir):
        return ResumePlan(run_dir, path, f"resuming {run_dir} from {path.name}")
    return ResumePlan(None, path, f"starting a new run initialised from {path}")


class RunLock(FolderLock):
    """Exclusive lock on a run folder for a training's life (pixelface.core.files.FolderLock)."""

    def __init__(self, run_dir: Path):
        super().__init__(run_dir, f"run folder {run_dir} is in use by another training; wait for it to end or "
                                  f"resume another run")
        self.run_dir = run_dir


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary files of saves that were killed midway; returns them. Only names atomic_write alone
    produces (.<name>.<pid>.pixelface-tmp) are touched: a user's own .tmp files stay."""
    stale = [p for folder in (run_dir, run_dir / "checkpoints") if folder.is_dir()
             for p in folder.iterdir() if TEMPORARY_NAME.match(p.name) and p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale

