"""PixelFace+ discriminator (PixelFace+/code/model.py:194-311, Pixel_Discriminator): StyleGAN2 residual D
on cat[image, mask] plus an AttnGAN-style conditional head on the CLIP sentence embedding.

Differences from the reference, both deliberate:
* the conditional head returns a LOGIT; the losses apply binary_cross_entropy_with_logits, which
  is sigmoid + BCE computed stably;
* minibatch stddev works for any batch: the group is the largest divisor of B that is ≤ 4
  (the reference needs B divisible by min(B, 4)).

One difference is opt-in: the conditional head's spectral norm. By default it is torch's (u then v,
in training only); `spectral_norm="reference"` steps v then u on every call, evaluation included,
as the reference does. Both keep u and v under the same state-dict names.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm

from pixelface.data.mask_input import mask_channels_from_config
from pixelface.networks.layers import ConvLayer, EqualLinear, channel_table

STDDEV_GROUP = 4
RESIDUAL_GAIN = 1.0 / math.sqrt(2.0)
SPECTRAL_NORMS = ("torch", "reference")


class ResBlock(nn.Module):
    """3×3 conv, blurred stride-2 3×3 conv, blurred stride-2 1×1 skip; sum / √2."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = ConvLayer(in_ch, in_ch, 3)
        # The residual 1/√2 is folded into both branches (leaky ReLU is positively homogeneous).
        self.conv2 = ConvLayer(in_ch, out_ch, 3, downsample=True, out_gain=RESIDUAL_GAIN)
        self.skip = ConvLayer(in_ch, out_ch, 1, downsample=True, bias=False, activate=False,
                              out_gain=RESIDUAL_GAIN)

    def forward(self, x):
        return self.conv2(self.conv1(x)) + self.skip(x)


def stddev_group(batch: int, group_max: int = STDDEV_GROUP) -> int:
    """Largest group size ≤ min(batch, group_max) that divides the batch."""
    return max(g for g in range(1, min(batch, group_max) + 1) if batch % g == 0)


def minibatch_stddev(x: torch.Tensor, group_max: int = STDDEV_GROUP) -> torch.Tensor:
    """Append one channel: the mean over features of the per-group standard deviation.

    Sample i belongs to group i mod (B/G), as in StyleGAN2 (the group index is the outer one).
    """
    b, c, h, w = x.shape
    g = stddev_group(b, group_max)
    y = x.view(g, b // g, c, h, w)
    y = torch.sqrt(y.var(0, unbiased=False) + 1e-8).mean((1, 2, 3))     # (B/G,)
    y = y.view(1, b // g, 1, 1, 1).expand(g, -1, 1, h, w).reshape(b, 1, h, w)
    return torch.cat([x, y], dim=1)


def _unit(v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """v / (‖v‖ + eps): the reference adds eps to the norm (spectral.py:10-11); F.normalize clamps it."""
    return v / (v.norm() + eps)


class ReferenceSpectralNorm(nn.Module):
    """Parametrization W -> W/σ with the reference's power iteration (PixelFace+/code/spectral.py:23-34).

    Every call, in training and evaluation alike, first steps v <- unit(Wᵀu), then u <- unit(Wv), and
    takes σ = uᵀWv. torch's spectral_norm steps u before v and only in training, so from the same stored
    (u, v) the two give different σ. The buffers carry torch's names (_u, _v): either mode loads the
    other's state dict.
    """

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        with torch.no_grad():
            self.register_buffer("_u", _unit(weight.new_empty(weight.shape[0]).normal_()))
            self.register_buffer("_v", _unit(weight.new_empty(weight[0].numel()).normal_()))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        matrix = weight.flatten(1)
        with torch.no_grad():
            self._v.copy_(_unit(torch.mv(matrix.t(), self._u)))
            self._u.copy_(_unit(torch.mv(matrix, self._v)))
        # clones: one D forward may run the head once per caption, updating u and v in place each time
        sigma = torch.dot(self._u.clone(), torch.mv(matrix, self._v.clone()))
        return weight / sigma


def joint_features(conv: nn.Module, h: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
    """leaky_relu(conv(cat[h, the sentence tiled over h's pixels])): image features and caption side by side."""
    tiled = sentence[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])
    return F.leaky_relu(conv(torch.cat([h, tiled], dim=1)), 0.2)


class ConditionalHead(nn.Module):
    """COND_DNET: tile the sentence over 4×4, concat with h, spectral-norm 3×3 conv + leaky ReLU,
    4×4 stride-4 conv to one logit per sample. `spectral_norm`: "torch" or "reference" (see above)."""

    def __init__(self, channels: int, sentence_dim: int, spectral_norm: str = "torch"):
        super().__init__()
        if spectral_norm not in SPECTRAL_NORMS:
            raise ValueError(f"spectral_norm must be one of {SPECTRAL_NORMS}, got {spectral_norm!r}")
        self.sentence_dim = sentence_dim
        conv = nn.Conv2d(channels + sentence_dim, channels, 3, padding=1)
        if spectral_norm == "torch":
            self.joint_conv = torch_spectral_norm(conv)
        else:
            parametrize.register_parametrization(conv, "weight", ReferenceSpectralNorm(conv.weight))
            self.joint_conv = conv
        self.out = nn.Conv2d(channels, 1, 4, stride=4)

    def forward(self, h: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        return self.out(joint_features(self.joint_conv, h, sentence)).view(-1)


class PixelConditionalHead(nn.Module):
    """MODEL.D_COND_PIXEL_RES (not in the paper): at one resolution of D's body, each pixel's features beside the
    tiled sentence pass a 1×1 spectral-norm conv + leaky ReLU and a 1×1 conv to a per-pixel logit; their mean
    joins the conditional logit. The 4×4 head sees a face through a few numbers per cell, too coarse for what a
    caption says about small or thin regions (lips, cheeks, the skin's tint); here D judges caption and pixel
    where they meet."""

    def __init__(self, channels: int, sentence_dim: int):
        super().__init__()
        self.joint_conv = torch_spectral_norm(nn.Conv2d(channels + sentence_dim, channels, 1))
        self.out = nn.Conv2d(channels, 1, 1)

    def forward(self, h: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        return self.out(joint_features(self.joint_conv, h, sentence)).mean((1, 2, 3))


class Discriminator(nn.Module):
    """StyleGAN2 D over cat[image, mask] with an unconditional logit and a sentence-conditional logit.

    Args:
        size: input resolution (a power of two ≥ 8).
        channel_multiplier, channel_max: StyleGAN2 width table, capped.
        in_channels: image (3) + mask channels (3 colour, 19 one-hot).
        sentence_dim: width of the sentence embedding fed to the conditional head.
        spectral_norm: the conditional head's power iteration, "torch" or "reference".
        cond_pixel_res: 0 (the reference), or a resolution in (4, size] where a PixelConditionalHead also scores
            the caption, on the input of the block at that resolution.
    """

    def __init__(self, size: int = 256, channel_multiplier: int = 2, channel_max: int = 512,
                 in_channels: int = 6, sentence_dim: int = 512, spectral_norm: str = "torch",
                 cond_pixel_res: int = 0):
        super().__init__()
        if size < 8 or size & (size - 1):
            raise ValueError(f"discriminator size must be a power of two ≥ 8, got {size}")
        ch = channel_table(size, channel_multiplier, channel_max)
        self.size, self.in_channels = size, in_channels
        self.from_input = ConvLayer(in_channels, ch[size], 1)
        blocks, res = [], size
        while res > 4:
            blocks.append(ResBlock(ch[res], ch[res // 2]))
            res //= 2
        self.blocks = nn.Sequential(*blocks)
        self.final_conv = ConvLayer(ch[4] + 1, ch[4], 3)
        self.final_linear = nn.Sequential(EqualLinear(ch[4] * 16, ch[4], activation=True),
                                          EqualLinear(ch[4], 1))
        self.cond_head = ConditionalHead(ch[4], sentence_dim, spectral_norm)
        if cond_pixel_res and (cond_pixel_res not in ch or not 4 < cond_pixel_res <= size):
            raise ValueError(f"cond_pixel_res must be 0 or a power of two in (4, {size}], got {cond_pixel_res}")
        # index of the block whose input has that resolution
        self.pixel_block = int(math.log2(size // cond_pixel_res)) if cond_pixel_res else None
        self.pixel_head = PixelConditionalHead(ch[cond_pixel_res], sentence_dim) if cond_pixel_res else None

    @classmethod
    def from_config(cls, cfg) -> "Discriminator":
        return cls(size=cfg.MODEL.SIZE, channel_multiplier=cfg.MODEL.CHANNEL_MULTIPLIER,
                   channel_max=cfg.MODEL.CHANNEL_MAX, in_channels=3 + mask_channels_from_config(cfg),
                   sentence_dim=cfg.TEXT.SENTENCE_DIM, spectral_norm=cfg.MODEL.D_SPECTRAL_NORM,
                   cond_pixel_res=cfg.MODEL.D_COND_PIXEL_RES)

    def forward(self, image: torch.Tensor, mask: torch.Tensor, sentence=None):
        """image (B,3,S,S), mask (B,C_m,S,S); sentence (B,sentence_dim), a list of K such tensors, or None.

        Returns (logit (B,1), cond_logit): (B,) for one sentence, (K,B) for a list, None without. A list
        scores the same images against several captions (the real and the mismatched one) with a single
        pass through the body, which is what DDP needs: one forward per backward.
        """
        sentences = [sentence] if torch.is_tensor(sentence) else list(sentence or [])
        self._check_inputs(image, mask, sentences)
        h = self.from_input(torch.cat([image, mask], dim=1))
        pixel_h = None
        for index, block in enumerate(self.blocks):
            if index == self.pixel_block:
                pixel_h = h
            h = block(h)
        h = self.final_conv(minibatch_stddev(h))
        logit = self.final_linear(h.flatten(1))
        if not sentences:
            return logit, None
        conds = torch.stack([self.cond_score(h, pixel_h, s) for s in sentences])
        return logit, conds[0] if torch.is_tensor(sentence) else conds

    def cond_score(self, h, pixel_h, sentence):
        score = self.cond_head(h, sentence)
        return score if self.pixel_head is None else score + self.pixel_head(pixel_h, sentence)

    def _check_inputs(self, image, mask, sentences):
        shape = (self.size, self.size)
        if image.dim() != 4 or mask.dim() != 4 or image.shape[2:] != shape or mask.shape[2:] != shape:
            raise ValueError(f"image and mask must be (B,C,{self.size},{self.size}), got "
                             f"{tuple(image.shape)} and {tuple(mask.shape)}")
        if image.shape[1] + mask.shape[1] != self.in_channels:
            raise ValueError(f"image + mask channels must total {self.in_channels}, got "
                             f"{image.shape[1]} + {mask.shape[1]}")
        if image.shape[0] != mask.shape[0]:
            raise ValueError(f"batch mismatch: {image.shape[0]} images, {mask.shape[0]} masks")
        for sentence in sentences:
            if tuple(sentence.shape) != (image.shape[0], self.cond_head.sentence_dim):
                raise ValueError(f"sentence must be (B,{self.cond_head.sentence_dim}) = ({image.shape[0]},"
                                 f"{self.cond_head.sentence_dim}), got {tuple(sentence.shape)}")
