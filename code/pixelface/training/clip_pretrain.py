"""Contrastive pretraining of a small CLIP (TEXT.CUSTOM) on a dataset's image-caption pairs.

This stands in for OpenAI's CLIP where no public model fits, e.g. the synthetic face dataset: the result is
a `pixelface-clip` file that TextEncoder loads by path (TEXT.MODEL: custom, TEXT.PRETRAINED: <file>).
Training follows CLIP: symmetric cross-entropy over the in-batch image-text similarities with a learned
temperature, images normalised with CLIP's mean/std, half of them mirrored. Each epoch pairs every train
image with one of its 10 captions (FaceDataset's per-epoch choice); the test split is scored by text->image
retrieval with one fixed caption per image and all test images as the gallery.

With TEXT.PRETRAIN_HARD_NEGATIVES each image is also scored against hard negatives (pixelface.data.hard_negatives):
its caption plus a sentence naming an attribute it lacks ("she has rosy cheeks" for a face none of whose captions
mentions them).

Tuned on synthface (4,000 train faces at 64 px): TEXT.CUSTOM with 4 vision and 2 text layers of width 128, context
32; batch 64, lr 1e-3 (these defaults); cfg/synthface.yml uses 8-px patches (65 image tokens: 16-px ones hardly
see a blush, docs/diagnosis.md section 16) and TEXT.PRETRAIN_EPOCHS 10.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.tokenizer import SimpleTokenizer
from PIL import Image

from pixelface.data.datasets import DatasetError, FaceDataset
from pixelface.data.hard_negatives import HardNegatives
from pixelface.data.images import read_rgb
from pixelface.data.images import resize_and_crop
from pixelface.networks.checkpoint import atomic_save
from pixelface.networks.text_encoder import CLIP_FORMAT, build_custom_clip, clip_image_input, custom_arch, encode_text

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps its temperature so logits stay <= 100 x cosine
WARMUP_FRACTION = 0.05             # share of steps with a linear learning-rate warm-up, then cosine decay
WEIGHT_DECAY = 0.1                 # on matrices only; gains, biases, embeddings and the temperature are exempt
EVAL_BATCH = 500                   # images or captions per forward when scoring retrieval
IMAGE_MEAN = torch.tensor(open_clip.OPENAI_DATASET_MEAN)
IMAGE_STD = torch.tensor(open_clip.OPENAI_DATASET_STD)

def load_images(dataset: FaceDataset, size: int) -> torch.Tensor:
    """Every image of `dataset` as uint8 (N,3,size,size): read as FaceDataset does, then resized for CLIP.

    Only the images are read (not the masks), once, so that epochs cost no decoding.
    """
    arrays = []
    for path in dataset.image_paths:
        arrays.append(np.asarray(resize_and_crop(read_rgb(path, "image"), dataset.size, Image.BILINEAR)))
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    if dataset.size == size:
        return images
    resized = [F.interpolate(images[k:k + EVAL_BATCH].float(), size=(size, size), mode="bilinear",
                             align_corners=False, antialias=False).round().clamp(0, 255).to(torch.uint8)
               for k in range(0, len(images), EVAL_BATCH)]
    return torch.cat(resized)


def clip_input(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images from load_images -> the CLIP input TextEncoder.encode_image(..., normalize=True) builds."""
    signed = images_uint8.float() / 127.5 - 1.0  # the [-1,1] range FaceDataset and G use
    return clip_image_input(signed, signed.shape[-1], IMAGE_MEAN, IMAGE_STD, normalize=True)


class CaptionTokens:
    """CLIP BPE ids of captions, memoised: template captions repeat a lot across images and epochs."""

    def __init__(self, context_length: int):
        self.tokenizer = SimpleTokenizer(context_length=context_length)
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        new = [c for c in dict.fromkeys(captions) if c not in self.cache]
        if new:
            self.cache.update(zip(new, self.tokenizer(new)))
        return torch.stack([self.cache[c] for c in captions])


def contrastive_loss(clip, images: torch.Tensor, tokens: torch.Tensor,
                     negative_tokens: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric cross-entropy: image i belongs with caption i, in both directions. Hard negative captions
    (N, context), if given, are further wrong answers for every image (image-to-text direction only)."""
    image = F.normalize(clip.encode_image(images), dim=-1)
    text = F.normalize(encode_text(clip, tokens), dim=-1)
    scale = clip.logit_scale.exp()
    logits = scale * image @ text.t()
    labels = torch.arange(len(images))
    image_logits = logits
    if negative_tokens is not None and len(negative_tokens):
        negative = F.normalize(encode_text(clip, negative_tokens), dim=-1)
        image_logits = torch.cat([logits, scale * image @ negative.t()], dim=1)
    return (F.cross_entropy(image_logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


@torch.no_grad()
def retrieval_metrics(clip, images_uint8: torch.Tensor, tokens: torch.Tensor) -> dict:
    """Text->image retrieval: caption i's rank of image i among all images; top-1/top-5 hit rates and chance.

    Leaves `clip` in eval mode.
    """
    clip.eval()
    image = torch.cat([F.normalize(clip.encode_image(clip_input(images_uint8[k:k + EVAL_BATCH])), dim=-1)
                       for k in range(0, len(images_uint8), EVAL_BATCH)])
    text = torch.cat([F.normalize(encode_text(clip, tokens[k:k + EVAL_BATCH]), dim=-1)
                      for k in range(0, len(tokens), EVAL_BATCH)])
    sim = text @ image.t()
    # images scoring strictly above the right one; exact ties count in its favour
    better = (sim > sim.diagonal()[:, None]).sum(dim=1)
    n = len(images_uint8)
    return {"top1": (better < 1).float().mean().item(), "top5": (better < 5).float().mean().item(),
            "chance_top1": 1 / n, "chance_top5": min(5, n) / n, "gallery": n}


def _optimizer(clip, lr: float) -> torch.optim.Optimizer:
    decay = [p for n, p in clip.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in clip.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                              {"params": rest, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98), eps=1e-6,
                             fused=True)  # fused: the 6.3M-entry BPE embedding makes the plain loop the bottleneck


def _lr_factor(step: int, total: int) -> float:
    warmup = max(1, round(WARMUP_FRACTION * total))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_epoch(clip, optimizer, scheduler, images: torch.Tensor, captions: list[str], tokens: CaptionTokens,
                batch_size: int, generator: torch.Generator, hard_negatives: HardNegatives | None = None) -> float:
    """One pass over the (image i, caption i) pairs in random order, dropping the last partial batch.

    Returns the mean contrastive loss. The scheduler steps once per batch.
    """
    clip.train()
    order = torch.randperm(len(images), generator=generator)
    losses = []
    for k in range(len(images) // batch_size):
        batch = order[k * batch_size:(k + 1) * batch_size]
        # Mirror half the faces: captions never say left or right, and the dataset is small.
        flip = (torch.rand(len(batch), generator=generator) < 0.5)[:, None, None, None]
        pixels = clip_input(images[batch])
        pixels = torch.where(flip, pixels.flip(-1), pixels)
        indices = batch.tolist()
        texts = [captions[i] for i in indices]
        negatives = None
        if hard_negatives is not None:
            negatives = [n for n in hard_negatives(indices, texts, generator) if n is not None]
            negatives = tokens(negatives) if negatives else None
        loss = contrastive_loss(clip, pixels, tokens(texts), negatives)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            clip.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        losses.append(loss.item())
    return float(np.mean(losses))


def pretrain_clip(cfg, out: str | Path, epochs: int | None = None, batch_size: int = 64, lr: float = 1e-3,
                  seed: int | None = None, force: bool = False, log=print) -> tuple[open_clip.CLIP, dict]:
    """Train a TEXT.CUSTOM CLIP on DATA's train split, score retrieval on its test split, save it to `out`.

    cfg: full config (DATA for the images and captions, TEXT.CUSTOM for the architecture);
    out: checkpoint file to write atomically ({format, custom, state_dict, metrics, train});
    epochs: passes over the train images (default TEXT.PRETRAIN_EPOCHS);
    batch_size: image-caption pairs per contrastive batch (the negatives of each pair);
    lr: peak AdamW learning rate (warm-up, then cosine decay to 0);
    seed: initialisation and batch order (default cfg.SEED); captions follow FaceDataset's (SEED, epoch) choice;
    force: overwrite an existing `out` (otherwise refuse before any work);
    log: where the progress lines go.
    Returns the trained CLIP (eval mode) and the test retrieval metrics that are also stored in the file.
    """
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} already exists; pass --force to overwrite it")
    epochs = cfg.TEXT.PRETRAIN_EPOCHS if epochs is None else epochs
    seed = cfg.SEED if seed is None else seed
    if epochs < 1 or batch_size < 2 or lr <= 0:
        raise ValueError(f"need epochs >= 1, batch >= 2 and lr > 0; got {epochs}, {batch_size}, {lr}")
    arch = custom_arch(cfg)
    train_set, test_set = FaceDataset(cfg, "train", train=True), FaceDataset(cfg, "test", train=False)
    if len(train_set) < 2:
        raise DatasetError(f"{train_set.index_path}: contrastive training needs at least 2 train images")
    batch_size = min(batch_size, len(train_set))
    start = time.time()
    train_images = load_images(train_set, arch["IMAGE_SIZE"])
    tokens = CaptionTokens(arch["CONTEXT_LENGTH"])
    hard_negatives = HardNegatives(train_set) if cfg.TEXT.PRETRAIN_HARD_NEGATIVES else None
    log(f"pretrain_clip: {len(train_set)} train images at {arch['IMAGE_SIZE']} px, batch {batch_size}, "
        f"{epochs} epochs" + (", hard negatives" if hard_negatives else ""))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clip = build_custom_clip(arch)
    generator = torch.Generator().manual_seed(seed)
    optimizer = _optimizer(clip, lr)
    total = epochs * (len(train_set) // batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, total))
    for epoch in range(epochs):
        train_set.set_epoch(epoch)
        captions = [train_set.caption(i) for i in range(len(train_set))]
        loss = train_epoch(clip, optimizer, scheduler, train_images, captions, tokens, batch_size, generator,
                           hard_negatives)
        log(f"epoch {epoch + 1}/{epochs}  loss {loss:.4f}  {time.time() - start:.0f}s")

    test_tokens = tokens([test_set.caption(i) for i in range(len(test_set))])
    metrics = retrieval_metrics(clip, load_images(test_set, arch["IMAGE_SIZE"]), test_tokens)
    log(f"test text->image retrieval over {metrics['gallery']} images: top1 {metrics['top1']:.3f} "
        f"top5 {metrics['top5']:.3f} (chance {metrics['chance_top1']:.4f}/{metrics['chance_top5']:.4f})")
    if out.exists() and not force:  # appeared while we trained
        raise FileExistsError(f"{out} already exists; pass --force to overwrite it")
    atomic_save({"format": CLIP_FORMAT, "custom": arch, "state_dict": clip.state_dict(), "metrics": metrics,
                 "train": {"dataset": cfg.DATA.NAME, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                           "hard_negatives": hard_negatives is not None,
                           "seed": seed, "seconds": round(time.time() - start, 1)}}, out)
    log(f"pretrain_clip: wrote {out} in {time.time() - start:.0f}s")
    return clip, metrics
