"""Make what a config needs but the machine lacks: the synthetic dataset and the small CLIP.

This is what lets the default run start on a fresh clone with no downloads: DATA.SYNTHESIZE renders
synthface into DATA.ROOT, and TEXT.PRETRAIN_IF_MISSING pretrains a TEXT.CUSTOM CLIP into the local file
TEXT.PRETRAINED names. Anything already present is used as it is.
"""
from __future__ import annotations

from .config import resolve_path
from .datasets import INDEX_NAME


def dataset_missing(cfg) -> bool:
    return not (resolve_path(cfg, "DATA.ROOT") / cfg.DATA.INDEX).is_file()


def clip_missing(cfg) -> bool:
    return cfg.TEXT.MODEL == "custom" and bool(cfg.TEXT.PRETRAINED) and not resolve_path(cfg, "TEXT.PRETRAINED").exists()


def prepare_inputs(cfg, log=print) -> None:
    """Render synthface and/or pretrain the small CLIP when the config asks for them and they are missing."""
    if cfg.DATA.SYNTHESIZE and dataset_missing(cfg):
        from .synthface import write_dataset

        if cfg.DATA.INDEX != INDEX_NAME:
            raise ValueError(f"DATA.SYNTHESIZE writes {INDEX_NAME}, but DATA.INDEX = {cfg.DATA.INDEX!r}")
        root = resolve_path(cfg, "DATA.ROOT")
        log(f"rendering {cfg.DATA.SYNTH_NUM} synthetic faces at {cfg.DATA.SYNTH_SIZE} px into {root}")
        write_dataset(root, cfg.DATA.SYNTH_NUM, cfg.DATA.SYNTH_SIZE, cfg.DATA.SYNTH_SEED, force=True)
    if cfg.TEXT.PRETRAIN_IF_MISSING and clip_missing(cfg):
        from .clip_pretrain import pretrain_clip

        out = resolve_path(cfg, "TEXT.PRETRAINED")
        log(f"pretraining the small CLIP into {out}")
        pretrain_clip(cfg, out, log=log)
