"""A compact U-Net face parser: RGB face -> 19-class CelebAMask-HQ label map.

It scores how faithfully generated faces follow their input masks (the mask-accuracy metric) and gives a mask
for a user's photo before manipulation. It is trained on a dataset's own (image, mask) pairs; its accuracy on
the dataset's real test images is the ceiling for the mask accuracy of generated ones.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pixelface.data.datasets import FaceDataset
from pixelface.data.masks import LABEL_ID, NUM_CLASSES, accuracy_from_confusion, confusion_matrix
from pixelface.networks.checkpoint import atomic_save, load_formatted

FORMAT = "pixelface-parser"
WEIGHT_SAMPLE = 512  # train images whose label maps set the class weights of the loss

# A horizontal flip turns a left part into a right one: the label permutation that goes with it.
_SWAPPED = (("l_eye", "r_eye"), ("l_brow", "r_brow"), ("l_ear", "r_ear"))
FLIP_LABELS = list(range(NUM_CLASSES))
for _left, _right in _SWAPPED:
    FLIP_LABELS[LABEL_ID[_left]], FLIP_LABELS[LABEL_ID[_right]] = LABEL_ID[_right], LABEL_ID[_left]


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


MAX_LOGIT_SIDE = 1024   # predict() resizes logits up to this side, then labels (nearest) beyond it

class FaceParser(nn.Module):
    """U-Net with `depth` poolings; level i has width * 2**i channels (width 8, depth 3: 123k parameters;
    width 16: 488k). Two 3x3 conv + BatchNorm + ReLU per level, nearest upsampling, skip concatenation.

    image_size: the resolution the parser was trained at; `predict` resizes other inputs to it and its
    answer back, so a parser trained at 64 px can label a 256 px face.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 8, depth: int = 3, image_size: int = 64):
        super().__init__()
        self.arch = {"num_classes": num_classes, "width": width, "depth": depth, "image_size": image_size}
        widths = [width * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList([_conv_block(3, widths[0])] +
                                  [_conv_block(widths[i], widths[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList([_conv_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) images in [-1,1], H and W divisible by 2**depth -> (B,num_classes,H,W) logits."""
        return self.head(self.levels(images)[-1])

    def levels(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Every level's activations, down the U-Net then up it; the last feeds the head."""
        step = 2 ** self.arch["depth"]
        if images.shape[-1] % step or images.shape[-2] % step:
            raise ValueError(f"FaceParser: image size {tuple(images.shape[-2:])} must be divisible by {step}")
        out = []
        x = images
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            out.append(x)
        skips = out[:-1]
        for block, skip in zip(self.up, reversed(skips)):
            x = block(torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), skip], 1))
            out.append(x)
        return out

    def _at_training_size(self, images: torch.Tensor) -> torch.Tensor:
        size = self.arch["image_size"]
        x = images.to(next(self.parameters()).device, torch.float32)
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return x

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) images in [-1,1] -> (B,D) features for distribution distances: every level's activations
        averaged over the image (D = the sum of the level widths), at the training resolution. The parser is
        trained on real faces alone, so this space is independent of the generator and its CLIP."""
        was_training = self.training
        self.eval()
        pooled = torch.cat([level.mean((2, 3)) for level in self.levels(self._at_training_size(images))], 1)
        self.train(was_training)
        return pooled

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) images in [-1,1] of any size -> (B,H,W) int64 labels, parsed at the training resolution."""
        was_training = self.training
        self.eval()
        x = self._at_training_size(images)
        logits = self(x)
        height, width = images.shape[-2:]
        # Logits are resized smoothly up to MAX_LOGIT_SIDE, the labels beyond it: 19 float maps of an 8000 px photo
        # would take 4.9 GB.
        scale = min(1.0, MAX_LOGIT_SIDE / max(height, width))
        smooth = (max(1, round(height * scale)), max(1, round(width * scale)))
        if tuple(logits.shape[-2:]) != smooth:
            logits = F.interpolate(logits, size=smooth, mode="bilinear", align_corners=False)
        labels = logits.argmax(1)
        if smooth != (height, width):
            labels = F.interpolate(labels[:, None].float(), size=(height, width), mode="nearest")[:, 0].long()
        self.train(was_training)
        return labels


def flip_batch(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror images and label maps left-right, swapping the left/right part labels."""
    permutation = torch.tensor(FLIP_LABELS, device=labels.device)
    return images.flip(-1), permutation[labels.flip(-1)]


def class_weights(frequencies: torch.Tensor) -> torch.Tensor:
    """Cross-entropy weights 1/sqrt(frequency), scaled to weigh an average pixel 1: eyes, brows and lips cover
    a few pixels each and would otherwise be learnt long after skin and hair. Absent classes get weight 0."""
    freq = frequencies.double() / frequencies.sum()
    weights = torch.where(freq > 0, freq.clamp_min(1e-12).rsqrt(), torch.zeros_like(freq))
    return (weights / (freq * weights).sum()).float()


def fit_parser(parser: FaceParser, batches: Callable[[int], object], steps_per_epoch: int, epochs: int,
               lr: float = 1e-2, generator: torch.Generator | None = None, weights: torch.Tensor | None = None,
               log: Callable[[str], None] = print) -> None:
    """Train with (class-weighted) cross-entropy, Adam and a cosine learning-rate decay; half of each batch is
    mirrored.

    batches(epoch) yields (images (B,3,H,W) in [-1,1], labels (B,H,W) int64) for one epoch.
    """
    device = next(parser.parameters()).device
    weights = weights.to(device) if weights is not None else None
    optimizer = torch.optim.Adam(parser.parameters(), lr=lr)
    total = max(1, epochs * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    parser.train()
    for epoch in range(epochs):
        start, losses = time.time(), []
        for images, labels in batches(epoch):
            images, labels = images.to(device), labels.to(device)
            flip = torch.rand(images.shape[0], generator=generator) < 0.5
            if flip.any():
                images[flip], labels[flip] = flip_batch(images[flip], labels[flip])
            loss = F.cross_entropy(parser(images), labels, weight=weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        log(f"parser epoch {epoch + 1}/{epochs}: loss {sum(losses) / max(1, len(losses)):.4f} "
            f"({time.time() - start:.0f} s)")
    parser.eval()


def evaluate_parser(parser: FaceParser, batches) -> dict[str, float]:
    """{pixel_acc, miou} of the parser over (images, labels) batches, pooled over all pixels."""
    confusion = torch.zeros(parser.arch["num_classes"], parser.arch["num_classes"], dtype=torch.int64)
    for images, labels in batches:
        confusion += confusion_matrix(parser.predict(images).cpu(), labels.cpu(), parser.arch["num_classes"])
    return accuracy_from_confusion(confusion)


def label_frequencies(dataset, count: int, seed: int) -> torch.Tensor:
    """(NUM_CLASSES,) pixel counts of each class over `count` random items of a FaceDataset."""
    picks = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count]
    totals = torch.zeros(NUM_CLASSES, dtype=torch.int64)
    for i in picks.tolist():
        totals += torch.bincount(dataset[i]["labels"].flatten(), minlength=NUM_CLASSES)
    return totals


def _image_label_batches(dataset, batch_size: int, shuffle: bool, workers: int, seed: int):
    """A function epoch -> iterator of (images, labels) over a FaceDataset, reshuffled per epoch."""
    def batches(epoch: int = 0):
        generator = torch.Generator().manual_seed(seed + epoch)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle,
                                             num_workers=workers, generator=generator)
        for item in loader:
            yield item["image"], item["labels"]
    return batches


def train_parser(cfg, out: str | Path, *, epochs: int = 3, batch_size: int = 8, lr: float = 1e-2, width: int = 8,
                 depth: int = 3, device: str = "cpu", overwrite: bool = False,
                 log: Callable[[str], None] = print) -> dict[str, float]:
    """Train a FaceParser on the (image, labels) pairs of cfg's train split, measure it on the test split and
    save it to `out` -> its test {pixel_acc, miou}. Existing files are kept unless `overwrite`."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    train_set, test_set = FaceDataset(cfg, "train", train=False), FaceDataset(cfg, "test", train=False)
    if len(train_set) < batch_size:
        raise ValueError(f"the train split of {cfg.DATA.ROOT} has {len(train_set)} images, fewer than the batch "
                         f"size {batch_size}")
    torch.manual_seed(cfg.SEED)
    parser = FaceParser(NUM_CLASSES, width, depth, cfg.DATA.IMAGE_SIZE).to(device)
    log(f"parser: {sum(p.numel() for p in parser.parameters()) / 1e3:.0f}k parameters, {len(train_set)} train / "
        f"{len(test_set)} test images at {cfg.DATA.IMAGE_SIZE} px")
    workers = cfg.DATA.NUM_WORKERS
    start = time.time()
    weights = class_weights(label_frequencies(train_set, WEIGHT_SAMPLE, cfg.SEED))
    fit_parser(parser, _image_label_batches(train_set, batch_size, True, workers, cfg.SEED),
               len(train_set) // batch_size, epochs, lr, torch.Generator().manual_seed(cfg.SEED), weights, log)
    seconds = time.time() - start
    test = evaluate_parser(parser, _image_label_batches(test_set, 2 * batch_size, False, workers, cfg.SEED)())
    metrics = {"test_pixel_acc": test["pixel_acc"], "test_miou": test["miou"], "epochs": float(epochs),
               "train_seconds": seconds}
    save_parser(parser, out, metrics, {"name": cfg.DATA.NAME, "root": str(cfg.DATA.ROOT)})
    return metrics


def save_parser(parser: FaceParser, path: str | Path, metrics: dict[str, float], dataset: dict[str, str]) -> None:
    """Write the parser with its architecture, its measured accuracy and the dataset it learnt, atomically."""
    state = {k: v.cpu() for k, v in parser.state_dict().items()}
    atomic_save({"format": FORMAT, "arch": parser.arch, "state_dict": state, "metrics": metrics,
                 "dataset": dataset}, path)


def load_parser(path: str | Path, device="cpu") -> FaceParser:
    """A FaceParser in eval mode from a file written by train_parser (weights only: no pickled code runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"face parser {path} does not exist; train one with scripts/train_parser.py")
    ckpt = load_formatted(path, FORMAT, "face parser written by train_parser")
    parser = FaceParser(**ckpt["arch"])
    parser.load_state_dict(ckpt["state_dict"])
    return parser.to(device).eval().requires_grad_(False)
