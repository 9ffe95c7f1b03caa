"""Make what a config needs but the machine lacks: the synthetic dataset and the small CLIP.

This is what lets the default run start on a fresh clone with no downloads: DATA.SYNTHESIZE renders
synthface into DATA.ROOT, and TEXT.PRETRAIN_IF_MISSING pretrains a TEXT.CUSTOM CLIP into the local file
TEXT.PRETRAINED names. Anything already present is used as it is.
"""
from __future__ import annotations

from pixelface.core.config import ConfigError, resolve_path
from pixelface.data.datasets import INDEX_NAME
from pixelface.data.synthface import unfinished_render, write_dataset
from pixelface.training.clip_pretrain import pretrain_clip


def dataset_missing(cfg) -> bool:
    return not (resolve_path(cfg, "DATA.ROOT") / cfg.DATA.INDEX).is_file()


def clip_missing(cfg) -> bool:
    return cfg.TEXT.MODEL == "custom" and bool(cfg.TEXT.PRETRAINED) and not resolve_path(cfg, "TEXT.PRETRAINED").exists()


def prepare_inputs(cfg, log=print) -> None:
    """Render synthface and/or pretrain the small CLIP when the config asks for them and they are missing."""
    if cfg.DATA.SYNTHESIZE and dataset_missing(cfg):
        if cfg.DATA.INDEX != INDEX_NAME:
            raise ConfigError(f"DATA.SYNTHESIZE writes {INDEX_NAME}, but DATA.INDEX = {cfg.DATA.INDEX!r}")
        root = resolve_path(cfg, "DATA.ROOT")
        if root.is_dir() and any(root.iterdir()) and not unfinished_render(root):
            raise ConfigError(f"DATA.ROOT = {str(root)!r} is not empty and holds no {cfg.DATA.INDEX}: "
                              f"DATA.SYNTHESIZE renders only into a missing or empty folder (or one it left "
                              f"unfinished); choose another DATA.ROOT or set DATA.SYNTHESIZE false")
        log(f"rendering {cfg.DATA.SYNTH_NUM} synthetic faces at {cfg.DATA.SYNTH_SIZE} px into {root}")
        write_dataset(root, cfg.DATA.SYNTH_NUM, cfg.DATA.SYNTH_SIZE, cfg.DATA.SYNTH_SEED,
                      force=unfinished_render(root))
    if cfg.TEXT.PRETRAIN_IF_MISSING and clip_missing(cfg):
        out = resolve_path(cfg, "TEXT.PRETRAINED")
        log(f"pretraining the small CLIP into {out}")
        pretrain_clip(cfg, out, log=log)
