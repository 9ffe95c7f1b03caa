"""The four phases of a training step, as plain functions: D on real and fake faces (d_main), R1 (d_reg), G with
its adversarial, CLIP and optional terms (g_main) and the path-length penalty (g_reg).

The training loop (pixelface.training.trainer) and scripts/benchmark.py both call these, so the benchmark times
exactly what training runs. Each phase runs its forward passes and backward(s) and returns its loss, detached;
the caller steps the optimiser (the trainer after its finite check, the benchmark directly). What differs
between callers comes in a StepContext: the networks (DDP-wrapped and compiled in training, the reference-style
transcription in the benchmark's other side), the autocast, the loss scaler, the z source and what is recorded.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from pixelface.data.caption_regions import named_makeup_zones, named_region_masks
from pixelface.data.face_zones import MAKEUP_ZONES, makeup_zone_masks
from pixelface.networks import generation, layers, losses
from pixelface.networks.text_encoder import TextFeatures


class Networks(Protocol):
    """G and D as a phase calls them. `synced`: gradients are averaged across DDP ranks in this pass (False:
    the pass needs no gradient for that network, or accumulates it locally); `main`: one of the main phases,
    which may run compiled (R1 and path length differentiate twice and stay eager)."""

    def generate(self, masks, feats: TextFeatures, z: list[torch.Tensor], *, synced: bool, main: bool,
                 return_latents: bool = False): ...

    def discriminate(self, images, masks, sentences: list[torch.Tensor], *, synced: bool, main: bool): ...

    def accumulating_d(self) -> contextlib.AbstractContextManager: ...


@dataclass
class PhaseBatch:
    """One step's inputs: real images, the generator's mask input, the captions' features, the rotated
    sentences (the mismatched captions of D's matching term) and, with TRAIN.RECON_NAMED_WEIGHT, the
    caption-named region masks (B,R,S,S); with TRAIN.RECON_ZONE_CHROMA_WEIGHT, the make-up zones (B,4,S,S) and,
    with TRAIN.RECON_ZONE_NAMED_BOOST or TRAIN.RECON_ZONE_NAMED_SHARE, their weights (B,3)."""
    images: torch.Tensor
    masks: torch.Tensor
    feats: TextFeatures
    wrong: torch.Tensor
    regions: torch.Tensor | None = None
    zones: torch.Tensor | None = None
    zone_weights: torch.Tensor | None = None

    @classmethod
    def build(cls, train, images, masks, feats: TextFeatures, captions: list[str], labels: torch.Tensor,
              wrong: torch.Tensor | None = None, named_zone_weight: torch.Tensor | None = None):
        """The batch of one step, with the region and zone masks the TRAIN options ask for (labels (B,S,S));
        the mismatched sentences are `wrong` if given, else the batch's own rotated. A make-up zone the caption
        names weighs `named_zone_weight` (len(MAKEUP_ZONES),) if given (TRAIN.RECON_ZONE_NAMED_SHARE's, from
        caption_regions.named_zone_weights), else 1 + TRAIN.RECON_ZONE_NAMED_BOOST; the others weigh 1."""
        regions = (named_region_masks(captions, labels, train.RECON_NAMED_ZONES)
                   if train.RECON_NAMED_WEIGHT > 0 else None)
        zones = makeup_zone_masks(labels) if train.RECON_ZONE_CHROMA_WEIGHT > 0 else None
        if named_zone_weight is None and train.RECON_ZONE_NAMED_BOOST > 0:
            named_zone_weight = torch.full((len(MAKEUP_ZONES),), 1.0 + train.RECON_ZONE_NAMED_BOOST)
        zone_weights = (1 + (named_zone_weight - 1) * named_makeup_zones(captions)
                        if zones is not None and named_zone_weight is not None else None)
        wrong = losses.rotate(feats.sentence) if wrong is None else wrong
        return cls(images, masks, feats, wrong, regions, zones, zone_weights)


@dataclass
class StepContext:
    cfg: object
    nets: Networks
    text_encoder: torch.nn.Module
    z: Callable[[int], list[torch.Tensor]]            # n -> [z (n, STYLE_DIM)]
    autocast: Callable[[], contextlib.AbstractContextManager]          # the main phases' (see autocasts)
    scale: Callable[[torch.Tensor], torch.Tensor]      # the loss scaler (fp16) or the identity
    record: Callable[..., None]                        # record(**{"loss/D": value, ...})
    kimg: float = 0.0                                  # images shown so far / 1000 (the L1 fade)
    epoch: int = 0                                     # the CLIP schedule
    reduce_mean: Callable[[torch.Tensor], torch.Tensor] = lambda x: x   # across ranks (path-length mean)
    reg_autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext   # R1, path length


def amp_dtype(amp: str, cfg, device: torch.device) -> torch.dtype | None:
    """TRAIN.AMP as a dtype (None: float32). "auto" is bf16 where sampling's "auto" picks it, a CPU with bf16 units
    and a generator of the reference's width (docs/speed.md), float32 elsewhere."""
    if amp == "auto":
        return generation.autocast_dtype("auto", cfg, device)
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def precision_name(dtype: torch.dtype | None) -> str:
    """"float32" for None (no autocast), else the dtype's short name ("bfloat16")."""
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")


def autocasts(device_type: str, dtype: torch.dtype | None) -> tuple[Callable, Callable]:
    """(main, regularisation) phase autocast factories for `dtype` (None: float32 everywhere).

    bf16 covers every phase: it has float32's range, so R1's and path length's double backward cannot overflow.
    fp16 (GPU) covers the main phases only: second-order gradients are the first to leave its narrow range.
    """
    if dtype is None:
        return contextlib.nullcontext, contextlib.nullcontext

    def main():
        return torch.autocast(device_type, dtype=dtype)
    return main, (main if dtype is torch.bfloat16 else contextlib.nullcontext)


def d_main(ctx: StepContext, batch: PhaseBatch) -> torch.Tensor:
    """D's logistic loss on real and fake faces, plus the matching term on mismatched captions (on the fake
    faces as the reference does, or on the real ones with TRAIN.MISMATCH_ON=real)."""
    images, masks, feats, wrong = batch.images, batch.masks, batch.feats, batch.wrong
    with torch.no_grad(), ctx.autocast():
        fake = ctx.nets.generate(masks, feats, ctx.z(images.shape[0]), synced=False, main=True)
    on_real = ctx.cfg.TRAIN.MISMATCH_ON == "real"
    with ctx.nets.accumulating_d(), ctx.autocast():    # real half: accumulate locally, synced with the fake half
        logit, cond = ctx.nets.discriminate(images, masks, [feats.sentence, wrong] if on_real else [feats.sentence],
                                            synced=True, main=True)
        loss_real = losses.d_real_loss(logit, cond[0])
        if on_real:
            loss_real = loss_real + losses.d_mismatch_loss(cond[1])
    ctx.scale(loss_real).backward()
    with ctx.autocast():
        f_logit, f_cond = ctx.nets.discriminate(fake, masks, [feats.sentence] if on_real else [feats.sentence, wrong],
                                                synced=True, main=True)
        loss_fake = losses.d_fake_loss(f_logit, f_cond[0])
        if not on_real:
            loss_fake = loss_fake + losses.d_mismatch_loss(f_cond[1])
    ctx.scale(loss_fake).backward()
    loss = loss_real.detach() + loss_fake.detach()
    ctx.record(**{"loss/D": loss, "scores/real": logit.mean(), "scores/fake": f_logit.mean()})
    return loss


def d_reg(ctx: StepContext, batch: PhaseBatch) -> torch.Tensor:
    """R1 on the real faces (lazy: weighted by R1_INTERVAL), on the image or on the image and mask channels."""
    train = ctx.cfg.TRAIN
    images = batch.images.detach().requires_grad_(True)
    masks = batch.masks.detach().requires_grad_(not train.R1_IMAGE_ONLY)   # reference: the 6-channel input
    with ctx.reg_autocast():
        logit, cond = ctx.nets.discriminate(images, masks, [batch.feats.sentence], synced=True, main=False)
    penalty = losses.r1_penalty(logit, [images] if train.R1_IMAGE_ONLY else [images, masks])
    # The zero terms keep every D parameter in the graph, as DDP requires.
    loss = train.R1_GAMMA / 2 * train.R1_INTERVAL * penalty + 0 * logit[0, 0] + 0 * cond[0, 0]
    ctx.scale(loss).backward()
    ctx.record(**{"loss/R1": penalty.detach()})
    return loss.detach()


def repeat_first_half(batch: PhaseBatch) -> PhaseBatch:
    """The batch with its second half replaced by a copy of its first half (an odd last item is kept)."""
    half = batch.masks.shape[0] // 2

    def repeat(x):
        return None if x is None else torch.cat([x[:half], x[:half], x[2 * half:]])
    feats = batch.feats
    return PhaseBatch(repeat(batch.images), repeat(batch.masks),
                      TextFeatures(repeat(feats.words), repeat(feats.padding), repeat(feats.sentence),
                                   repeat(feats.tokens)), batch.wrong, repeat(batch.regions), repeat(batch.zones),
                      repeat(batch.zone_weights))


def g_main(ctx: StepContext, batch: PhaseBatch) -> torch.Tensor:
    """G's non-saturating loss against D's unconditional and conditional scores, the CLIP loss, and the
    optional L1, named-region L1, make-up zone and mode-seeking terms (README deviations table)."""
    train = ctx.cfg.TRAIN
    seeking = train.MODE_SEEKING_WEIGHT > 0 and batch.masks.shape[0] >= 2
    if seeking:   # the second half repeats the first half's conditions, drawn with other z
        batch = repeat_first_half(batch)
    images, masks, feats = batch.images, batch.masks, batch.feats
    z = ctx.z(masks.shape[0])
    with ctx.autocast():
        fake = ctx.nets.generate(masks, feats, z, synced=True, main=True)
        logit, cond = ctx.nets.discriminate(fake, masks, [feats.sentence], synced=False, main=True)
        loss = losses.generator_adversarial_loss(logit, cond[0])
    ctx.record(**{"loss/G": loss.detach()})
    recon_weight = losses.recon_weight(train.RECON_WEIGHT, train.RECON_FADE_KIMG, ctx.kimg)
    if recon_weight > 0:
        recon = losses.reconstruction_loss(fake.float(), images)
        loss = loss + recon_weight * recon
        ctx.record(**{"loss/recon": recon.detach()})
    if train.RECON_NAMED_WEIGHT > 0:
        named = losses.named_region_loss(fake.float(), images, batch.regions.to(fake.device))
        loss = loss + train.RECON_NAMED_WEIGHT * named
        ctx.record(**{"loss/recon_named": named.detach()})
    if train.RECON_ZONE_CHROMA_WEIGHT > 0:
        weights = None if batch.zone_weights is None else batch.zone_weights.to(fake.device)
        zone = losses.zone_chroma_loss(fake.float(), images, batch.zones.to(fake.device), weights)
        loss = loss + train.RECON_ZONE_CHROMA_WEIGHT * zone
        ctx.record(**{"loss/recon_zone_chroma": zone.detach()})
    if seeking:
        half = masks.shape[0] // 2
        seek = losses.mode_seeking_loss(fake[:half].float(), fake[half:2 * half].float(), z[0][:half],
                                        z[0][half:2 * half], train.MODE_SEEKING_CAP)
        loss = loss + train.MODE_SEEKING_WEIGHT * seek
        ctx.record(**{"loss/mode_seeking": seek.detach()})
    weight = losses.clip_weight(train.CLIP_WEIGHT, train.CLIP_SCHEDULE, ctx.epoch)
    if weight > 0:
        clip = losses.clip_loss(ctx.text_encoder.logits_per_image(fake.float(), feats.tokens, train.CLIP_NORMALIZE))
        loss = loss + weight * clip
        ctx.record(**{"loss/CLIP": clip.detach(), "loss/CLIP_weight": weight})
    ctx.scale(loss).backward()
    return loss.detach()


def g_reg(ctx: StepContext, batch: PhaseBatch, pl_mean: float) -> tuple[torch.Tensor, float]:
    """The path-length penalty (lazy: weighted by PL_INTERVAL) on PL_BATCH_SHRINK of the batch -> (loss, the
    running mean path length updated with this batch's, to keep only if the step is taken)."""
    train = ctx.cfg.TRAIN
    n = max(1, batch.masks.shape[0] // train.PL_BATCH_SHRINK)
    feats = batch.feats
    part = TextFeatures(feats.words[:n], None if feats.padding is None else feats.padding[:n], feats.sentence[:n],
                        feats.tokens[:n])
    with ctx.reg_autocast(), layers.modulated_activations():     # cheaper double backward, same function
        fake, latents = ctx.nets.generate(batch.masks[:n], part, ctx.z(n), synced=True, main=False,
                                          return_latents=True)
    lengths = losses.path_lengths(fake, latents)   # float32: ToRGB's
    batch_mean = ctx.reduce_mean(lengths.mean().detach().clone())   # keeps pl_mean equal on all ranks
    pl_mean = pl_mean + train.PL_DECAY * (batch_mean.item() - pl_mean)
    penalty = (lengths - pl_mean).pow(2).mean()
    loss = train.PL_WEIGHT * train.PL_INTERVAL * penalty + 0 * fake[0, 0, 0, 0]
    ctx.scale(loss).backward()
    ctx.record(**{"loss/PL": penalty.detach(), "pl/length": lengths.mean().detach(), "pl/mean": pl_mean})
    return loss.detach(), pl_mean
