"""Editing a given face: its inversion into W+ and noise maps (optionally followed by fine-tuning the
generator on it, PTI), and edits of its description or its layout. The reference has no editing code, so all
of this is new.

scripts/manipulate.py, the Python API and the web editor call it: the functions take tensors and plain
values; only save_inversion touches the disk. Inputs are read by pixelface.editing.inputs, images drawn by
pixelface.networks.generation, and measured by pixelface.evaluation.metrics.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pixelface.core.errors import InputError
from pixelface.data.mask_input import model_mask
from pixelface.evaluation.measures import LPIPS_BACKBONE_FILE, lpips_network
from pixelface.networks.checkpoint import atomic_save, load_formatted
from pixelface.networks.generation import MEAN_LATENT_SAMPLES, MEAN_LATENT_SEED, WordFeatures, encode_caption
from pixelface.networks.text_encoder import clip_image_input

INVERSION_FORMAT = "pixelface-inversion"


def _on(features: WordFeatures, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(words, padding) on `device`, as the generator takes them."""
    return features.words.to(device), None if features.padding is None else features.padding.to(device)


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


# ---------------------------------------------------------------------------------------------------------------
# Reconstruction loss


class ClipFeatureDistance(nn.Module):
    """An LPIPS-like distance on the checkpoint's own CLIP image tower, which is always available offline:
    the mean squared difference of channel-normalised patch tokens after every transformer block."""

    def __init__(self, text_encoder):
        super().__init__()
        self.encoder = text_encoder

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        enc = self.encoder
        x = clip_image_input(images, enc.image_size, enc.image_mean, enc.image_std, normalize=True)
        out = enc.clip.visual.forward_intermediates(x, intermediates_only=True, output_fmt="NLC")
        return [F.normalize(f, dim=-1) for f in out["image_intermediates"]]

    def forward(self, images: torch.Tensor, target_features: list[torch.Tensor]) -> torch.Tensor:
        pairs = zip(self.features(images), target_features)
        return torch.stack([(a - b).square().sum(-1).mean() for a, b in pairs]).mean()


class ReconstructionLoss(nn.Module):
    """pixel MSE + feature_weight x perceptual distance to one fixed target image.

    perceptual: 'lpips' (needs the lpips package and its AlexNet weights), 'clip' (ClipFeatureDistance),
    'auto' (lpips when present, else clip) or 'none'.
    """

    def __init__(self, target: torch.Tensor, text_encoder, perceptual: str, feature_weight: float):
        super().__init__()
        if perceptual not in ("auto", "lpips", "clip", "none"):
            raise ValueError(f"perceptual loss {perceptual!r}: expected auto, lpips, clip or none")
        self.target, self.feature_weight = target, feature_weight
        net = lpips_network(target.device) if perceptual in ("auto", "lpips") else None
        if perceptual == "lpips" and net is None:
            raise InputError(f"perceptual loss 'lpips' needs the lpips package and {LPIPS_BACKBONE_FILE} in "
                             f"{Path(torch.hub.get_dir()) / 'checkpoints'}")
        self.kind = "lpips" if net is not None else ("none" if perceptual == "none" else "clip")
        self.lpips = net
        if self.kind == "clip":
            self.clip = ClipFeatureDistance(text_encoder)
            with torch.no_grad():
                self.target_features = self.clip.features(target)

    def perceptual(self, images: torch.Tensor) -> torch.Tensor:
        if self.kind == "lpips":
            return self.lpips(images, self.target).mean()
        if self.kind == "clip":
            return self.clip(images, self.target_features)
        return images.new_zeros(())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(images, self.target) + self.feature_weight * self.perceptual(images)


# ---------------------------------------------------------------------------------------------------------------
# Inversion


@dataclass
class InversionSettings:
    steps: int = 250               # Adam steps on W+ and the noise maps
    lr: float = 0.1                # peak learning rate (ramped up over 5%, cosine down over the last 25%)
    latent_noise: float = 0.05     # start-of-run jitter of W+, in units of the w spread (decays to 0 at 75%)
    noise_regularize: float = 1e4  # weight of the noise maps' autocorrelation penalty (keeps them noise-like)
    perceptual: str = "auto"       # ReconstructionLoss kind: auto, lpips, clip or none
    feature_weight: float = 0.1    # weight of the perceptual term (1.0 cost 1 dB PSNR and weakened text edits)
    finetune_steps: int = 0        # PTI: Adam steps on the generator weights afterwards, latent fixed
    finetune_lr: float = 1e-3
    seed: int = 0                  # initial noise maps and latent jitter


@dataclass
class Inversion:
    """A given face expressed in the generator's terms: edits re-synthesise from here."""
    latent: torch.Tensor              # (1, n_latent, STYLE_DIM) W+ code
    noise: list[torch.Tensor]         # per-layer noise maps (1,1,h,w)
    caption: str                      # cleaned caption the latent was fitted with
    labels: torch.Tensor              # (S,S) int64 label map it was fitted with
    target: torch.Tensor              # (3,S,S) image in [-1,1] it reconstructs
    settings: InversionSettings       # how it was fitted ('auto' perceptual resolved to the kind used)
    losses: list[float] = field(default_factory=list)  # loss per step: W+ phase, then fine-tuning phase
    generator_state: dict | None = None  # fine-tuned (PTI) generator weights; None: the checkpoint's own
    photo: object = None                 # the FaceCrop of the photo it was cut from, for paste-back (not saved)


def latent_statistics(g, samples: int = MEAN_LATENT_SAMPLES) -> tuple[torch.Tensor, float]:
    """(mean w (1,D), RMS distance of w from it) over fixed z draws: where inversion starts and its scale."""
    rng = torch.Generator().manual_seed(MEAN_LATENT_SEED)
    z = torch.randn(samples, g.style_dim, generator=rng).to(_device(g))
    with torch.no_grad():
        w = g.style(z)
    mean = w.mean(0, keepdim=True)
    return mean, float((w - mean).square().sum(1).mean().sqrt())


def noise_regularization(noise: list[torch.Tensor]) -> torch.Tensor:
    """StyleGAN2 projector's penalty: squared autocorrelation at shift 1 of every noise map, on an image
    pyramid down to 8x8, so the optimiser cannot hide image content in the noise."""
    loss = noise[0].new_zeros(())
    for n in noise:
        while True:
            loss = loss + (n * n.roll(1, dims=3)).mean().square() + (n * n.roll(1, dims=2)).mean().square()
            if n.shape[-1] <= 8:
                break
            n = F.avg_pool2d(n, 2)
    return loss


def _normalize_noise_(noise: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for n in noise:
            n.sub_(n.mean()).div_(n.std())


def _learning_rate(peak: float, t: float, rampdown: float = 0.25, rampup: float = 0.05) -> float:
    ramp = min(1.0, (1.0 - t) / rampdown) * min(1.0, t / rampup)
    return peak * (0.5 - 0.5 * math.cos(ramp * math.pi))


def invert(g, text_encoder, cfg, image: torch.Tensor, labels: torch.Tensor, caption: str,
           settings: InversionSettings | None = None, progress: bool = False) -> Inversion:
    """Fit W+ and the noise maps so that g(labels, caption, W+, noise) reproduces `image`, then optionally
    fine-tune a copy of g on it (PTI).

    image: (3,S,S) in [-1,1]; labels: (S,S) int64; caption: cleaned (see prepare_captions); settings: None
    for the defaults.
    """
    settings = settings or InversionSettings()
    device = _device(g)
    target = image.to(device)[None]
    mask = model_mask(labels, cfg)[None].to(device)
    words, padding = _on(encode_caption(text_encoder, caption), device)
    loss_fn = ReconstructionLoss(target, text_encoder, settings.perceptual, settings.feature_weight)

    rng = torch.Generator().manual_seed(settings.seed)
    w_mean, w_spread = latent_statistics(g)
    latent = w_mean[:, None].repeat(1, g.n_latent, 1).requires_grad_(True)
    noise = [n.to(device).requires_grad_(True) for n in g.make_noise(1, generator=rng, device="cpu")]
    opt = torch.optim.Adam([latent, *noise], lr=settings.lr, betas=(0.9, 0.999))
    losses = []
    steps = tqdm(range(settings.steps), desc="inversion", unit="step", disable=not progress)
    for step in steps:
        t = step / settings.steps
        for group in opt.param_groups:
            group["lr"] = _learning_rate(settings.lr, t)
        jitter_scale = w_spread * settings.latent_noise * max(0.0, 1.0 - t / 0.75) ** 2
        jitter = torch.randn(latent.shape, generator=rng).to(device) * jitter_scale
        out = g(mask, words, latent + jitter, input_is_latent=True, word_padding=padding, noise=noise)
        recon = loss_fn(out)
        loss = recon + settings.noise_regularize * noise_regularization(noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _normalize_noise_(noise)
        losses.append(recon.item())
        steps.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)

    latent, noise = latent.detach(), [n.detach() for n in noise]
    tuned = _finetune(g, loss_fn, mask, words, padding, latent, noise, settings, losses, progress)
    used = replace(settings, perceptual=loss_fn.kind)
    return Inversion(latent.cpu(), [n.cpu() for n in noise], caption, labels.cpu(), image.cpu(), used, losses, tuned)


def _finetune(g, loss_fn, mask, words, padding, latent, noise, settings, losses, progress) -> dict | None:
    """PTI: tune a copy of g's weights so that the fixed latent reproduces the target (None when 0 steps)."""
    if settings.finetune_steps <= 0:
        return None
    tuned = copy.deepcopy(g).requires_grad_(True)  # stays in eval mode: no GCMF dropout
    opt = torch.optim.Adam(tuned.parameters(), lr=settings.finetune_lr)
    for _ in tqdm(range(settings.finetune_steps), desc="fine-tuning", unit="step", disable=not progress):
        loss = loss_fn(tuned(mask, words, latent, input_is_latent=True, word_padding=padding, noise=noise))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {k: v.detach().cpu() for k, v in tuned.state_dict().items()}


def save_inversion(inversion: Inversion, path: str | Path, checkpoint_hash: str) -> None:
    """Write the inversion atomically, tagged with the hash of the checkpoint it belongs to."""
    atomic_save({"format": INVERSION_FORMAT, "checkpoint_hash": checkpoint_hash, "latent": inversion.latent,
                 "noise": inversion.noise, "caption": inversion.caption, "labels": inversion.labels,
                 "target": inversion.target, "settings": asdict(inversion.settings),
                 "losses": inversion.losses, "generator_state": inversion.generator_state}, path)


def load_inversion(path: str | Path, checkpoint_hash: str) -> Inversion:
    """Read an inversion written by save_inversion for the checkpoint with `checkpoint_hash`."""
    data = load_formatted(path, INVERSION_FORMAT, "inversion written by scripts/manipulate.py", error=InputError)
    if data["checkpoint_hash"] != checkpoint_hash:
        raise InputError(f"inversion {path} was made with checkpoint {data['checkpoint_hash']}, "
                         f"not with this one ({checkpoint_hash}); invert the image again")
    return Inversion(data["latent"], list(data["noise"]), data["caption"], data["labels"], data["target"],
                     InversionSettings(**data["settings"]), list(data["losses"]), data["generator_state"])


# ---------------------------------------------------------------------------------------------------------------
# Edits


def generator_for(g, inversion: Inversion):
    """g itself, or a copy carrying the inversion's fine-tuned weights."""
    if inversion.generator_state is None:
        return g
    tuned = copy.deepcopy(g)
    tuned.load_state_dict(inversion.generator_state)
    return tuned


@torch.no_grad()
def edit(g, text_encoder, cfg, inversion: Inversion, caption: str | None = None,
         labels: torch.Tensor | None = None) -> torch.Tensor:
    """Re-synthesise the inverted face with a new cleaned caption and/or a new (S,S) label map (None: keep
    the inversion's) -> (3,S,S) on the CPU. Pass g through generator_for first when the inversion was
    fine-tuned; with neither changed this is the reconstruction."""
    device = _device(g)
    caption = inversion.caption if caption is None else caption
    labels = inversion.labels if labels is None else labels
    words, padding = _on(encode_caption(text_encoder, caption), device)
    noise = [n.to(device) for n in inversion.noise]
    out = g(model_mask(labels.cpu(), cfg)[None].to(device), words, inversion.latent.to(device),
            input_is_latent=True, word_padding=padding, noise=noise)
    return out[0].float().cpu()
