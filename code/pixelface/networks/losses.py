"""PixelFace+ objectives (PixelFace+/code/miscc/losses.py, PixelFace+/code/trainer.py:434-729): logistic
GAN + conditional BCE, lazy R1, path length, CLIP.

The conditional head returns logits and we use BCE-with-logits: the same function as the reference's
sigmoid followed by BCE, without its saturation at large logits.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


# D's loss is ½(real terms) + ⅓(fake terms + mismatch term). It is split in three so that the real and
# fake passes can each run backward on their own (gradient accumulation under DDP's no_sync).
def d_real_loss(real_logit, real_cond) -> torch.Tensor:
    """Logistic loss and conditional BCE on real images with their own captions."""
    return (F.softplus(-real_logit).mean() + _bce(real_cond, 1.0)) / 2


def d_fake_loss(fake_logit, fake_cond) -> torch.Tensor:
    """Logistic loss and conditional BCE on generated images with their captions."""
    return (F.softplus(fake_logit).mean() + _bce(fake_cond, 0.0)) / 3


def d_mismatch_loss(mismatch_cond) -> torch.Tensor:
    """Conditional BCE on images paired with another sample's caption."""
    return _bce(mismatch_cond, 0.0) / 3


def generator_adversarial_loss(fake_logit, fake_cond) -> torch.Tensor:
    """Non-saturating loss plus the conditional BCE that asks D to accept the caption."""
    return F.softplus(-fake_logit).mean() + _bce(fake_cond, 1.0)


def reconstruction_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between G's image and the real image its mask and caption came from.

    Not in the paper (a pix2pix-style L1 term, TRAIN.RECON_WEIGHT, off by default): where the mask fixes the
    layout pixel by pixel and the caption most colours, it hands G the pixel-exact target that the
    adversarial signal only conveys slowly.
    """
    return (fake - real).abs().mean()


def named_region_loss(fake: torch.Tensor, real: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between G's image and the real face inside each region the caption names,
    averaged over the (sample, region) pairs present: a 10-pixel pair of lips weighs as much as the hair.
    regions (B,R,H,W) from caption_regions.named_region_masks; 0 when no caption names a region present.

    Not in the paper (TRAIN.RECON_NAMED_WEIGHT): unlike the whole-image L1 it leaves everything no caption
    states (background, clothes, skin tone) to z, so those colours keep their spread."""
    area = regions.sum((2, 3))                                                       # (B,R)
    if not bool((area > 0).any()):
        return fake.sum() * 0
    error = torch.einsum("brhw,bchw->br", regions, (fake - real).abs()) / (3 * area.clamp(min=1))
    return error[area > 0].mean()


def chromaticity(images: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) images in [-1,1] -> (B,2,H,W) chromaticity (r-g)/sum and (b-g)/sum: colour without brightness,
    so light and shading do not change it. Clamped to the displayable range first, as an image is saved: a
    negative channel would make the ratio unbounded."""
    rgb = ((images + 1) / 2).clamp(0, 1) + 1 / 255
    r, g, b = rgb.unbind(1)
    return torch.stack([r - g, b - g], 1) / rgb.sum(1, keepdim=True)


def zone_chroma_loss(fake: torch.Tensor, real: torch.Tensor, zones: torch.Tensor,
                     weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute difference between G's and the real face's chromaticity relative to each face's own skin,
    inside the zones where make-up is worn (lips, cheeks, eyelids), each zone of each face weighed alike.
    zones (B,1+Z,H,W) from face_zones.makeup_zone_masks: the reference skin first.

    Not in the paper (TRAIN.RECON_ZONE_CHROMA_WEIGHT). Unlike the named-region L1 it applies whether or not the
    caption names the make-up: an absolute error's minimiser is the median, so where a caption asks for blush
    (every such real face has it) G is pulled toward blush, and where it is silent (most such faces have none)
    away from it. Relative chromaticity leaves skin tone, brightness and shading to z. `weights` (B,Z), if given,
    weigh each zone of each face in the mean (TRAIN.RECON_ZONE_NAMED_BOOST or _SHARE)."""
    reference, worn = zones[:, 0], zones[:, 1:]
    reference_area = reference.sum((1, 2))                                           # (B,)

    def relative(images):
        chroma = chromaticity(images)
        skin = torch.einsum("bhw,bchw->bc", reference, chroma) / reference_area.clamp(min=1)[:, None]
        return chroma - skin[..., None, None]
    error_map = (relative(fake) - relative(real)).abs().sum(1)                       # (B,H,W)
    area = worn.sum((2, 3))                                                          # (B,Z)
    judged = (area > 0) & (reference_area[:, None] > 0)
    if not bool(judged.any()):
        return fake.sum() * 0
    error = torch.einsum("bzhw,bhw->bz", worn, error_map) / area.clamp(min=1)
    if weights is None:
        return error[judged].mean()
    weights = weights.to(error)[judged]
    return (error[judged] * weights).sum() / weights.sum()


def recon_weight(base: float, fade_kimg: float, kimg: float) -> float:
    """RECON_WEIGHT, faded linearly to 0 over the first `fade_kimg` kimg when fade_kimg > 0."""
    return base * max(0.0, 1.0 - kimg / fade_kimg) if fade_kimg > 0 else base


def mode_seeking_loss(fake_a: torch.Tensor, fake_b: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor,
                      cap: float) -> torch.Tensor:
    """Diversity-sensitive term (Yang et al. 2019, DSGAN; Mao et al. 2019, MSGAN): minus the mean absolute image
    distance per unit of mean absolute z distance, per pair of samples of the same condition, capped at `cap`.
    Not in the paper: a conditional generator whose mask and caption fix most of the picture otherwise learns
    to ignore z (pix2pix's observation), and the colours no caption states stop varying."""
    ratio = (fake_a - fake_b).abs().flatten(1).mean(1) / (z_a - z_b).abs().mean(1)
    return -ratio.clamp(max=cap).mean()


def clip_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """Image->text contrastive CE over the local batch (the reference uses only this direction)."""
    labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return F.cross_entropy(logits_per_image, labels)


def clip_weight(base: float, schedule: bool, epoch: int) -> float:
    """The reference computed min(1, 0.03 + 0.005·epoch) but never applied it; here it is opt-in."""
    return base * min(1.0, 0.03 + 0.005 * epoch) if schedule else base


def rotate(x: torch.Tensor, shift: int = 2) -> torch.Tensor:
    """Mismatched captions: the batch rotated by `shift` (reference: cat(s[2:], s[:2]))."""
    return torch.cat([x[shift:], x[:shift]]) if x.shape[0] > shift else x.roll(1, 0)


def r1_penalty(logit: torch.Tensor, inputs: list[torch.Tensor]) -> torch.Tensor:
    """E‖∇_x D(x)‖² over all `inputs` together, with the graph kept so the penalty can be trained."""
    grads = torch.autograd.grad(logit.sum(), inputs, create_graph=True)
    return sum(g.pow(2).flatten(1).sum(1) for g in grads).mean()


def path_lengths(images: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """Per-sample ‖J_wᵀ y‖ with y ~ N(0, I)/√(H·W), averaged over the latent layers (StyleGAN2)."""
    noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
    (grad,) = torch.autograd.grad((images * noise).sum(), latents, create_graph=True)
    return grad.pow(2).sum(2).mean(1).sqrt()
