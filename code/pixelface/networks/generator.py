"""PixelFace+ generator (PixelFace+/code/model.py:340-616, PixelFacePlus): a pixel-regression StyleGAN2
whose layout comes from the mask and whose appearance comes from text through GCMF at every stage.

Stages run at R = 16, 64, 256 (… 16·4^k up to `size`). Stage s:
  E_rend = GCMF(mask features at R² ; words)             (B,R²,mask_dim)
  E_coor = LFF(coordinates at R²)                         (R²,channels[R]), batch-independent
  stage 0:  h = conv0(cat[E_rend, E_coor, X0, M16]) ; p = conv1(h)
  stage >0: p = conv1(cat[E_rend, E_coor, M_R])
  H' = Fold²(p)                                           (B,hidden,R/4,R/4)
  stage >0: H = conv_merge(cat[H', H]) else H = H'
  then two fold steps: StyledConv, Unfold, StyledConv, ToRGB(+upsampled skip), each doubling R/4.

The 1×1 posfolder convs act on the channel concatenation in the reference; here they sum one
matmul per input group instead (same function), so the 384-channel 256² concatenation is never
built, and the batch-independent groups (E_coor, the constant input X0) are projected once for
the whole batch. GCMF, mask features and these convs work on (B, pixels, channels) rows, which is
the layout GCMF needs anyway.

Deviations from the reference, all opt-in or harmless: noise maps can be passed or held constant
(`noise_mode`), `word_padding` masks padded words, `input_is_latent` works, `mean_latent` exists,
and the dead parameters (fc1, stage-0 conv_merge, GCMF modulation and positional maps) are gone.
Opt-in architecture switches (docs/faithfulness.md): `unfold_init="icnr"`, `unfold_blur`, `text_to_w`,
`mask_context` (dilated convs give each pixel's mask feature the face around it), `fold_skip` ("mask" /
"fusion": the stage's rows projected into every fold step, zero-initialised) and `border="replicate"` (the fold
steps' convs and skip upsampling repeat the edge pixels instead of reading zeros beyond them).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pixelface.data.mask_input import mask_channels_from_config
from pixelface.data.masks import LABEL_ID, NUM_CLASSES
from pixelface.networks.gcmf import GCMF
from pixelface.networks.layers import (ACT_GAIN, ConstantInput, EqualLinear, PixelNorm, StyledConv, ToRGB,
                                       channel_table, conv2d, fold_channels_last, fresh_leaky_relu_, row_product,
                                       row_products_sum, unfold)

FIRST_RES = 16          # the constant input and the first stage live at 16²
FOLDS_PER_STAGE = 2     # each stage multiplies the resolution by 4
NOISE_MODES = ("random", "const", "none")
G_BORDERS = ("zero", "replicate", "replicate_skip")
CONST_NOISE_SEED = 0    # const noise buffers are the same in every build


def mean_word(words: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
    """(B,T,D) word features -> (B,D) their mean over the words that are not padding."""
    if padding is None:
        return words.mean(1)
    keep = (~padding).unsqueeze(-1).to(words.dtype)
    return (words * keep).sum(1) / keep.sum(1)


def blur_121(x: torch.Tensor) -> torch.Tensor:
    """Depthwise [1,2,1]⊗[1,2,1]/16 low-pass of (B,C,H,W), edges replicated: removes the 2-pixel period."""
    kernel = torch.tensor([1.0, 2.0, 1.0], device=x.device, dtype=x.dtype)
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.shape[1])


def nyquist_stripes(amplitudes: torch.Tensor) -> torch.Tensor:
    """(B,6,H,W) amplitudes -> (B,3,H,W): the first three channels times (-1)^column, the last three times (-1)^row.
    A 2-pixel stripe whose amplitude varies slowly is any stripe near the pixel grid's own frequency:
    sin(pi*(1 + d)*j + p) = (-1)^j * sin(pi*d*j + p), a slow envelope."""
    h, w = amplitudes.shape[-2:]
    columns = 1 - 2 * (torch.arange(w, device=amplitudes.device) % 2).to(amplitudes.dtype)
    rows = 1 - 2 * (torch.arange(h, device=amplitudes.device) % 2).to(amplitudes.dtype)
    return amplitudes[:, :3] * columns + amplitudes[:, 3:] * rows[:, None]


def stage_resolutions(size: int) -> list[int]:
    """[16, 64, …, size]; size must be 16·4^k with k ≥ 1."""
    res, out = FIRST_RES, [FIRST_RES]
    while res < size:
        res *= 4
        out.append(res)
    if res != size or size < 64 or size > 1024:
        raise ValueError(f"generator size must be 64, 256 or 1024 (16·4^k), got {size}")
    return out


def coordinate_rows(size: int, device=None, dtype=None) -> torch.Tensor:
    """(size², 2) rows of (x, y) in [-1,1]; x runs along the width, rows are row-major pixels."""
    axis = torch.linspace(-1.0, 1.0, size, device=device, dtype=dtype)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack((x, y), dim=-1).reshape(size * size, 2)


class FourierFeatures(nn.Module):
    """LFF: sin of a 1×1 conv (2 → C) of the coordinate grid; SIREN-style uniform ±√(9/2) weights."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(2, channels, 1)
        bound = math.sqrt(9.0 / 2)
        nn.init.uniform_(self.conv.weight, -bound, bound)

    def forward(self, size: int) -> torch.Tensor:
        """(size², C) rows; the same for every sample."""
        coords = coordinate_rows(size, self.conv.weight.device, self.conv.weight.dtype)
        return torch.sin(F.linear(coords, self.conv.weight.flatten(1), self.conv.bias))


class PointwiseMix(nn.Module):
    """A 1×1 equalised ConvLayer (fused leaky ReLU·√2) over the channel concatenation of its inputs,
    computed as a sum of per-input products so the concatenation is never materialised.

    Inputs share one layout: rows (B or 1, N, C_i) or NCHW (B or 1, C_i, H, W). Batch-1 inputs (the
    same for every sample) are projected once and broadcast. `weight` (out, ΣC_i) and `bias` (out,)
    have exactly the reference ConvLayer's parameter count.
    """

    def __init__(self, in_widths: Sequence[int], out_ch: int):
        super().__init__()
        self.in_widths = tuple(in_widths)
        self.weight = nn.Parameter(torch.randn(out_ch, sum(self.in_widths)))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.scale = 1.0 / math.sqrt(sum(self.in_widths))

    def forward(self, *parts: torch.Tensor) -> torch.Tensor:
        if len(parts) != len(self.in_widths):
            raise ValueError(f"PointwiseMix expects {len(self.in_widths)} inputs, got {len(parts)}")
        weights = (self.weight * (self.scale * ACT_GAIN)).split(self.in_widths, dim=1)
        rows = parts[0].dim() == 3
        shared = [(p, w) for p, w in zip(parts, weights) if p.shape[0] == 1]
        per_sample = [(p, w) for p, w in zip(parts, weights) if p.shape[0] != 1]
        if not per_sample:
            per_sample, shared = shared[:1], shared[1:]
        # Batch-independent inputs and the bias form one small term, added to the output once.
        common = self.bias * ACT_GAIN
        common = common if rows else common.view(1, -1, 1, 1)
        for part, weight in shared:
            common = common + self._project(part, weight, rows)
        if rows:
            # one product over all rows, then viewed as (B,N,out) and offset out of place (an
            # in-place op on a view would make autograd record CopySlices)
            flat = row_products_sum([p.reshape(-1, p.shape[-1]) for p, _ in per_sample],
                                    [w for _, w in per_sample])
            out = flat.view(*per_sample[0][0].shape[:-1], -1) + common.to(flat.dtype)   # no autocast promotion
        else:
            out = self._project(*per_sample[0], rows)        # fresh conv output: in place is safe
            for part, weight in per_sample[1:]:
                out.add_(self._project(part, weight, rows))
            out.add_(common)
        return fresh_leaky_relu_(out)

    @staticmethod
    def _project(part, weight, rows):
        if rows:
            return row_product(part.reshape(-1, part.shape[-1]), weight).view(*part.shape[:-1], -1)
        return conv2d(part, weight.contiguous()[:, :, None, None])

    def extra_repr(self):
        return f"in_widths={self.in_widths}, out={self.weight.shape[0]}"


UNFOLD_INITS = ("random", "icnr")


class FoldStep(nn.Module):
    """StyledConv at r, Unfold to 2r, StyledConv at 2r, ToRGB with the upsampled skip.

    unfold_init "icnr" (Aitken et al. 2017, "Checkerboard artifact free sub-pixel convolution") starts
    conv_low with the same filters for the four sub-pixel channel groups that Unfold spreads over a 2×2
    block, so the Unfold is a nearest-neighbour upsampling at initialisation instead of a random 2×2
    pattern repeated over the image; "random" is the reference's independent initialisation.
    """

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, unfold_init: str = "random",
                 skip_dim: int = 0, unfold_blur: bool = False, border: str = "zero"):
        super().__init__()
        # MODEL.UNFOLD_BLUR: a [1,2,1]² low-pass after the Unfold. Once training pulls the four sub-pixel
        # channel groups apart, Unfold alone paints a 2-pixel pattern (stripes, checkerboard) that an R1-smoothed
        # D hardly penalises; the blur leaves G no cheap way to it (docs/diagnosis.md section 11).
        self.unfold_blur = unfold_blur
        if out_ch % 4:
            raise ValueError(f"fold-step width {out_ch} must be divisible by 4 (Unfold)")
        if unfold_init not in UNFOLD_INITS:
            raise ValueError(f"unfold_init must be one of {UNFOLD_INITS}, got {unfold_init!r}")
        # MODEL.G_BORDER: what the 3x3 convs and the skip's upsampling read beyond the image: "zero" both,
        # "replicate" both, "replicate_skip" the skip's upsampling only.
        if border not in G_BORDERS:
            raise ValueError(f"border must be one of {G_BORDERS}, got {border!r}")
        conv_border = "replicate" if border == "replicate" else "zero"
        self.conv_low = StyledConv(in_ch, out_ch, style_dim, border=conv_border)
        self.conv_high = StyledConv(out_ch // 4, out_ch, style_dim, border=conv_border)
        self.to_rgb = ToRGB(out_ch, style_dim, border="zero" if border == "zero" else "replicate")
        # Fold skip (MODEL.FOLD_SKIP): a linear projection of the stage's per-pixel rows (mask features,
        # with "fusion" also GCMF's output) at this step's output resolution, added to conv_high's output.
        # It starts at zero, so training starts from the reference network and grows the skip as the
        # loss asks for it; a random start lets early layout learning crowd out the text (docs/diagnosis.md).
        self.fold_skip = EqualLinear(skip_dim, out_ch) if skip_dim else None
        if skip_dim:
            with torch.no_grad():
                self.fold_skip.weight.zero_()
        # MODEL.PIXEL_STRIPES (set by Generator on the step that makes the output's pixels): two 1x1 heads read the
        # features and give the amplitude of a 2-pixel stripe along each axis, added to the image. With the Unfold
        # blurred, nothing else can draw a pattern at the pixel grid's own frequency (hair strands). Zero-initialised:
        # training starts without stripes. On synthface G painted them over every face, not only the hair
        # (docs/diagnosis.md, section 19); MODEL.PIXEL_STRIPES_CLASSES confines them to the classes it names.
        self.stripes = None
        if unfold_init == "icnr":
            with torch.no_grad():   # Unfold reads channel (ph·2 + pw)·C + c for sub-pixel (ph, pw)
                weight = self.conv_low.conv.weight
                weight.copy_(weight[: out_ch // 4].repeat(4, 1, 1, 1))

    def forward(self, h, latents, noise_low, noise_high, skip, skip_rows=None, stripe_gate=None):
        """latents (B,3,style_dim): conv_low, conv_high, to_rgb. skip_rows (B,R,R,skip_dim) at any R that
        is a multiple of this step's output resolution; needed iff the step has a fold skip. stripe_gate
        (B,1,2r,2r) or None: with stripes, their amplitudes are multiplied by it."""
        h = self.conv_low(h, latents[:, 0], noise_low)
        h = unfold(h)
        if self.unfold_blur:
            h = blur_121(h)
        h = self.conv_high(h, latents[:, 1], noise_high)
        if self.fold_skip is not None:
            stride = skip_rows.shape[1] // h.shape[-1]     # nearest: the top-left pixel of each block
            h = h + self.fold_skip(skip_rows[:, ::stride, ::stride]).permute(0, 3, 1, 2)
        rgb = self.to_rgb(h, latents[:, 2], skip)
        if self.stripes is not None:
            weight, bias = self.stripes.effective()
            amplitudes = conv2d(h, weight[:, :, None, None], bias).float()
            rgb = rgb + nyquist_stripes(amplitudes if stripe_gate is None else amplitudes * stripe_gate)
        return h, rgb


class SynthesisStage(nn.Module):
    """One PixelFace+ stage at resolution R: GCMF + LFF + posfolder, then two fold steps."""

    def __init__(self, index: int, res: int, channels: dict[int, int], style_dim: int,
                 text_dim: int, mask_dim: int, gcmf_gate: bool, gcmf_dropout: float,
                 gcmf_chunk: int, unfold_init: str = "random", fold_skip: str = "none",
                 unfold_blur: bool = False, border: str = "zero"):
        super().__init__()
        self.index, self.res = index, res
        hidden = channels[res // 4]
        if hidden % 16:
            raise ValueError(f"hidden width {hidden} at {res // 4}² must be divisible by 16 (two Folds)")
        width = hidden // 16      # channels per pixel before the two Folds: Fold² gives back `hidden`
        folded = 16 * width
        self.lff = FourierFeatures(channels[res])
        self.gcmf = GCMF(mask_dim, text_dim, dim=mask_dim, gate=gcmf_gate, dropout=gcmf_dropout,
                         chunk=gcmf_chunk)
        if index == 0:
            # cat[E_rend, E_coor, X0, M16] -> hidden -> hidden/16
            self.conv0 = PointwiseMix((mask_dim, channels[res], channels[res], mask_dim), hidden)
            self.conv1 = PointwiseMix((hidden,), width)
        else:
            # cat[E_rend, E_coor, M_R] -> hidden/16 ; after Fold², cat[H', H] -> hidden
            self.conv1 = PointwiseMix((mask_dim, channels[res], mask_dim), width)
            self.conv_merge = PointwiseMix((folded, hidden), hidden)
        self.folds = nn.ModuleList(
            FoldStep((folded if index == 0 else hidden) if f == 0 else channels[res // 4 * 2 ** f],
                     channels[res // 4 * 2 ** (f + 1)], style_dim, unfold_init,
                     skip_dim={"none": 0, "mask": mask_dim, "fusion": 2 * mask_dim}[fold_skip], unfold_blur=unfold_blur,
                     border=border)
            for f in range(FOLDS_PER_STAGE))
        self.fold_skip = fold_skip

    def positional_fold(self, hidden, mask_rows, words, word_padding, constant, return_attention):
        """Posfolder: (B,hidden,R/4,R/4) from mask features, text and coordinates (+ previous H).

        Also returns the attention (or None) and, with a fold skip, the (B,R,R,C) rows the fold steps
        project at their own resolution: M_R ("mask") or cat[E_rend, M_R] ("fusion")."""
        fused = self.gcmf(mask_rows, words, word_padding, return_attention=return_attention)
        fused, attention = fused if return_attention else (fused, None)
        coords = self.lff(self.res).unsqueeze(0)                       # (1,R²,C)
        if self.index == 0:
            h = self.conv1(self.conv0(fused, coords, constant, mask_rows))
        else:
            h = self.conv1(fused, coords, mask_rows)
        b = h.shape[0]
        folded = fold_channels_last(h.view(b, self.res, self.res, -1), times=2)
        if self.index > 0:
            folded = self.conv_merge(folded, hidden)
        skip_rows = {"none": None, "mask": mask_rows,
                     "fusion": torch.cat((fused, mask_rows), dim=-1)}[self.fold_skip]
        return folded, attention, skip_rows.view(b, self.res, self.res, -1) if skip_rows is not None else None


class MaskContext(nn.Module):
    """MODEL.MASK_CONTEXT (not in the paper): residual dilated 3×3 convs over the mask encoder's full-resolution
    features, dilations (1, 2, 4, ...)·size/64, so with 3 layers each pixel sees the mask 1/8 of the image
    around it. The reference's single 3×3 conv tells a pixel its own class and its neighbours' only: every skin
    pixel asks GCMF the same question, and a cheek (skin a few pixels below an eye, where blush is worn; no
    CelebAMask-HQ class) cannot be told from a forehead. Each conv starts at zero, so G starts as the reference."""

    def __init__(self, dim: int, layers: int, size: int):
        super().__init__()
        base = max(1, size // 64)
        self.convs = nn.ModuleList(nn.Conv2d(dim, dim, 3, padding=base << k, dilation=base << k)
                                   for k in range(layers))
        for conv in self.convs:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            features = features + conv(F.leaky_relu(features, 0.2))
        return features


def label_ids(names: Sequence[str], key: str) -> list[int]:
    """Mask class names (CelebAMask-HQ's, pixelface.data.masks.LABELS) -> label ids; an unknown name is an error."""
    unknown = [name for name in names if name not in LABEL_ID]
    if unknown:
        raise ValueError(f"{key}: unknown mask class {unknown[0]!r}; expected names from {', '.join(LABEL_ID)}")
    return [LABEL_ID[name] for name in names]


def stripe_classes(pixel_stripes: bool, classes: Sequence[int], mask_channels: int) -> list[int]:
    """MODEL.PIXEL_STRIPES_CLASSES (not in the paper): the label ids whose pixels may carry the pixel stripes, read
    from the one-hot mask channel of each (checked here: a colour mask has no such channel)."""
    classes = sorted(set(classes))
    if classes and not pixel_stripes:
        raise ValueError("MODEL.PIXEL_STRIPES_CLASSES confines the pixel stripes: it needs MODEL.PIXEL_STRIPES on")
    if classes and (mask_channels < NUM_CLASSES or not 0 <= classes[0] <= classes[-1] < NUM_CLASSES):
        raise ValueError(f"MODEL.PIXEL_STRIPES_CLASSES needs one-hot masks (MODEL.MASK_INPUT onehot or "
                         f"onehot_zones, {NUM_CLASSES}+ channels) and label ids below {NUM_CLASSES}; got "
                         f"{mask_channels} mask channels and ids {classes}")
    return classes


def point_taps(conv: nn.Conv2d, channels: int) -> torch.Tensor | None:
    """MODEL.MASK_POINT_CHANNELS (not in the paper): a 0/1 tap mask that leaves the first `channels` outputs of the
    mask conv only their centre tap, so those features are a pixel's own class (crisp at every region edge) while
    the others keep the 3x3 view of the neighbours (an eyelid is skin next to an eye). None when 0."""
    if not channels:
        return None
    side = conv.kernel_size[0]
    if side == 1 or not 0 < channels < conv.out_channels:
        raise ValueError(f"mask point channels must lie in 1..{conv.out_channels - 1} with a 3x3 mask conv, got "
                         f"{channels} with {side}x{side}")
    taps = torch.ones_like(conv.weight)
    taps[:channels] = 0
    taps[:channels, :, side // 2, side // 2] = 1
    with torch.no_grad():
        conv.weight.mul_(taps)          # the parameters hold what is applied
    return taps


class Generator(nn.Module):
    """PixelFace+ generator (reference: PixelFace+/code/model.py, PixelFacePlus). See the module docstring;
    `forward` documents the inputs."""

    def __init__(self, size: int = 256, style_dim: int = 512, n_mlp: int = 8, text_dim: int = 512,
                 channel_multiplier: int = 2, channel_max: int = 512, mask_dim: int = 128,
                 mask_channels: int = 3, lr_mlp: float = 0.01, lr_text_mlp: float = 0.01, gcmf_gate: bool = False,
                 gcmf_dropout: float = 0.06, gcmf_chunk: int = 0, unfold_init: str = "random",
                 fold_skip: str = "none", text_to_w: bool = False,
                 unfold_blur: bool = False, unfold_blur_final: bool = True, mask_context: int = 0,
                 mask_kernel: int = 3, mask_point_channels: int = 0, pixel_stripes: bool = False,
                 pixel_stripes_classes: Sequence[int] = (), border: str = "zero"):
        super().__init__()
        self.size, self.style_dim, self.text_dim = size, style_dim, text_dim
        self.mask_channels = mask_channels
        resolutions = stage_resolutions(size)
        self.channels = channel_table(size, channel_multiplier, channel_max)

        self.style = nn.Sequential(PixelNorm(dim=1), *(
            EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True) for _ in range(n_mlp)))
        self.text_mlp = nn.Sequential(PixelNorm(dim=-1), *(
            EqualLinear(text_dim, text_dim, lr_mul=lr_text_mlp, activation=True) for _ in range(2)))
        # MODEL.TEXT_TO_W: the caption's mean word feature shifts every w, a global route for what a caption says
        # about the whole face (pale skin, make-up); in the paper text reaches G only through GCMF's attention.
        self.text_to_w = EqualLinear(text_dim, style_dim, lr_mul=lr_text_mlp) if text_to_w else None
        # Plain nn.Conv2d with PyTorch's default init, as in the reference `mask_cov` (3x3). MODEL.MASK_KERNEL 1: a
        # pixel's feature is its own class's, so the fold skip's per-pixel colour changes exactly at region edges;
        # a 3x3 feature blends the classes on both sides of an edge over 3 pixels (docs/diagnosis.md, 18).
        self.mask_encoder = nn.Conv2d(mask_channels, mask_dim, mask_kernel, padding=mask_kernel // 2)
        self.register_buffer("point_taps", point_taps(self.mask_encoder, mask_point_channels), persistent=False)
        self.mask_context = MaskContext(mask_dim, mask_context, size) if mask_context else None
        self.input = ConstantInput(self.channels[FIRST_RES], FIRST_RES)
        self.stages = nn.ModuleList(
            SynthesisStage(i, res, self.channels, style_dim, text_dim, mask_dim, gcmf_gate,
                           gcmf_dropout, gcmf_chunk, unfold_init, fold_skip, unfold_blur, border)
            for i, res in enumerate(resolutions))
        # MODEL.UNFOLD_BLUR_FINAL false: the output's own pixels are not low-passed; the blur on every coarser Unfold
        # still keeps 2-pixel patterns out of everything below them (docs/diagnosis.md, 18).
        self.stages[-1].folds[-1].unfold_blur = unfold_blur and unfold_blur_final
        if pixel_stripes:
            self.stages[-1].folds[-1].stripes = EqualLinear(self.channels[size], 6)
            with torch.no_grad():
                self.stages[-1].folds[-1].stripes.weight.zero_()
        self.stripe_classes = stripe_classes(pixel_stripes, pixel_stripes_classes, mask_channels)

        self.noise_resolutions = [r for res in resolutions
                                  for r in (res // 4, res // 2, res // 2, res)]
        self.num_layers = len(self.noise_resolutions)            # StyledConvs
        self.n_latent = self.num_layers + 1                        # + the last ToRGB's own w
        const = torch.Generator().manual_seed(CONST_NOISE_SEED)
        for i, r in enumerate(self.noise_resolutions):
            self.register_buffer(f"noise_const_{i}", torch.randn(1, 1, r, r, generator=const))

    @classmethod
    def from_config(cls, cfg) -> "Generator":
        return cls(size=cfg.MODEL.SIZE, style_dim=cfg.MODEL.STYLE_DIM, n_mlp=cfg.MODEL.N_MLP,
                   text_dim=cfg.TEXT.EMBEDDING_DIM, channel_multiplier=cfg.MODEL.CHANNEL_MULTIPLIER,
                   channel_max=cfg.MODEL.CHANNEL_MAX, mask_dim=cfg.MODEL.MASK_DIM,
                   mask_channels=mask_channels_from_config(cfg), lr_mlp=cfg.MODEL.LR_MLP,
                   lr_text_mlp=cfg.MODEL.LR_TEXT_MLP, gcmf_gate=cfg.MODEL.GCMF_GATE,
                   gcmf_dropout=cfg.MODEL.GCMF_DROPOUT,
                   gcmf_chunk=cfg.MODEL.GCMF_CHUNK, unfold_init=cfg.MODEL.UNFOLD_INIT,
                   fold_skip=cfg.MODEL.FOLD_SKIP,
                   text_to_w=cfg.MODEL.TEXT_TO_W, unfold_blur=cfg.MODEL.UNFOLD_BLUR,
                   unfold_blur_final=cfg.MODEL.UNFOLD_BLUR_FINAL,
                   mask_context=cfg.MODEL.MASK_CONTEXT, mask_kernel=cfg.MODEL.MASK_KERNEL,
                   mask_point_channels=cfg.MODEL.MASK_POINT_CHANNELS, pixel_stripes=cfg.MODEL.PIXEL_STRIPES,
                   pixel_stripes_classes=label_ids(cfg.MODEL.PIXEL_STRIPES_CLASSES, "MODEL.PIXEL_STRIPES_CLASSES"),
                   border=cfg.MODEL.G_BORDER)

    # --------------------------------------------------------------------------------------------
    # Latents and noise

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean of the mapping network's outputs over n random z: (1, style_dim)."""
        device = self.input.input.device
        z = torch.randn(n, self.style_dim, generator=generator,
                        device=generator.device if generator is not None else device)
        return self.style(z.to(device)).mean(0, keepdim=True)

    def make_noise(self, batch: int = 1, generator: torch.Generator | None = None,
                   device=None) -> list[torch.Tensor]:
        """One (batch,1,r,r) N(0,1) map per StyledConv, drawn from `generator` in a fixed order,
        on the generator's device and then moved, so a seed gives the same maps on any device."""
        device = device if device is not None else self.input.input.device
        draw_on = generator.device if generator is not None else device
        return [torch.randn(batch, 1, r, r, generator=generator, device=draw_on).to(device)
                for r in self.noise_resolutions]

    def _latents(self, styles, input_is_latent, truncation, truncation_latent, inject_index):
        """(B, n_latent, style_dim) from z list / w / W+ with truncation and style mixing."""
        if input_is_latent and torch.is_tensor(styles):
            if styles.dim() == 3:
                if styles.shape[1] != self.n_latent:
                    raise ValueError(f"W+ input must have {self.n_latent} latents, got {styles.shape[1]}")
                return self._truncate(styles, truncation, truncation_latent)
            styles = [styles]
        if torch.is_tensor(styles) or not isinstance(styles, (list, tuple)) or not styles:
            raise ValueError("styles must be a non-empty list of z tensors (B,style_dim), or with "
                             "input_is_latent a w (B,style_dim) or W+ (B,n_latent,style_dim) tensor")
        for s in styles:
            if s.dim() != 2 or s.shape[1] != self.style_dim or s.shape[0] != styles[0].shape[0]:
                raise ValueError(f"each style must be (B,{self.style_dim}) with one common B, got "
                                 f"{[tuple(t.shape) for t in styles]}")
        ws = list(styles) if input_is_latent else [self.style(s) for s in styles]
        if len(ws) == 1:
            latents = ws[0].unsqueeze(1).expand(-1, self.n_latent, -1)
        elif len(ws) == 2:
            if inject_index is None:
                inject_index = int(torch.randint(1, self.n_latent, ()).item())
            if not 0 <= inject_index <= self.n_latent:
                raise ValueError(f"inject_index must lie in 0..{self.n_latent}, got {inject_index}")
            latents = torch.cat([ws[0].unsqueeze(1).expand(-1, inject_index, -1),
                                 ws[1].unsqueeze(1).expand(-1, self.n_latent - inject_index, -1)], 1)
        elif len(ws) == self.n_latent:
            latents = torch.stack(ws, dim=1)
        else:
            raise ValueError(f"pass 1, 2 (mixing) or exactly {self.n_latent} styles, got {len(ws)}")
        return self._truncate(latents, truncation, truncation_latent)

    @staticmethod
    def _truncate(latents, truncation, truncation_latent):
        if truncation >= 1.0:
            return latents
        if truncation_latent is None:
            raise ValueError("truncation < 1 needs truncation_latent (e.g. G.mean_latent())")
        center = truncation_latent.reshape(1, 1, -1)
        return center + truncation * (latents - center)

    def _noise_maps(self, noise, noise_mode, batch):
        if noise is not None:
            if len(noise) != self.num_layers:
                raise ValueError(f"noise must hold {self.num_layers} maps (one per StyledConv), "
                                 f"got {len(noise)}")
            for n, r in zip(noise, self.noise_resolutions):
                if n.dim() != 4 or n.shape[0] not in (1, batch) or tuple(n.shape[1:]) != (1, r, r):
                    raise ValueError(f"noise map of shape {tuple(n.shape)} where ({batch} or 1,1,{r},{r}) "
                                     f"was expected")
            return list(noise)
        if noise_mode == "random":
            return self.make_noise(batch)
        if noise_mode == "const":
            return [getattr(self, f"noise_const_{i}") for i in range(self.num_layers)]
        if noise_mode == "none":
            return [None] * self.num_layers
        raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")

    # --------------------------------------------------------------------------------------------
    # Synthesis

    def mask_context_map(self, mask: torch.Tensor) -> torch.Tensor | None:
        """MODEL.MASK_CONTEXT's full-resolution mask features (B, mask_dim, size, size), or None without it."""
        if self.mask_context is None:
            return None
        padding = self.mask_encoder.padding
        return self.mask_context(F.conv2d(mask, self.mask_encoder_weight(), self.mask_encoder.bias, padding=padding))

    def mask_encoder_weight(self) -> torch.Tensor:
        """The mask conv's weight as applied: with MODEL.MASK_POINT_CHANNELS, those channels' off-centre taps zeroed
        (so their gradient is zero too, and Adam, whose first moment is the gradient itself (beta1 = 0), never
        moves them)."""
        weight = self.mask_encoder.weight
        return weight if self.point_taps is None else weight * self.point_taps

    def mask_features(self, mask: torch.Tensor, res: int | None = None,
                      context_map: torch.Tensor | None = None) -> torch.Tensor:
        """Mask-encoder features as rows (B, res², mask_dim), row-major pixels.

        At res < size these are the full-resolution features resized with nearest neighbour (pixel
        index·size/res), as in the reference; they are computed directly at those pixels (a strided
        conv) so backward never scatters into a full-resolution zero tensor. With MODEL.MASK_CONTEXT they
        are the rows of the full-resolution context map (`context_map`, computed here when not given) at
        the same pixels.
        """
        res = self.size if res is None else res
        b = mask.shape[0]
        if self.mask_context is not None:
            context_map = self.mask_context_map(mask) if context_map is None else context_map
            stride = self.size // res
            return context_map[:, :, ::stride, ::stride].flatten(2).transpose(1, 2)
        stride = self.size // res
        weight, padding = self.mask_encoder_weight(), self.mask_encoder.padding[0]
        if weight[0].numel() > weight.shape[0]:
            # Patch rows wider than feature rows (one-hot masks: 19·9 = 171 values per pixel): a channels_last
            # convolution, whose output is already the rows layout, instead of copying every patch into a row
            # (3.5x less time forward and backward for 19 classes at 64², batch 8).
            features = conv2d(mask.contiguous(memory_format=torch.channels_last), weight, self.mask_encoder.bias,
                              stride=stride, padding=padding)
            return features.permute(0, 2, 3, 1).reshape(b, res * res, -1)
        # narrow patches (colour: 27 values; one-hot, 1x1 kernel: 19): im2col + one matmul gives the rows directly
        patches = F.unfold(mask, weight.shape[-1], padding=padding, stride=stride)   # (B, C·k², res²)
        patches = patches.transpose(1, 2).reshape(b * res * res, -1)
        return torch.addmm(self.mask_encoder.bias, patches, weight.flatten(1).t()).view(b, res * res, -1)

    def forward(self, mask: torch.Tensor, words: torch.Tensor, styles, *,
                word_padding: torch.Tensor | None = None, input_is_latent: bool = False,
                truncation: float = 1.0, truncation_latent: torch.Tensor | None = None,
                inject_index: int | None = None, noise: Sequence[torch.Tensor] | None = None,
                noise_mode: str = "random", return_latents: bool = False,
                return_attention: bool = False):
        """Generate images.

        Args:
            mask: (B, mask_channels, size, size), colour in [-1,1] or one-hot.
            words: (B, T, text_dim) word features, channels last.
            styles: list of z (B, style_dim): 1, 2 (style mixing at `inject_index`, random when
                None) or exactly n_latent; with `input_is_latent`, a w (B, style_dim) or W+
                (B, n_latent, style_dim) tensor (or a list of w, mixed like z).
            word_padding: (B, T) bool, True marks padding to ignore; None attends to every
                position (reference).
            truncation, truncation_latent: w' = w_avg + ψ(w − w_avg) when ψ < 1.
            noise: one (B or 1, 1, r, r) map per StyledConv (see make_noise); overrides noise_mode.
            noise_mode: "random" (fresh each call, reference), "const" (fixed buffers), "none".
            return_latents, return_attention: also return a dict with "latents" (B,n_latent,
                style_dim) and/or "attention" (per stage, (B, R², T) probabilities).

        Returns:
            image (B, 3, size, size), or (image, extras) when anything extra was asked for.
        """
        self._check_inputs(mask, words, word_padding)
        batch = mask.shape[0]
        latents = self._latents(styles, input_is_latent, truncation, truncation_latent, inject_index)
        if latents.shape[0] != batch:
            raise ValueError(f"batch mismatch: mask has {batch} samples, styles have {latents.shape[0]}")
        noises = self._noise_maps(noise, noise_mode, batch)

        text = self.text_mlp(words)
        shifted = latents            # what the layers read; `latents` stay what a caller passes back as W+
        if self.text_to_w is not None:   # after truncation and for given W+ alike: a caption edit moves it
            shifted = latents + self.text_to_w(mean_word(text, word_padding)).unsqueeze(1)
        constant = self.input(1).permute(0, 2, 3, 1).reshape(1, FIRST_RES ** 2, -1)   # rows, shared
        context_map = self.mask_context_map(mask)      # once, for every stage's mask features
        stripe_gate = mask[:, self.stripe_classes].sum(1, keepdim=True) if self.stripe_classes else None
        hidden, skip, attention = None, None, []
        for stage in self.stages:
            hidden, stage_attention, skip_rows = stage.positional_fold(
                hidden, self.mask_features(mask, stage.res, context_map), text, word_padding, constant,
                return_attention)
            attention.append(stage_attention)
            for f, step in enumerate(stage.folds):
                k = 4 * stage.index + 2 * f                     # StyledConv index of conv_low
                hidden, skip = step(hidden, shifted[:, k:k + 3], noises[k], noises[k + 1], skip, skip_rows,
                                    stripe_gate)
        image = skip

        extras = {}
        if return_latents:
            extras["latents"] = latents
        if return_attention:
            extras["attention"] = attention
        return (image, extras) if extras else image

    def _check_inputs(self, mask, words, word_padding):
        expected = (self.mask_channels, self.size, self.size)
        if mask.dim() != 4 or tuple(mask.shape[1:]) != expected:
            raise ValueError(f"mask must be (B,{expected[0]},{expected[1]},{expected[2]}), got "
                             f"{tuple(mask.shape)}")
        if words.dim() != 3 or words.shape[2] != self.text_dim:
            raise ValueError(f"words must be (B,T,{self.text_dim}) (channels last), got {tuple(words.shape)}")
        if words.shape[0] != mask.shape[0]:
            raise ValueError(f"batch mismatch: mask has {mask.shape[0]} samples, words have {words.shape[0]}")
        if word_padding is not None and tuple(word_padding.shape) != tuple(words.shape[:2]):
            raise ValueError(f"word_padding must be (B,T) = {tuple(words.shape[:2])}, got "
                             f"{tuple(word_padding.shape)}")
        if word_padding is not None and bool(word_padding.all(dim=1).any()):   # one sync per forward
            raise ValueError("word_padding masks every word of some sample; GCMF has nothing to attend to")
