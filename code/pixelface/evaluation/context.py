"""The evaluation context: what the metrics share (networks, dataset, generated images, collected features,
recorded settings), and how its images are generated."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pixelface.core.config import resolve_path
from pixelface.evaluation.extractors import ClipImageExtractor, InceptionExtractor, ParserExtractor
from pixelface.evaluation.stats_cache import StatsCache, real_stats_key
from pixelface.networks import generation


@torch.no_grad()
def generate_images(g_ema, cfg, text_encoder, batch: dict, samples: list[int], seed: int) -> torch.Tensor:
    """G_ema's images for a batch of dataset items (their real masks and fixed captions); sample k is drawn
    with seed generation.image_seed(seed, k), the rule of pixelface.networks.generation. -> (B,3,S,S) on G's device."""
    seeds = [generation.image_seed(seed, k) for k in samples]
    return generation.generate(g_ema, text_encoder, batch["mask"], list(batch["caption"]),
                               seeds, batch_size=len(seeds))


def no_heartbeat(what: str) -> None:
    """The heartbeat of an evaluation that nothing watches."""


@dataclass
class EvalContext:
    g_ema: torch.nn.Module
    cfg: object
    text_encoder: torch.nn.Module
    dataset: torch.utils.data.Dataset
    split: str
    num: int
    seeds: list[int]
    batch_size: int
    device: torch.device
    cache: StatsCache
    parser_path: Path
    inception_path: Path | None
    settings: dict = field(default_factory=dict)      # choices recorded next to the numbers
    samples: list[dict] = field(default_factory=list)  # sample number, image id, caption of the main set
    collected: dict = field(default_factory=dict)     # need -> what its collector gathered in the main pass
    _extractors: dict = field(default_factory=dict)
    heartbeat: Callable[[str], None] = no_heartbeat    # told what is being done, batch by batch (training watchdog)

    def extractor(self, kind: str):
        """The 'inception', 'clip' or 'parser_features' feature extractor, built once."""
        if kind not in self._extractors:
            if kind == "inception":
                self._extractors[kind] = InceptionExtractor(self.inception_path, self.device)
            elif kind == "parser_features":
                self._extractors[kind] = ParserExtractor(self.parser_path, self.device)
            else:
                self._extractors[kind] = ClipImageExtractor(self.text_encoder, self.cfg.TEXT.MODEL)
            self.settings.setdefault("extractors", {})[kind] = self._extractors[kind].name
        return self._extractors[kind]

    def real(self, kind: str) -> dict[str, np.ndarray]:
        """{features, mu, sigma} of every real image of the split under extractor `kind`, via the cache."""
        extractor = self.extractor(kind)
        ids = list(self.dataset.ids)
        self.settings["num_real"] = len(ids)

        def compute():
            return torch.cat([extractor(batch["image"]) for _, batch in self.batches(range(len(ids)))]).numpy()
        return self.cache.get_or_compute(real_stats_key(self.cfg, self.split, ids, extractor.name), compute)

    def batches(self, samples):
        """(sample numbers, collated dataset items) in batches; sample k shows item k mod len(dataset)."""
        samples = list(samples)
        items = torch.utils.data.Subset(self.dataset, [k % len(self.dataset) for k in samples])
        loader = torch.utils.data.DataLoader(items, batch_size=self.batch_size, shuffle=False,
                                             num_workers=self.cfg.DATA.NUM_WORKERS)
        start = 0
        for batch in loader:
            self.heartbeat(f"evaluation batch at sample {samples[start] if samples else 0}")
            count = batch["labels"].shape[0]
            yield samples[start:start + count], batch
            start += count

    def generate(self, samples, seed: int):
        """(sample numbers, batch, generated images clamped to [-1,1] on the CPU) in batches; G works at the
        dataset's size (it takes the masks at its own resolution), so fakes and reals compare like with like."""
        for ks, batch in self.batches(samples):
            images = generate_images(self.g_ema, self.cfg, self.text_encoder, batch, ks, seed)
            yield ks, batch, images.float().clamp(-1, 1).cpu()

    def attributes_path(self) -> Path:
        return resolve_path(self.cfg, "DATA.ROOT") / "attributes.json"
