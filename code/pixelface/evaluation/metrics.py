"""Evaluation of generated faces: the metric formulas, the feature extractors, cached real-image statistics and
`evaluate_generator`, which both scripts/evaluate.py and the training loop's periodic hook call.

Metrics live in a registry (name -> function of an `EvalContext` returning a dict of floats), in the manner of
stylegan2-ada's metric_main. Every generated image is drawn from its own seed, derived from its sample number
and the pass's seed (pixelface.networks.generation), so neither the batch size nor the number of images changes any
image, and scripts/sample.py redraws any of them.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from pixelface.core.config import project_home
from pixelface.data.datasets import FaceDataset
from pixelface.evaluation.collectors import COLLECTORS, check_need
from pixelface.evaluation.context import EvalContext, no_heartbeat
from pixelface.evaluation.registry import METRICS
from pixelface.evaluation.stats_cache import StatsCache, safe_name


def select_metrics(ctx: EvalContext, names: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """(metrics to compute, {skipped metric: why}). names=None: every registered metric this machine and
    dataset allow; named metrics that cannot be computed raise their error instead."""
    if names is not None:
        unknown = [n for n in names if n not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; available: {', '.join(METRICS)}")
        for name in names:
            for need in METRICS[name].needs:
                check_need(ctx, need)
        return list(dict.fromkeys(names)), {}
    selected, skipped = [], {}
    for name, metric in METRICS.items():
        try:
            for need in metric.needs:
                check_need(ctx, need)
            selected.append(name)
        except (FileNotFoundError, ValueError) as e:
            skipped[name] = str(e)
    return selected, skipped


def default_parser_path(cfg) -> Path:
    """models/parser_<DATA.NAME>.pt in the project home, where scripts/train_parser.py's documented command
    puts it."""
    return project_home() / "models" / f"parser_{safe_name(cfg.DATA.NAME)}.pt"


def evaluate_generator(g_ema, cfg, text_encoder, *, split: str = "test", num: int = 1000,
                       metrics: list[str] | None = None, seeds=(0,), batch_size: int = 16, device="cpu",
                       parser_path: str | Path | None = None, cache_dir: str | Path | None = None,
                       inception_path: str | Path | None = None, progress: bool = False,
                       heartbeat: Callable[[str], None] | None = None) -> dict:
    """Generate `num` images from the split's real masks and fixed captions (caption slot DATA.EVAL_CAPTION;
    sample k shows item k mod the split size, with seed seeds[0]) and compute `metrics` (None: all available).

    device: where the extractors and the parser run (G and the text encoder stay where they are).
    parser_path: default models/parser_<DATA.NAME>.pt. cache_dir: real statistics (default data/.cache/metrics).
    Both defaults, and models/ below, are in project_home().
    inception_path: the Inception weights (default: models/ or the torch hub cache).
    progress: a progress bar over the generated set and a line per metric, on stderr.
    heartbeat: called with what is being done at every batch and metric (the training watchdog's beat).
    Returns {"metrics": {name: float}, "skipped": {metric: why}, "settings": {...}, "samples": [{sample, id,
    caption}]}; the training hook logs result["metrics"].
    """

    if num < 2 or batch_size < 1 or not seeds:
        raise ValueError(f"evaluation needs num >= 2 ({num}), batch_size >= 1 ({batch_size}) and a seed ({seeds})")
    started = time.time()
    dataset = FaceDataset(cfg, split, train=False)
    ctx = EvalContext(g_ema, cfg, text_encoder, dataset, split, num, [int(s) for s in seeds], batch_size,
                      torch.device(device), StatsCache(cache_dir), Path(parser_path or default_parser_path(cfg)),
                      Path(inception_path) if inception_path else None, heartbeat=heartbeat or no_heartbeat)
    ctx.settings.update(dataset=cfg.DATA.NAME, split=split, num=num, seeds=ctx.seeds, batch_size=batch_size,
                        caption_slot=cfg.DATA.EVAL_CAPTION, image_size=cfg.DATA.IMAGE_SIZE,
                        split_images=len(dataset))
    names, skipped = select_metrics(ctx, metrics)
    was_training = g_ema.training
    g_ema.eval()  # GCMF dropout off
    try:
        _collect_main_set(ctx, {need for name in names for need in METRICS[name].needs if need in COLLECTORS},
                          progress)
        results = {}
        for name in names:
            ctx.heartbeat(f"evaluation: {name}")
            if progress:
                print(f"evaluation: {name}", file=sys.stderr, flush=True)
            results.update(METRICS[name].compute(ctx))
    finally:
        g_ema.train(was_training)
    ctx.settings["seconds"] = round(time.time() - started, 1)
    return {"metrics": results, "skipped": skipped, "settings": ctx.settings, "samples": ctx.samples}


def _collect_main_set(ctx: EvalContext, needs: set[str], progress: bool) -> None:
    collectors = {need: COLLECTORS[need](ctx) for need in sorted(needs)}
    bar = tqdm(total=ctx.num, desc="evaluation: generating", unit="img", disable=not progress, file=sys.stderr)
    for ks, batch, images in ctx.generate(range(ctx.num), ctx.seeds[0]):
        bar.update(len(ks))
        ctx.samples += [{"sample": k, "id": i, "caption": c} for k, i, c in zip(ks, batch["id"], batch["caption"])]
        for collector in collectors.values():
            collector.update(images, batch)
    bar.close()
    ctx.collected = {need: collector.value() for need, collector in collectors.items()}


# ---------------------------------------------------------------------------------------------------------------
