"""Real-image features, cached on disk per dataset / split / extractor / size / count."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Callable

import numpy as np

from pixelface.core.config import project_home, resolve_path
from pixelface.core.files import write_bytes_atomic
from pixelface.evaluation.formulas import feature_stats


def default_cache_dir() -> Path:
    return project_home() / "data" / ".cache" / "metrics"


def safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def real_stats_key(cfg, split: str, ids: list[str], extractor_name: str) -> str:
    """Cache key: dataset name, split, extractor, image size, image count, and a hash of the dataset folder and
    the image ids, so a re-rendered or re-split dataset never reuses stale statistics."""
    h = hashlib.sha1(str(resolve_path(cfg, "DATA.ROOT")).encode())
    h.update("\n".join(ids).encode())
    return safe_name(f"{cfg.DATA.NAME}-{split}-{extractor_name}-{cfg.DATA.IMAGE_SIZE}px-n{len(ids)}-"
                      f"{h.hexdigest()[:10]}")


class StatsCache:
    """Features of real images in `<root>/<key>.npz` (features, mean, covariance), written atomically."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in ("features", "mu", "sigma")}
        except (OSError, ValueError, KeyError):  # a damaged entry is recomputed, never trusted
            return None

    def save(self, key: str, entry: dict[str, np.ndarray]) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **entry)
        write_bytes_atomic(self.path(key), buffer.getvalue())

    def get_or_compute(self, key: str, compute: Callable[[], np.ndarray]) -> dict[str, np.ndarray]:
        """{features, mu, sigma} from the cache, or from `compute()` -> (N,D) features, then cached."""
        entry = self.load(key)
        if entry is None:
            features = np.asarray(compute(), dtype=np.float32)
            mu, sigma = feature_stats(features)
            entry = {"features": features, "mu": mu, "sigma": sigma}
            self.save(key, entry)
        return entry
