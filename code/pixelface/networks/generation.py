"""One way to generate: how (mask, caption, seed) becomes an image, for the training grid, every metric,
scripts/sample.py and the Python API alike.

The rule, documented once:
* an image's z and then its noise maps are drawn, in that order, on the CPU from
  `torch.Generator().manual_seed(seed)` (seeded_inputs), so an image depends on its own seed only;
* its caption is encoded alone (encode_caption), so no other caption in a batch changes its word features
  (with TEXT.FIXED_LENGTH off, batch encoding would pad every caption to the longest one);
* a set of images drawn under one base seed s (an evaluation pass, the training grid) gives its k-th
  image the seed image_seed(s, k), so `scripts/sample.py --seeds <image_seed(s, k)>` redraws it.

Batching only groups forward passes: batched matrix products round differently from single ones (about
1e-5 here), which can move a rare 8-bit pixel value by one; batch size 1 is exact.

Precision (`amp`): "none" runs G in float32; "bf16" under bfloat16 autocast (the text encoder stays float32);
"auto" chooses bf16 where it was measured faster, a CPU with bf16 units (AVX512-BF16 or AMX) and a generator of
the reference's width (MODEL.CHANNEL_MAX >= 256), float32 elsewhere (docs/speed.md, "Sampling in bf16").
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from pixelface.core.errors import InputError
from pixelface.core.runtime import cpu_has_bf16

AMP_CHOICES = ("auto", "none", "bf16")
BF16_MIN_CHANNELS = 256     # below this width bf16 autocast was slower than float32 on the CPU (casts dominate)

MEAN_LATENT_SAMPLES = 4096  # z draws averaged into the truncation centre / inversion start
MEAN_LATENT_SEED = 0x5EED   # fixed, so the truncation centre is a property of the model alone


@dataclass(frozen=True)
class WordFeatures:
    words: torch.Tensor           # (1, T, EMBEDDING_DIM)
    padding: torch.Tensor | None  # (1, T) bool, None in the reference's batch-dependent mode


def encode_caption(text_encoder, caption: str) -> WordFeatures:
    """One caption's word features, encoded alone so that nothing else in a batch can change them."""
    feats = text_encoder.encode([caption])
    return WordFeatures(feats.words, feats.padding)


def image_seed(base_seed: int, index: int) -> int:
    """The seed of image `index` in a set drawn under `base_seed`.

    The pair is hashed (SeedSequence) into the 32 bits torch's CPU generator keeps, rather than packed into
    64, where the high half would be dropped and every base seed would give the same images.
    """
    if base_seed < 0 or index < 0:
        raise ValueError(f"base seed {base_seed} and image index {index} must be >= 0")
    return int(np.random.SeedSequence([base_seed, index]).generate_state(1)[0])


def seeded_inputs(g, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(z (1,style_dim), noise maps [(1,1,h,w)]) of `seed`, drawn on the CPU in that order."""
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(1, g.style_dim, generator=rng)
    return z, g.make_noise(1, generator=rng, device="cpu")


def truncation_centre(g) -> torch.Tensor:
    """(1,STYLE_DIM) mean w of MEAN_LATENT_SAMPLES fixed z draws: the model's mean latent."""
    rng = torch.Generator().manual_seed(MEAN_LATENT_SEED)
    return g.mean_latent(MEAN_LATENT_SAMPLES, generator=rng).reshape(1, -1)


@torch.no_grad()
def autocast_dtype(amp: str, cfg, device) -> torch.dtype | None:
    """The dtype G runs under for `amp` (AMP_CHOICES) on `device`: torch.bfloat16, or None for float32."""
    if amp not in AMP_CHOICES:
        raise InputError(f"amp {amp!r}: expected one of {', '.join(AMP_CHOICES)}")
    if amp == "auto":
        wide = cfg.MODEL.CHANNEL_MAX >= BF16_MIN_CHANNELS
        return torch.bfloat16 if torch.device(device).type == "cpu" and cpu_has_bf16() and wide else None
    return torch.bfloat16 if amp == "bf16" else None


def generate(g, text_encoder, masks: torch.Tensor, captions: list[str], seeds: list[int],
             truncation: float = 1.0, batch_size: int = 1, progress: bool = False,
             dtype: torch.dtype | None = None) -> torch.Tensor:
    """Images of N (mask input, caption, seed) triples -> (N,3,S,S) on G's device, in [-1,1] (unclamped).

    masks: (N,C,S,S) as the generator takes them (data.mask_input.generator_input, a dataset batch's "mask"); captions: N
    cleaned captions; truncation < 1 pulls w toward truncation_centre(g); dtype: G under autocast to it (None: float32).
    """
    device = next(g.parameters()).device
    features = {c: encode_caption(text_encoder, c) for c in dict.fromkeys(captions)}
    centre = truncation_centre(g) if truncation != 1.0 else None
    images = []
    with tqdm(total=len(seeds), unit="image", disable=not progress) as bar:
        for start in range(0, len(seeds), batch_size):
            part = range(start, min(start + batch_size, len(seeds)))
            inputs = [seeded_inputs(g, seeds[i]) for i in part]
            z = torch.cat([z for z, _ in inputs]).to(device)
            noise = [torch.cat(maps).to(device) for maps in zip(*(n for _, n in inputs))]
            words = torch.cat([features[captions[i]].words for i in part]).to(device)
            paddings = [features[captions[i]].padding for i in part]
            padding = None if paddings[0] is None else torch.cat(paddings).to(device)
            with torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
                images.append(g(masks[part.start:part.stop].to(device), words, [z], word_padding=padding,
                                noise=noise, truncation=truncation, truncation_latent=centre).float())
            bar.update(len(part))
    return torch.cat(images)


@torch.no_grad()
def sample(g, text_encoder, cfg, masks: torch.Tensor, captions: list[str], seeds: list[int],
           truncation: float = 1.0, batch_size: int = 1, progress: bool = False, amp: str = "none") -> torch.Tensor:
    """Images for N (mask, caption, seed) triples -> (N,3,S,S) float on the CPU, in [-1,1] (unclamped).

    masks: (N,C,S,S), G's mask input (data.mask_input.generator_input, the one rule); captions: N cleaned captions;
    truncation < 1 pulls w toward the model's mean latent; amp: G's precision (AMP_CHOICES, module doc).
    What scripts/sample.py, the Python API and the editor call: their request checked (InputError
    naming what is wrong), then generate(); with batch_size 1 (the default) a seed's image is byte-identical
    whatever else is generated with it.
    """
    if not len(masks) == len(captions) == len(seeds) >= 1:
        raise InputError(f"got {len(masks)} masks, {len(captions)} captions and {len(seeds)} seeds; "
                         f"expected one of each per sample, for at least one sample")
    if batch_size < 1:
        raise InputError(f"batch size {batch_size}: expected at least 1")
    if not 0.0 <= truncation <= 1.0:
        raise InputError(f"truncation {truncation}: expected a value in [0, 1]")
    bad_seeds = [s for s in seeds
                 if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s < 2 ** 32]
    if bad_seeds:
        raise InputError(f"seeds {bad_seeds[:5]}: expected integers in [0, 2^32)")
    if batch_size > 1 and not cfg.TEXT.FIXED_LENGTH:
        raise InputError("TEXT.FIXED_LENGTH is false (the reference's batch-dependent word length), so captions "
                         "cannot share a batch without changing each other's features: use batch size 1")
    images = generate(g, text_encoder, masks, captions, seeds, truncation=truncation, batch_size=batch_size,
                      progress=progress, dtype=autocast_dtype(amp, cfg, next(g.parameters()).device))
    return images.float().cpu()
