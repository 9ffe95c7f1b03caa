"""Metric formulas: plain functions of features, embeddings, images and label maps."""
from __future__ import annotations


import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from pixelface.data.masks import one_hot


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


def high_frequency_map(images: torch.Tensor) -> torch.Tensor:
    """(B,H,W) squared difference between each image and its 3x3 box blur, in 8-bit levels squared, averaged over
    the colour channels: what a blur removes, pixel by pixel. Smooth or smudged faces score low; flat regions with
    crisp edges score on their edges only; noise or a checkerboard scores high. images (B,3,H,W) in [-1,1]."""
    levels = (images.float().clamp(-1, 1) + 1) * 127.5
    blurred = F.avg_pool2d(F.pad(levels, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return (levels - blurred).square().mean(1)


def region_edges(labels: torch.Tensor) -> torch.Tensor:
    """(B,H,W) bool: pixels whose 3x3 neighbourhood holds more than one label (both sides of every region edge)."""
    lab = labels.float().unsqueeze(1)
    return (F.max_pool2d(lab, 3, stride=1, padding=1) != -F.max_pool2d(-lab, 3, stride=1, padding=1)).squeeze(1)


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
