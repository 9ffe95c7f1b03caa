"""Evaluation of generated faces: the metric formulas, the feature extractors, cached real-image statistics and
`evaluate_generator`, which both scripts/evaluate.py and the training loop's periodic hook call.

Metrics live in a registry (name -> function of an `EvalContext` returning a dict of floats), in the manner of
stylegan2-ada's metric_main. Every generated image is drawn from its own seed, derived from its sample number
and the pass's seed (pixelface.generation), so neither the batch size nor the number of images changes any
image, and scripts/sample.py redraws any of them.
"""
from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from pixelface.config import project_home, resolve_path
from pixelface.datasets import FaceDataset
from pixelface import generation
from pixelface.files import write_bytes_atomic
from pixelface.images import to_uint8
from pixelface.masks import LABEL_ID, NUM_CLASSES, accuracy_from_confusion, confusion_matrix, one_hot
from pixelface.parser import load_parser
from pixelface.synthface import COLOR_ONLY, caption_attributes, predict_attributes

# ---------------------------------------------------------------------------------------------------------------
# Formulas: plain functions of features, embeddings and label maps


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """(N,D) features -> (mean (D,), covariance (D,D)) in float64, as FID uses them."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"feature_stats needs (N,D) features with N >= 2, got shape {x.shape}")
    return x.mean(0), np.cov(x, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2):
    |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"frechet_distance: shapes differ, mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}")
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        # A singular product (fewer samples than dimensions) has no stable root; nudge both diagonals.
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        # Round-off gives tiny imaginary parts; a large one means the input was not a covariance.
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"frechet_distance: imaginary component {np.abs(covmean.imag).max():.3g} in the "
                             f"matrix square root")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # The KID kernel of Binkowski et al.: (x.y / d + 1)^3.
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    m = x.shape[0]
    k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / (m * m))


def kid(features1, features2, subsets: int = 100, subset_size: int = 1000,
        generator: np.random.Generator | None = None) -> tuple[float, float]:
    """Kernel Inception Distance: (mean, std) of the unbiased polynomial-kernel MMD^2 over `subsets` random
    subsets of `subset_size` rows of each set (torch-fidelity's defaults). The subset size is capped at the
    smaller set, so small evaluations still give a (noisier) number."""
    x, y = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    m = min(subset_size, x.shape[0], y.shape[0])
    if m < 2:
        raise ValueError(f"kid needs at least 2 features per set, got {x.shape[0]} and {y.shape[0]}")
    rng = generator if generator is not None else np.random.default_rng(0)
    values = [_mmd2_unbiased(x[rng.choice(x.shape[0], m, replace=False)], y[rng.choice(y.shape[0], m, replace=False)])
              for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


def clip_score(image_emb: torch.Tensor, text_emb: torch.Tensor) -> float:
    """100 x the mean cosine similarity of each image embedding with its own caption's embedding."""
    cos = F.cosine_similarity(image_emb.double(), text_emb.double(), dim=-1)
    return float(100 * cos.mean())


def r_precision(image_emb: torch.Tensor, text_emb: torch.Tensor, k: int, generator: torch.Generator,
                caption_ids=None, chunk: int = 1024) -> float:
    """Share of images whose own caption is the most similar among itself and k-1 random other captions.

    `caption_ids` (N,) marks captions with identical text: distractors are drawn only among captions whose id
    differs, so an exact duplicate of the true caption is never counted against the image.
    """
    n = image_emb.shape[0]
    ids = torch.as_tensor(caption_ids) if caption_ids is not None else torch.arange(n)
    img, txt = F.normalize(image_emb.double(), dim=-1), F.normalize(text_emb.double(), dim=-1)
    _, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)
    fewest_others = n - int(counts[inverse].max())
    if k < 2 or fewest_others < k - 1:
        raise ValueError(f"r_precision: k = {k} needs k-1 >= 1 distinct other captions per image; the fewest "
                         f"available is {fewest_others}")
    hits = 0
    for start in range(0, n, chunk):
        rows = slice(start, start + chunk)
        allowed = (ids[rows, None] != ids[None, :]).double()
        distractors = torch.multinomial(allowed, k - 1, replacement=False, generator=generator)
        sims = img[rows] @ txt.T
        own = sims.diagonal(offset=start)
        hits += int((own > sims.gather(1, distractors).max(1).values).sum())
    return hits / n


TEXTURE_MIN_PIXELS = 8   # eroded regions smaller than this are too thin to measure a spread in


def region_texture(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean pixel standard deviation inside each labelled region, eroded by one pixel so that region edges
    (and the mask's own aliasing) do not count: (B,) in 8-bit levels, NaN for an image with no measurable region.

    images (B,3,H,W) in [-1,1] at the label maps' size, labels (B,H,W) int. A face painted in flat regions scores
    near 0; noise or a checkerboard inside the regions raises it. Per image: the mean over its regions of the
    per-channel standard deviations (channels averaged).
    """
    if images.shape[-2:] != labels.shape[-2:]:
        raise ValueError(f"images {tuple(images.shape)} and label maps {tuple(labels.shape)} differ in size")
    regions = one_hot(labels).to(images.dtype)                                     # (B,K,H,W)
    eroded = -F.max_pool2d(-regions, 3, stride=1, padding=1)                       # 1 where all 3x3 share the label
    eroded[..., [0, -1], :] = 0.0                                                  # the border has no full neighbourhood
    eroded[..., :, [0, -1]] = 0.0
    levels = (images.clamp(-1, 1) + 1) * 127.5
    count = eroded.sum((2, 3))                                                     # (B,K)
    total = torch.einsum("bkhw,bchw->bkc", eroded, levels)
    squares = torch.einsum("bkhw,bchw->bkc", eroded, levels.square())
    n = count.clamp(min=1).unsqueeze(-1)
    std = (squares / n - (total / n).square()).clamp(min=0).sqrt().mean(-1)      # (B,K)
    valid = count >= TEXTURE_MIN_PIXELS
    return (std * valid).sum(1) / valid.sum(1)


def high_frequency_energy(images: torch.Tensor) -> torch.Tensor:
    """(B,) mean squared difference between each image and its 3x3 box blur, in 8-bit levels squared: what a
    blur removes. Smooth or smudged faces score low; flat regions with crisp edges score as their edges
    dictate; noise or a checkerboard scores high. images (B,3,H,W) in [-1,1]."""
    levels = (images.float().clamp(-1, 1) + 1) * 127.5
    blurred = F.avg_pool2d(F.pad(levels, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return (levels - blurred).square().mean((1, 2, 3))


def region_colors(images: torch.Tensor, labels: torch.Tensor, label_ids: list[int]) -> torch.Tensor:
    """(B,R,3) mean colour in 8-bit levels of each listed region, eroded by one pixel so that edges blended with
    a neighbour do not count; NaN where the eroded region has fewer than TEXTURE_MIN_PIXELS pixels."""
    if images.shape[-2:] != labels.shape[-2:]:
        raise ValueError(f"images {tuple(images.shape)} and label maps {tuple(labels.shape)} differ in size")
    regions = torch.stack([(labels == i) for i in label_ids], 1).to(images.dtype)     # (B,R,H,W)
    eroded = -F.max_pool2d(-regions, 3, stride=1, padding=1)
    levels = (images.clamp(-1, 1) + 1) * 127.5
    count = eroded.sum((2, 3))
    means = torch.einsum("brhw,bchw->brc", eroded, levels) / count.clamp(min=1).unsqueeze(-1)
    return torch.where((count >= TEXTURE_MIN_PIXELS).unsqueeze(-1), means, torch.full_like(means, float("nan")))


def color_spread(colors: torch.Tensor) -> torch.Tensor:
    """colors (...,N,3) with NaN rows for unmeasured ones -> (...) root mean per-channel variance over the N
    measured rows (NaN with fewer than two)."""
    valid = ~colors.isnan().any(-1, keepdim=True)
    n = valid.sum(-2).double()
    x = torch.where(valid, colors.double(), torch.zeros_like(colors.double()))
    mean = x.sum(-2) / n.clamp(min=1)
    var = (torch.where(valid, x - mean.unsqueeze(-2), torch.zeros_like(x)).square().sum(-2) / (n - 1).clamp(min=1))
    return torch.where(n.squeeze(-1) >= 2, var.mean(-1).sqrt(), torch.full_like(var[..., 0], float("nan")))


def pairwise_distance_diversity(features: torch.Tensor) -> float:
    """Mean pairwise cosine distance (1 - cos) between the S samples of each group, averaged over groups.

    features: (G,S,D), one group per (mask, caption), one sample per seed.
    """
    if features.ndim != 3 or features.shape[1] < 2:
        raise ValueError(f"diversity needs (groups, samples >= 2, dim) features, got {tuple(features.shape)}")
    unit = F.normalize(features.double(), dim=-1)
    s = unit.shape[1]
    cos = unit @ unit.transpose(1, 2)
    off_diagonal = cos.sum((1, 2)) - cos.diagonal(dim1=1, dim2=2).sum(1)
    return float((1 - off_diagonal / (s * (s - 1))).mean())


# ---------------------------------------------------------------------------------------------------------------
# Feature extractors: images in [-1,1] (B,3,H,W) -> (B,D) float32 features on the CPU, with a `name` that
# identifies the exact network (it keys the real-statistics cache)

INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
INCEPTION_FILE = INCEPTION_URL.rsplit("/", 1)[1]


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights a metric needs are not on this machine (nothing is ever downloaded)."""


def inception_weight_paths(path: str | Path | None = None) -> list[Path]:
    """Where the Inception weights are looked for: `path` alone when given, else the project home's models/ and
    the torch hub cache (where torch-fidelity itself would have stored its download)."""
    if path is not None:
        return [Path(path).expanduser()]
    return [project_home() / "models" / INCEPTION_FILE, Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE]


def find_inception_weights(path: str | Path | None = None) -> Path:
    """The Inception weights file, or MissingWeightsError saying where to put it. torch-fidelity would try to
    download it from GitHub (hanging without network), so the file is found here first."""
    candidates = inception_weight_paths(path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise MissingWeightsError(
        f"FID/KID need torch-fidelity's Inception-v3 weights ({INCEPTION_FILE}), not found at "
        f"{' or '.join(str(c) for c in candidates)}. Nothing is downloaded here: fetch {INCEPTION_URL} once and "
        f"put it at {candidates[0]}" + ("" if path is not None else " (or pass its path)")
        + ". The CLIP-space distance fid_clip needs no extra weights.")


class InceptionExtractor:
    """torch-fidelity's 'inception-v3-compat' (the TF-FID Inception): 2048-d pool features of uint8 images
    resized to 299 inside the network, as torch-fidelity computes FID and KID."""

    name = "inception-v3-compat"

    def __init__(self, weights_path: str | Path | None = None, device="cpu"):
        path = find_inception_weights(weights_path)
        # torch-fidelity loads the file with weights_only=False; make sure it is plain tensors before it does.
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"Inception weights {path} cannot be read as a state dict "
                             f"({type(e).__name__}: {str(e).splitlines()[0]})") from None
        # Imported here: torch-fidelity takes seconds to import and only FID/KID need it.
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        self.device = torch.device(device)
        self.net = FeatureExtractorInceptionV3(self.name, ["2048"], feature_extractor_weights_path=str(path))
        self.net.to(self.device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(to_uint8(images).to(self.device))[0].float().cpu()


def module_fingerprint(module: torch.nn.Module, length: int = 10) -> str:
    """Short sha1 of a module's parameters and buffers: two CLIPs share cached statistics only if equal."""
    h = hashlib.sha1()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:length]


class ClipImageExtractor:
    """Unit-length image embeddings of the configured CLIP (TextEncoder.encode_image with CLIP's own input
    normalisation); needs no weights beyond those the generator already uses, so it always works offline."""

    def __init__(self, text_encoder, label: str):
        self.encoder = text_encoder
        self.name = f"clip-{label}-{module_fingerprint(text_encoder.clip.visual)}"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        emb = self.encoder.encode_image(images.to(self.encoder.device, torch.float32), normalize=True)
        return F.normalize(emb.float(), dim=-1).cpu()


class ParserExtractor:
    """Level-averaged activations of the dataset's face parser (FaceParser.embed): a feature space trained on
    real faces only, independent of the generator and of the CLIP its loss uses."""

    def __init__(self, parser_path: Path, device):
        self.parser = load_parser(parser_path, device)
        self.name = f"parser-{module_fingerprint(self.parser)}"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.parser.embed(images).float().cpu()


# ---------------------------------------------------------------------------------------------------------------
# Real-image features, cached on disk per dataset / split / extractor / size / count


def default_cache_dir() -> Path:
    return project_home() / "data" / ".cache" / "metrics"


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def real_stats_key(cfg, split: str, ids: list[str], extractor_name: str) -> str:
    """Cache key: dataset name, split, extractor, image size, image count, and a hash of the dataset folder and
    the image ids, so a re-rendered or re-split dataset never reuses stale statistics."""
    h = hashlib.sha1(str(resolve_path(cfg, "DATA.ROOT")).encode())
    h.update("\n".join(ids).encode())
    return _safe_name(f"{cfg.DATA.NAME}-{split}-{extractor_name}-{cfg.DATA.IMAGE_SIZE}px-n{len(ids)}-"
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


# ---------------------------------------------------------------------------------------------------------------
# Generating the evaluation images


@torch.no_grad()
def generate_images(g_ema, cfg, text_encoder, batch: dict, samples: list[int], seed: int) -> torch.Tensor:
    """G_ema's images for a batch of dataset items (their real masks and fixed captions); sample k is drawn
    with seed generation.image_seed(seed, k), the rule of pixelface.generation. -> (B,3,S,S) on G's device."""
    seeds = [generation.image_seed(seed, k) for k in samples]
    return generation.generate(g_ema, text_encoder, generation.batch_mask_input(batch, cfg), list(batch["caption"]),
                               seeds, batch_size=len(seeds))


# ---------------------------------------------------------------------------------------------------------------
# The evaluation context: what the metrics share (networks, dataset, collected features, recorded settings)

R_PRECISION_K = 100       # candidates per image (the true caption + 99 others), as AttnGAN's R-precision
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000
DIVERSITY_GROUPS = 50     # (mask, caption) pairs generated once per seed for the diversity metric
LPIPS_BACKBONE_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's AlexNet, which lpips(net='alex') loads


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


# ---------------------------------------------------------------------------------------------------------------
# Collectors: fed every batch of the main generated set, each gathers what its metrics need


class _FeatureCollector:
    def __init__(self, extractor):
        self.extractor, self.parts = extractor, []

    def update(self, images, batch):
        self.parts.append(self.extractor(images))

    def value(self) -> torch.Tensor:
        return torch.cat(self.parts)


class _CaptionCollector:
    def __init__(self, text_encoder):
        self.encoder, self.parts = text_encoder, []

    def update(self, images, batch):
        self.parts.append(self.encoder.embed_text(list(batch["caption"])).float().cpu())

    def value(self) -> torch.Tensor:
        return torch.cat(self.parts)


class _ConfusionCollector:
    def __init__(self, parser):
        self.parser = parser
        self.confusion = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.int64)

    def update(self, images, batch):
        self.confusion += confusion_matrix(self.parser.predict(images).cpu(), batch["labels"])

    def value(self) -> torch.Tensor:
        return self.confusion


class _TextureCollector:
    """region_texture of each generated face and of its real source face, over the input mask's regions."""

    def __init__(self):
        self.parts = {"fake": [], "real": []}

    def update(self, images, batch):
        self.parts["fake"].append(region_texture(images, batch["labels"]))
        self.parts["real"].append(region_texture(batch["image"].float(), batch["labels"]))

    def value(self) -> dict[str, torch.Tensor]:
        return {kind: torch.cat(parts) for kind, parts in self.parts.items()}


class _SharpnessCollector:
    """high_frequency_energy of each generated face and of its real source face."""

    def __init__(self):
        self.parts = {"fake": [], "real": []}

    def update(self, images, batch):
        self.parts["fake"].append(high_frequency_energy(images))
        self.parts["real"].append(high_frequency_energy(batch["image"].float()))

    def value(self) -> dict[str, torch.Tensor]:
        return {kind: torch.cat(parts) for kind, parts in self.parts.items()}


class _AttributeCollector:
    """Whether each generated face, and its real source face, shows the colour attributes its caption states
    (hits), and how often each shows a yes/no attribute that its caption does not mention (unasked): a
    generator that paints lipstick on every face would score 1 on the stated ones alone."""

    def __init__(self, caption_attributes, predict_attributes):
        self.stated, self.predict = caption_attributes, predict_attributes
        self.hits = {"fake": {}, "real": {}}
        self.unasked = {"fake": {}, "real": {}}

    def update(self, images, batch):
        fakes = to_uint8(images).permute(0, 2, 3, 1).numpy()
        reals = to_uint8(batch["image"]).permute(0, 2, 3, 1).numpy()
        for fake, real, labels, caption in zip(fakes, reals, batch["labels"].numpy(), batch["caption"]):
            asked = self.stated(caption)
            for kind, image in (("fake", fake), ("real", real)):
                shown = self.predict(image, labels)
                for name in COLOR_ONLY:
                    if name not in shown:   # a region too small to judge
                        continue
                    if name in asked:
                        correct = shown[name] == asked[name]
                        self.hits[kind].setdefault(name, []).append(bool(correct))
                        if name == "hair_color":  # also per asked colour: one colour can lag the others
                            self.hits[kind].setdefault(f"hair_color/{asked[name]}", []).append(bool(correct))
                    elif isinstance(shown[name], bool):
                        self.unasked[kind].setdefault(name, []).append(shown[name])

    def value(self) -> dict[str, dict[str, dict[str, list[bool]]]]:
        return {"hits": self.hits, "unasked": self.unasked}


def _parser_collector(ctx: EvalContext):

    ctx.settings["parser"] = str(ctx.parser_path)
    return _ConfusionCollector(load_parser(ctx.parser_path, ctx.device))


def _attribute_collector(ctx: EvalContext):

    return _AttributeCollector(caption_attributes, predict_attributes)


_COLLECTORS = {
    "inception": lambda ctx: _FeatureCollector(ctx.extractor("inception")),
    "clip": lambda ctx: _FeatureCollector(ctx.extractor("clip")),
    "parser_features": lambda ctx: _FeatureCollector(ctx.extractor("parser_features")),
    "sharpness": lambda ctx: _SharpnessCollector(),
    "captions": lambda ctx: _CaptionCollector(ctx.text_encoder),
    "parser": _parser_collector,
    "attributes": _attribute_collector,
    "texture": lambda ctx: _TextureCollector(),
}


def _check_need(ctx: EvalContext, need: str) -> None:
    """Raise the one clear error that says why `need` cannot be met on this machine or dataset."""
    if need == "inception":
        find_inception_weights(ctx.inception_path)
    elif need in ("parser", "parser_features") and not ctx.parser_path.is_file():
        raise FileNotFoundError(f"no face parser at {ctx.parser_path}; train one with scripts/train_parser.py "
                                f"--out {ctx.parser_path}, or pass another path")
    elif need == "attributes" and not ctx.attributes_path().is_file():
        raise FileNotFoundError(f"{ctx.attributes_path()} does not exist: attribute accuracy needs a dataset with "
                                f"attribute labels (synthface)")
    elif need == "seeds" and len(ctx.seeds) < 2:
        raise ValueError(f"diversity compares images across seeds and needs at least two, got {ctx.seeds}")


# ---------------------------------------------------------------------------------------------------------------
# The registry: name -> function of the context returning a dict of floats


@dataclass(frozen=True)
class Metric:
    compute: Callable[[EvalContext], dict[str, float]]
    needs: tuple[str, ...]  # collectors fed in the main pass, and/or requirements checked first ("seeds")


METRICS: dict[str, Metric] = {}


def register_metric(name: str, needs: tuple[str, ...] = ()):
    def register(fn):
        METRICS[name] = Metric(fn, needs)
        return fn
    return register


def _frechet_to_real(ctx: EvalContext, kind: str) -> float:
    real = ctx.real(kind)
    return frechet_distance(*feature_stats(ctx.collected[kind].numpy()), real["mu"], real["sigma"])


@register_metric("fid", needs=("inception",))
def _fid(ctx):
    """FID against the split's real images, torch-fidelity's Inception features."""
    return {"fid": _frechet_to_real(ctx, "inception")}


@register_metric("kid", needs=("inception",))
def _kid(ctx):
    """KID (mean and std over subsets) against the split's real images."""
    real = ctx.real("inception")["features"]
    ctx.settings["kid_subset_size"] = min(KID_SUBSET_SIZE, ctx.num, len(real))
    mean, std = kid(ctx.collected["inception"].numpy(), real, KID_SUBSETS, KID_SUBSET_SIZE)
    return {"kid": mean, "kid_std": std}


@register_metric("fid_clip", needs=("clip",))
def _fid_clip(ctx):
    """Fréchet distance in the unit-normalised image-embedding space of the configured CLIP."""
    return {"fid_clip": _frechet_to_real(ctx, "clip")}


@register_metric("clip_score", needs=("clip", "captions"))
def _clip_score(ctx):
    """100 x cosine between each generated image and its caption."""
    return {"clip_score": clip_score(ctx.collected["clip"], ctx.collected["captions"])}


@register_metric("r_precision", needs=("clip", "captions"))
def _r_precision(ctx):
    """Share of images whose caption beats K-1 random other captions (K = 100, fewer for small sets)."""
    first_seen: dict[str, int] = {}
    caption_ids = torch.tensor([first_seen.setdefault(s["caption"], len(first_seen)) for s in ctx.samples])
    # Each image has at least (distinct captions - 1) rows with another text to draw distractors from.
    k = min(R_PRECISION_K, len(first_seen))
    ctx.settings["r_precision_k"] = k
    generator = torch.Generator().manual_seed(0)
    return {"r_precision": r_precision(ctx.collected["clip"], ctx.collected["captions"], k, generator, caption_ids)}


@register_metric("mask_acc", needs=("parser",))
def _mask_acc(ctx):
    """Pixel accuracy and mIoU of the face parser's labels of each generated image against its input mask."""
    scores = accuracy_from_confusion(ctx.collected["parser"])
    return {"mask_pixel_acc": scores["pixel_acc"], "mask_miou": scores["miou"]}


@register_metric("texture", needs=("texture",))
def _texture(ctx):
    """Mean pixel standard deviation inside the input mask's regions (eroded by a pixel; region_texture) of the
    generated faces and of their real source faces, and their ratio: noise or checkerboard texture raises it."""
    values = {kind: float(np.nanmean(v.numpy())) for kind, v in ctx.collected["texture"].items()}
    return {"texture_std": values["fake"], "texture_std_real": values["real"],
            "texture_ratio": values["fake"] / max(values["real"], 1e-8)}


@register_metric("attr_acc", needs=("attributes",))
def _attr_acc(ctx):
    """Per colour-only attribute (synthface scorer): share of generated faces that show what their caption
    states, over the faces whose caption states it and whose regions the scorer can judge; attr_acc is the
    mean over attributes and attr_acc_real the same for the real source faces (the scorer's ceiling).
    attr_unasked/<name>: share of generated faces showing a yes/no attribute their caption does not mention
    (settings' attr_unasked_real: the same for the real faces, the data's own rate)."""
    hits, unasked = ctx.collected["attributes"]["hits"], ctx.collected["attributes"]["unasked"]
    fake = {name: float(np.mean(h)) for name, h in sorted(hits["fake"].items())}
    real = {name: float(np.mean(h)) for name, h in sorted(hits["real"].items())}
    ctx.settings.update(attr_acc_real=real, attr_judged={name: len(h) for name, h in sorted(hits["fake"].items())},
                        attr_unasked_real={name: float(np.mean(h)) for name, h in sorted(unasked["real"].items())})
    shown_unasked = {f"attr_unasked/{name}": float(np.mean(h)) for name, h in sorted(unasked["fake"].items())}
    if not fake:
        ctx.settings["attr_acc"] = "no caption states a colour attribute the scorer can judge"
        return {}
    # per-colour entries ("hair_color/black") break hair_color down; they do not count again in the mean
    overall = [name for name in fake if "/" not in name]
    return {"attr_acc": float(np.mean([fake[n] for n in overall])),
            "attr_acc_real": float(np.mean([real[n] for n in overall])),
            **{f"attr_acc/{name}": value for name, value in fake.items()}, **shown_unasked}


@register_metric("fid_parser", needs=("parser_features",))
def _fid_parser(ctx):
    """Fréchet distance to the split's real images in the face parser's features (ParserExtractor): a
    distribution distance in a space that neither the generator nor its CLIP loss was trained on."""
    return {"fid_parser": _frechet_to_real(ctx, "parser_features")}


@register_metric("sharpness", needs=("sharpness",))
def _sharpness(ctx):
    """High-frequency energy (high_frequency_energy) of the generated faces and of their real source faces, and
    their ratio: below 1 the samples are smoother than the data, above 1 noisier."""
    values = {kind: float(v.double().mean()) for kind, v in ctx.collected["sharpness"].items()}
    return {"sharpness": values["fake"], "sharpness_real": values["real"],
            "sharpness_ratio": values["fake"] / max(values["real"], 1e-8)}


SPREAD_SEEDS = 8                          # samples per (mask, caption) for seed_spread
SPREAD_REGIONS = ("background", "cloth")  # regions whose colours no caption states (synthface and MMCelebA)
SPREAD_REAL = 500                         # real faces whose colours set the data's spread


@register_metric("seed_spread")
def _seed_spread(ctx):
    """How much the colours that no caption fixes (background, clothes) vary across SPREAD_SEEDS seeds for one
    mask and caption, over how much they vary across the split's real faces: per region, the root mean
    per-channel variance of the region's mean colour, averaged over DIVERSITY_GROUPS (mask, caption) pairs;
    seed_spread is the mean of the regions' ratios. A generator that ignores z scores 0, one that draws these
    colours as the data does scores about 1."""
    ids = [LABEL_ID[name] for name in SPREAD_REGIONS]
    groups = range(min(ctx.num, DIVERSITY_GROUPS))
    per_seed = []
    for i in range(SPREAD_SEEDS):
        parts = [region_colors(images, batch["labels"], ids) for _, batch, images in ctx.generate(groups, ctx.seeds[0] + i)]
        per_seed.append(torch.cat(parts))                                           # (G,R,3)
    fake = color_spread(torch.stack(per_seed, 2))                                   # (G,R)
    reals = [region_colors(batch["image"].float(), batch["labels"], ids)
             for _, batch in ctx.batches(range(min(len(ctx.dataset), SPREAD_REAL)))]
    real = color_spread(torch.cat(reals).transpose(0, 1))                          # (R,)
    ctx.settings.update(seed_spread_groups=len(groups), seed_spread_seeds=SPREAD_SEEDS)
    out = {}
    for r, name in enumerate(SPREAD_REGIONS):
        out[f"seed_spread/{name}"] = float(np.nanmean(fake[:, r].numpy()) / real[r].item())
        out[f"seed_spread_real/{name}"] = real[r].item()
    out["seed_spread"] = float(np.mean([out[f"seed_spread/{name}"] for name in SPREAD_REGIONS]))
    return out


@register_metric("diversity", needs=("seeds",))
def _diversity(ctx):
    """Mean pairwise distance between images of the same mask and caption across the seeds: LPIPS when the
    lpips package and its weights are present, else cosine distance of CLIP image embeddings."""
    groups = min(ctx.num, DIVERSITY_GROUPS)
    images_by_seed = [torch.cat([images for _, _, images in ctx.generate(range(groups), seed)])
                      for seed in ctx.seeds]
    lpips_net = lpips_network(ctx.device)
    ctx.settings.update(diversity_groups=groups, diversity_space="lpips-alex" if lpips_net else "clip-cosine")
    if lpips_net is not None:
        return {"diversity": _lpips_diversity(lpips_net, torch.stack(images_by_seed, 1), ctx.device)}
    clip = ctx.extractor("clip")
    return {"diversity": pairwise_distance_diversity(torch.stack([clip(x) for x in images_by_seed], 1))}


def lpips_network(device):
    """lpips' AlexNet LPIPS (frozen) when the package and the AlexNet weights in the torch hub cache are both
    present (then nothing is downloaded), else None. Diversity here and the inversion loss in editing use it."""
    try:
        import lpips
    except ImportError:
        return None
    if not (Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONE_FILE).is_file():
        return None
    return lpips.LPIPS(net="alex", verbose=False).to(device).eval().requires_grad_(False)


@torch.no_grad()
def _lpips_diversity(net, images: torch.Tensor, device) -> float:
    """images (G,S,3,H,W) in [-1,1] -> mean LPIPS over the pairs of samples within each group."""
    s = images.shape[1]
    distances = [net(images[:, i].to(device), images[:, j].to(device)).flatten().cpu()
                 for i in range(s) for j in range(i + 1, s)]
    return float(torch.stack(distances).mean())


# ---------------------------------------------------------------------------------------------------------------
# Entry point


def select_metrics(ctx: EvalContext, names: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """(metrics to compute, {skipped metric: why}). names=None: every registered metric this machine and
    dataset allow; named metrics that cannot be computed raise their error instead."""
    if names is not None:
        unknown = [n for n in names if n not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; available: {', '.join(METRICS)}")
        for name in names:
            for need in METRICS[name].needs:
                _check_need(ctx, need)
        return list(dict.fromkeys(names)), {}
    selected, skipped = [], {}
    for name, metric in METRICS.items():
        try:
            for need in metric.needs:
                _check_need(ctx, need)
            selected.append(name)
        except (FileNotFoundError, ValueError) as e:
            skipped[name] = str(e)
    return selected, skipped


def default_parser_path(cfg) -> Path:
    """models/parser_<DATA.NAME>.pt in the project home, where scripts/train_parser.py's documented command
    puts it."""
    return project_home() / "models" / f"parser_{_safe_name(cfg.DATA.NAME)}.pt"


def evaluate_generator(g_ema, cfg, text_encoder, *, split: str = "test", num: int = 1000,
                       metrics: list[str] | None = None, seeds=(0,), batch_size: int = 16, device="cpu",
                       parser_path: str | Path | None = None, cache_dir: str | Path | None = None,
                       inception_path: str | Path | None = None) -> dict:
    """Generate `num` images from the split's real masks and fixed captions (caption slot DATA.EVAL_CAPTION;
    sample k shows item k mod the split size, with seed seeds[0]) and compute `metrics` (None: all available).

    device: where the extractors and the parser run (G and the text encoder stay where they are).
    parser_path: default models/parser_<DATA.NAME>.pt. cache_dir: real statistics (default data/.cache/metrics).
    Both defaults, and models/ below, are in project_home().
    inception_path: the Inception weights (default: models/ or the torch hub cache).
    Returns {"metrics": {name: float}, "skipped": {metric: why}, "settings": {...}, "samples": [{sample, id,
    caption}]}; the training hook logs result["metrics"].
    """

    if num < 2 or batch_size < 1 or not seeds:
        raise ValueError(f"evaluation needs num >= 2 ({num}), batch_size >= 1 ({batch_size}) and a seed ({seeds})")
    started = time.time()
    dataset = FaceDataset(cfg, split, train=False)
    ctx = EvalContext(g_ema, cfg, text_encoder, dataset, split, num, [int(s) for s in seeds], batch_size,
                      torch.device(device), StatsCache(cache_dir), Path(parser_path or default_parser_path(cfg)),
                      Path(inception_path) if inception_path else None)
    ctx.settings.update(dataset=cfg.DATA.NAME, split=split, num=num, seeds=ctx.seeds, batch_size=batch_size,
                        caption_slot=cfg.DATA.EVAL_CAPTION, image_size=cfg.DATA.IMAGE_SIZE,
                        split_images=len(dataset))
    names, skipped = select_metrics(ctx, metrics)
    was_training = g_ema.training
    g_ema.eval()  # GCMF dropout off
    try:
        _collect_main_set(ctx, {need for name in names for need in METRICS[name].needs if need in _COLLECTORS})
        results = {}
        for name in names:
            results.update(METRICS[name].compute(ctx))
    finally:
        g_ema.train(was_training)
    ctx.settings["seconds"] = round(time.time() - started, 1)
    return {"metrics": results, "skipped": skipped, "settings": ctx.settings, "samples": ctx.samples}


def _collect_main_set(ctx: EvalContext, needs: set[str]) -> None:
    collectors = {need: _COLLECTORS[need](ctx) for need in sorted(needs)}
    for ks, batch, images in ctx.generate(range(ctx.num), ctx.seeds[0]):
        ctx.samples += [{"sample": k, "id": i, "caption": c} for k, i, c in zip(ks, batch["id"], batch["caption"])]
        for collector in collectors.values():
            collector.update(images, batch)
    ctx.collected = {need: collector.value() for need, collector in collectors.items()}


# ---------------------------------------------------------------------------------------------------------------
# Reports


def markdown_table(rows: dict[str, dict[str, float]]) -> str:
    """One row per evaluated checkpoint, one column per metric key (in first-seen order)."""
    columns = list(dict.fromkeys(key for values in rows.values() for key in values))
    lines = ["| checkpoint | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, values in rows.items():
        cells = [f"{values[c]:.4g}" if c in values else "-" for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report_paths(out_dir: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
    """(metrics.json, metrics.md) in `out_dir`; FileExistsError if either exists and not `overwrite`."""
    targets = Path(out_dir) / "metrics.json", Path(out_dir) / "metrics.md"
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{' and '.join(existing)} already exist; pass --force to replace them")
    return targets


def write_reports(out_dir: str | Path, reports: dict[str, dict], overwrite: bool = False) -> str:
    """Write <out_dir>/metrics.json (every report in full) and metrics.md (the table) -> the table.
    Existing reports are kept unless `overwrite`."""
    targets = report_paths(out_dir, overwrite)
    table = markdown_table({label: report["metrics"] for label, report in reports.items()})
    write_bytes_atomic(targets[0], (json.dumps(reports, indent=1) + "\n").encode())
    write_bytes_atomic(targets[1], table.encode())
    return table


# ---------------------------------------------------------------------------------------------------------------
# Per-image measures (scripts/manipulate.py reports them for each reconstruction and edit)


def psnr(image: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB between two images in [-1,1], measured on their 8-bit renderings."""
    mse = (to_uint8(image).float() - to_uint8(reference).float()).square().mean()
    return float("inf") if mse == 0 else float(10 * torch.log10(255.0 ** 2 / mse))


@torch.no_grad()
def lpips_distance(net, image: torch.Tensor, reference: torch.Tensor) -> float:
    """LPIPS between two (3,S,S) images in [-1,1] with a network from lpips_network."""
    device = next(net.parameters()).device
    return float(net(image[None].to(device).clamp(-1, 1), reference[None].to(device).clamp(-1, 1)))


@torch.no_grad()
def clip_similarity(text_encoder, images: torch.Tensor, captions: list[str]) -> list[float]:
    """Cosine similarity in the checkpoint's CLIP space of each (3,S,S) image to its caption."""
    image_emb = F.normalize(text_encoder.encode_image(images.clamp(-1, 1).to(text_encoder.device), normalize=True),
                            dim=-1)
    text_emb = text_encoder.embed_text(captions)
    return [float(s) for s in (image_emb * text_emb).sum(-1).cpu()]
