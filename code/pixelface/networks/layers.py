"""StyleGAN2 building blocks (rosinality conventions, as in PixelFace+/code/pixel_models/blocks.py) in
native PyTorch.

The reference needs two CUDA extensions (fused bias + leaky ReLU, upfirdn2d); everything here uses
stock conv / linear ops instead. Two habits run through the file, both for speed on CPU where fresh
large allocations are expensive:

* The activation gain √2 is folded into the weights and bias of the layer before it
  (leaky_relu(√2·z) = √2·leaky_relu(z)), and the leaky ReLU then runs in place on that layer's fresh
  output, so each activated layer allocates and keeps exactly one tensor.
* Equalised learning rate: weights are stored N(0,1)/lr_mul and scaled at run time.
"""
from __future__ import annotations

import contextlib
import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

NEG_SLOPE = 0.2
ACT_GAIN = math.sqrt(2.0)
BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)


# ------------------------------------------------------------------------------------------------
# Activation


class _BiasLeakyReLU(torch.autograd.Function):
    """leaky_relu(x + bias)·gain that keeps only its output for backward (like the CUDA op).

    The backward is written with differentiable ops, so double backward (R1, path length) works.
    """

    @staticmethod
    def forward(ctx, x, bias, gain):
        out = x + bias if bias is not None else x.clone()
        F.leaky_relu_(out, NEG_SLOPE)
        out.mul_(gain)
        ctx.save_for_backward(out)
        ctx.gain = gain
        ctx.bias_shape = None if bias is None else bias.shape
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        grad_x = torch.ops.aten.leaky_relu_backward(grad * ctx.gain, out, NEG_SLOPE, True)
        grad_b = None if ctx.bias_shape is None else grad_x.sum_to_size(ctx.bias_shape)
        return grad_x, grad_b, None


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None = None, gain: float = ACT_GAIN):
    """leaky_relu(x + bias, 0.2)·gain; `bias` (C,) is broadcast over dim 1 (use a shaped view else)."""
    if bias is not None and bias.dim() == 1 and x.dim() > 2:
        bias = bias.view(1, -1, *([1] * (x.dim() - 2)))
    return _BiasLeakyReLU.apply(x, bias, gain)


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """x in float32 if autocast made it bf16/fp16; float32 and float64 pass unchanged."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def fresh_leaky_relu_(y: torch.Tensor) -> torch.Tensor:
    """In-place leaky ReLU for a tensor no other op saved (gain already folded into its producer)."""
    return F.leaky_relu_(y, NEG_SLOPE)


# ------------------------------------------------------------------------------------------------
# Convolution with cheap second-order gradients

class _Conv2d(torch.autograd.Function):
    """F.conv2d (no bias, dilation 1) whose backward is made of ordinary first-order ops.

    R1 and path length differentiate through the backward of every convolution. PyTorch's own double
    backward of a convolution expresses the weight term as a convolution whose kernel is the whole
    feature map (shapes like [C, B, 256, 256] * [C, B, 256, 256] in a profile), which is slow on CPU and
    can be far slower on GPU. Here the input gradient is a transposed convolution and the weight
    gradient a function (_Conv2dWeightGrad) whose own backward is two plain convolutions, so second-order
    gradients run on the usual forward/backward kernels. Without create_graph, one fused
    convolution_backward call computes both gradients, as F.conv2d's backward does.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride: int, padding: int, groups: int):
        if torch.is_autocast_enabled(x.device.type):     # autocast does not reach into the backward
            dtype = torch.get_autocast_dtype(x.device.type)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, groups)
        return F.conv2d(x, weight, bias, stride, padding, 1, groups)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, groups = ctx.conf
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if not torch.is_grad_enabled():            # first order only: the fused native call
            grads = torch.ops.aten.convolution_backward(
                grad, x, weight, [weight.shape[0]] if need_b else None, [stride] * 2, [padding] * 2, [1, 1],
                False, [0, 0], groups, [need_x, need_w, need_b])
            return (*grads, None, None, None)
        grad_x = _input_grad(grad, weight, x.shape, stride, padding, groups) if need_x else None
        grad_w = _Conv2dWeightGrad.apply(grad, x, weight, stride, padding, groups) if need_w else None
        grad_b = grad.sum((0, 2, 3)) if need_b else None
        return grad_x, grad_w, grad_b, None, None, None


class _Conv2dWeightGrad(torch.autograd.Function):
    """∂conv2d/∂weight contracted with `grad`; differentiable in `grad` and `x` by plain convolutions."""

    @staticmethod
    def forward(ctx, grad, x, weight, stride: int, padding: int, groups: int):
        ctx.save_for_backward(grad, x)
        ctx.conf = (stride, padding, groups)
        return torch.ops.aten.convolution_backward(
            grad, x, weight, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], groups,
            [False, True, False])[1]

    @staticmethod
    def backward(ctx, grad_grad_w):
        grad, x = ctx.saved_tensors
        stride, padding, groups = ctx.conf
        # grad_w = Σ grad ⊗ x is bilinear: its derivative in grad is conv2d(x, ·), in x the input gradient
        d_grad = _Conv2d.apply(x, grad_grad_w, None, stride, padding, groups) if ctx.needs_input_grad[0] else None
        d_x = _input_grad(grad, grad_grad_w, x.shape, stride, padding, groups) if ctx.needs_input_grad[1] else None
        return d_grad, d_x, None, None, None, None


def _input_grad(grad, weight, x_shape, stride, padding, groups):
    """∂conv2d/∂x contracted with `grad`: the transposed convolution, with the output padding that
    restores x's size when the stride dropped trailing rows or columns."""
    k = weight.shape[-2:]
    extra = [x_shape[i + 2] - ((grad.shape[i + 2] - 1) * stride - 2 * padding + k[i]) for i in range(2)]
    return F.conv_transpose2d(grad, weight, None, stride, padding, extra, groups)


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1,
           padding: int = 0, groups: int = 1) -> torch.Tensor:
    """F.conv2d (dilation 1) with cheap second-order gradients (see _Conv2d)."""
    return _Conv2d.apply(x, weight, bias, stride, padding, groups)


# ------------------------------------------------------------------------------------------------
# Products over many rows

# On CPU, float32 products over at least this many rows run as 1×1 convolutions (see row_product).
CONV_ROWS_MIN = 4096


def _rows_as_image(x: torch.Tensor) -> torch.Tensor:
    """(N, C) contiguous rows -> a (1, C, N, 1) channels_last view of the same memory."""
    return x.view(1, x.shape[0], 1, x.shape[1]).permute(0, 3, 1, 2)


def _image_as_rows(y: torch.Tensor) -> torch.Tensor:
    """Inverse of _rows_as_image for a channels_last (1, C, N, 1) tensor: a view when it is one."""
    return y.permute(0, 2, 3, 1).reshape(y.shape[2], y.shape[1])


def _as_conv(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and x.shape[0] >= CONV_ROWS_MIN


def row_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                leaky: bool = False) -> torch.Tensor:
    """x (N, in) @ weight (out, in)ᵀ + bias, then optionally an in-place leaky ReLU: a fresh (N, out).

    Many rows on CPU go through oneDNN as a 1×1 convolution over a channels_last view of the rows,
    whose kernels beat F.linear's GEMM for these tall, narrow products (`scripts/benchmark.py
    --linear-rows` measures the difference; README "Networks and speed"). The activation runs on the
    fresh product before it is viewed back (no in-place op on a view).
    """
    if _as_conv(x):
        y = conv2d(_rows_as_image(x.contiguous()), weight.contiguous()[:, :, None, None], bias)
        return _image_as_rows(fresh_leaky_relu_(y) if leaky else y)
    y = F.linear(x, weight, bias)
    return fresh_leaky_relu_(y) if leaky else y


def row_products_sum(parts, weights) -> torch.Tensor:
    """Σ_i parts[i] (N, in_i) @ weights[i]ᵀ as one fresh (N, out): the first product writes a buffer,
    the rest accumulate into it in place (no temporaries, no concatenation)."""
    (first, weight), rest = (parts[0], weights[0]), list(zip(parts[1:], weights[1:]))
    if _as_conv(first):
        acc = conv2d(_rows_as_image(first.contiguous()), weight.contiguous()[:, :, None, None])
        for part, weight in rest:
            acc.add_(conv2d(_rows_as_image(part.contiguous()), weight.contiguous()[:, :, None, None]))
        return _image_as_rows(acc)
    acc = torch.mm(first, weight.t())
    for part, weight in rest:      # in-place ops escape autocast: cast as mm was cast
        acc.addmm_(part.to(acc.dtype), weight.t().to(acc.dtype))
    return acc


# ------------------------------------------------------------------------------------------------
# Repeated rows

# Rows are deduplicated only when at most this share of them is distinct (else the bookkeeping costs more).
DISTINCT_ROWS_MAX_SHARE = 0.5


def distinct_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Each sample's distinct rows: x (B, N, C) -> (unique (B, U, C), index (B, N)) with
    gather_rows(unique, index) == x exactly, or None when more than DISTINCT_ROWS_MAX_SHARE of some sample's
    rows are distinct. For inputs that need no gradient: a gradient reaching `unique` would be the sum over
    each group's rows, not each row's own.

    Mask features are piecewise constant (a region's interior repeats one row), so a per-row function of
    them need only be computed once per distinct row. Rows are grouped by a random projection, then each
    row is compared with its group's first; rows that differ (a projection collision) are kept as rows of
    their own, so grouping can cost speed, never exactness.
    """
    if x.requires_grad and torch.is_grad_enabled():
        raise ValueError("distinct_rows is for inputs that need no gradient")
    b, n, c = x.shape
    direction = torch.randn(c, generator=torch.Generator().manual_seed(c)).to(x.device, x.dtype)
    with torch.autocast(x.device.type, enabled=False):      # bf16 keys would group far more rows wrongly
        keys = x.reshape(b * n, c) @ direction
    uniques, indices = [], []
    for rows, sample_keys in zip(x.unbind(), keys.view(b, n).unbind()):
        sample_keys, order = sample_keys.sort()
        starts = torch.ones_like(sample_keys, dtype=torch.bool)
        starts[1:] = sample_keys[1:] != sample_keys[:-1]
        group = torch.empty_like(order).scatter_(0, order, starts.long().cumsum(0) - 1)   # per row
        first = order[starts]                                                         # a row per group
        stray = (rows.index_select(0, first.index_select(0, group)) != rows).any(1).nonzero().squeeze(1)
        if first.numel() + stray.numel() > DISTINCT_ROWS_MAX_SHARE * n:
            return None
        group[stray] = first.numel() + torch.arange(stray.numel(), device=x.device)
        uniques.append(rows.index_select(0, torch.cat((first, stray))))
        indices.append(group)
    width = max(u.shape[0] for u in uniques)
    unique = torch.stack([torch.cat((u, u[:1].expand(width - u.shape[0], c))) for u in uniques])
    return unique, torch.stack(indices)


def gather_rows(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """rows (B, U, C) read at index (B, N) -> (B, N, C)."""
    b, u, c = rows.shape
    flat_index = (index + torch.arange(b, device=index.device).unsqueeze(1) * u).flatten()
    return rows.reshape(b * u, c).index_select(0, flat_index).view(*index.shape, c)


# ------------------------------------------------------------------------------------------------
# Equalised linear / conv


class PixelNorm(nn.Module):
    """x / sqrt(mean(x², dim) + 1e-8)."""

    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x * torch.rsqrt(x.square().mean(self.dim, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Equalised FC: weight N(0,1)/lr_mul scaled by lr_mul/√in; optional fused leaky ReLU·√2."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def effective(self, gain: float = 1.0):
        """(weight, bias) as applied, times `gain` (for folding this layer into a neighbour)."""
        bias = None if self.bias is None else self.bias * (self.lr_mul * gain)
        return self.weight * (self.scale * gain), bias

    def forward(self, x):
        # Flatten first: F.linear on a 3-D input returns a view, and an in-place activation on a
        # view makes autograd record a CopySlices node (full-size copies in backward).
        gain = ACT_GAIN if self.activation else 1.0
        y = row_product(x.reshape(-1, x.shape[-1]), *self.effective(gain), leaky=self.activation)
        return y.view(*x.shape[:-1], y.shape[-1])

    def extra_repr(self):
        return (f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, "
                f"activation={self.activation}")


@functools.lru_cache(maxsize=16)
def blur_kernel(device=None, dtype=None) -> torch.Tensor:
    """The normalised [1,3,3,1]⊗[1,3,3,1] FIR filter (sums to 1); cached per device and dtype,
    so treat it as read-only."""
    # A kernel first built under inference_mode must still be usable by autograd later.
    with torch.inference_mode(False):
        taps = torch.tensor(BLUR_TAPS, device=device, dtype=dtype)
        k = torch.outer(taps, taps)
        return k / k.sum()


def blur(x: torch.Tensor, padding: int, stride: int = 1) -> torch.Tensor:
    """Depthwise [1,3,3,1] blur with symmetric zero padding (upfirdn2d, up=down=1).

    stride 2 computes only the samples a following stride-2 1×1 conv would keep.
    """
    c = x.shape[1]
    k = blur_kernel(x.device, x.dtype).expand(c, 1, 4, 4).contiguous()
    return conv2d(x, k, stride=stride, padding=padding, groups=c)


# What a modulated conv or the RGB-skip upsampling reads beyond the image: "zero" (the reference, StyleGAN2) or
# "replicate" (the edge pixels repeated). MODEL.G_BORDER picks it for G's fold steps.
BORDERS = ("zero", "replicate")


def upsample2x(x: torch.Tensor, border: str = "zero") -> torch.Tensor:
    """upfirdn2d(up=2, [1,3,3,1]⊗[1,3,3,1]·4, pad (2,1)) as one depthwise transposed conv.

    Output o draws x[i]·k[o + 1 − 2i]; for a symmetric 4-tap kernel this is exactly the zero-insert,
    pad (2,1), 4×4 FIR of the reference. Its zeros beyond the border scale a flat input by 0.75 on the outer
    row (0.56 in the corners); border "replicate" repeats the edge instead, so a flat input stays flat (the
    interior is the same).
    """
    c = x.shape[1]
    k = (blur_kernel(x.device, x.dtype) * 4).expand(c, 1, 4, 4)
    if border == "replicate":
        y = F.conv_transpose2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, stride=2, padding=1, groups=c)
        return y[..., 2:-2, 2:-2]
    return F.conv_transpose2d(x, k, stride=2, padding=1, groups=c)


class ConvLayer(nn.Module):
    """An equalised conv (weight N(0,1) scaled by 1/√(in·k²); blur and stride 2 when downsampling) and a
    fused leaky ReLU with its own bias.

    Parameters: `weight` (out,in,k,k) and `bias` (out,) — the activation's bias when `activate`, the
    conv's own otherwise (same count as the reference ConvLayer). `out_gain` scales the output; the
    discriminator folds its residual 1/√2 in here.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, downsample: bool = False,
                 bias: bool = True, activate: bool = True, out_gain: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size ** 2)
        self.downsample = downsample
        self.activate = activate
        self.out_gain = out_gain
        # rosinality: total FIR padding p = (4 − 2) + (k − 1), split (p+1)//2, p//2 (equal here).
        self.blur_pad = (2 + kernel_size - 1) // 2
        self.padding = 0 if downsample else kernel_size // 2

    def forward(self, x):
        gain = self.out_gain * (ACT_GAIN if self.activate else 1.0)
        weight = self.weight * (self.scale * gain)
        bias = None if self.bias is None else self.bias * gain
        if self.downsample and self.weight.shape[-1] == 1:
            y = conv2d(blur(x, self.blur_pad, stride=2), weight, bias)
        elif self.downsample:
            y = conv2d(blur(x, self.blur_pad), weight, bias, stride=2)
        else:
            y = conv2d(x, weight, bias, padding=self.padding)
        return fresh_leaky_relu_(y) if self.activate else y

    def extra_repr(self):
        out_ch, in_ch, k, _ = self.weight.shape
        return f"{in_ch}, {out_ch}, k={k}, downsample={self.downsample}, activate={self.activate}"


# ------------------------------------------------------------------------------------------------
# Style-modulated layers


_modulating_activations = False


@contextlib.contextmanager
def modulated_activations():
    """Inside, ModulatedConv2d modulates its input instead of its weights (the same function; see there)."""
    global _modulating_activations
    saved, _modulating_activations = _modulating_activations, True
    try:
        yield
    finally:
        _modulating_activations = saved


class ModulatedConv2d(nn.Module):
    """Style-modulated conv (rosinality ModulatedConv2d).

    `weight` (out,in,k,k) N(0,1) at run-time scale 1/√(in·k²); `modulation` EqualLinear(style→in) with
    bias 1. Demodulation divides each sample's output filter by √(Σw² + 1e-8).

    Two equal forms (StyleGAN2-ADA's fused and non-fused): one grouped conv over the batch with per-sample weights,
    as the reference runs it; or, inside `modulated_activations()`, the input scaled by the style, convolved with
    the shared weight, the output scaled by the demodulation. The path-length phase uses the second: its double
    backward then needs no per-sample weight gradient; elsewhere the first was measured as fast or faster
    (docs/speed.md).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, border: str = "zero"):
        super().__init__()
        if border not in BORDERS:
            raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size ** 2)
        self.demodulate = demodulate
        self.border = border
        self.padding = kernel_size // 2

    def styles(self, style: torch.Tensor, gain: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(input scales (B,in), output scales (B,out) times `gain`, or None without demodulation: `gain` is then
        in the input scales)."""
        s = self.modulation(style) * self.scale                        # (B,in)
        if not self.demodulate:
            return s * gain, None
        # Σ_(in,k,k) (W·s)² = s² · Σ_(k,k) W²: a small matmul instead of two passes over the (B,out,in,k,k) weights.
        energy = s.square() @ self.weight.square().sum((2, 3)).t()       # (B,out)
        return s, torch.rsqrt(energy + 1e-8) * gain

    def sample_weights(self, style: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """Per-sample weights (B,out,in,k,k), demodulated, times `gain`."""
        s, demod = self.styles(style, gain)
        factor = s.unsqueeze(1) if demod is None else demod.unsqueeze(2) * s.unsqueeze(1)
        return self.weight.unsqueeze(0) * factor[:, :, :, None, None]

    def forward(self, x: torch.Tensor, style: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        padding = self.padding
        if self.border == "replicate" and padding:
            x, padding = F.pad(x, (padding,) * 4, mode="replicate"), 0
        b, c, h, w = x.shape
        if _modulating_activations:
            s, demod = self.styles(style, gain)
            y = conv2d(x * s.to(x.dtype)[:, :, None, None], self.weight, padding=padding)
            return y if demod is None else y * demod.to(y.dtype)[:, :, None, None]
        weight = self.sample_weights(style, gain)
        out_ch = weight.shape[1]
        y = conv2d(x.reshape(1, b * c, h, w), weight.reshape(b * out_ch, c, *weight.shape[3:]),
                   padding=padding, groups=b)
        return y.view(b, out_ch, *y.shape[2:])

    def extra_repr(self):
        out_ch, in_ch, k, _ = self.weight.shape
        return f"{in_ch}, {out_ch}, k={k}, demodulate={self.demodulate}, border={self.border}"


class StyledConv(nn.Module):
    """ModulatedConv2d 3×3, noise injection (one learned scalar, init 0), fused leaky ReLU."""

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, kernel_size: int = 3, border: str = "zero"):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, kernel_size, style_dim, border=border)
        self.noise_weight = nn.Parameter(torch.zeros(1))
        self.bias = nn.Parameter(torch.zeros(out_ch))

    def forward(self, x, style, noise: torch.Tensor | None = None):
        """`noise` (B or 1,1,H,W) or None for no noise; √2 gain is folded into conv, noise and bias."""
        y = self.conv(x, style, gain=ACT_GAIN)
        # The conv result is a view (of the grouped conv output): the first op must not be in
        # place, or autograd would record costly CopySlices; the rest then run in place.
        # Under autocast y is bf16/fp16: cast the float32 terms down, or the sum (and every later
        # op) would be promoted to float32, at the cost of full-size conversion copies.
        y = y + (self.bias * ACT_GAIN).to(y.dtype).view(1, -1, 1, 1)
        if noise is not None:
            y.add_((noise * (self.noise_weight * ACT_GAIN)).to(y.dtype))
        return fresh_leaky_relu_(y)


class ToRGB(nn.Module):
    """1×1 modulated conv to RGB (no demodulation) + bias, plus the 2× upsampled previous skip."""

    def __init__(self, in_ch: int, style_dim: int, out_ch: int = 3, border: str = "zero"):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, out_ch, 1, 1))
        self.border = border

    def forward(self, x, style, skip: torch.Tensor | None = None):
        b, c, h, w = x.shape
        weight = self.conv.sample_weights(style).flatten(2)             # (B,3,in)
        rgb = torch.baddbmm(self.bias.view(1, -1, 1), weight, x.reshape(b, c, h * w))
        # The 3-channel image path stays in float32 under autocast (as in StyleGAN2-ADA): summed over
        # every stage in bf16 it would carry about one 8-bit grey level of rounding error.
        rgb = at_least_float32(rgb.view(b, -1, h, w))
        if skip is not None:
            with torch.autocast(rgb.device.type, enabled=False):
                rgb = rgb + upsample2x(skip, self.border)
        return rgb


class ConstantInput(nn.Module):
    """A learned (1,C,R,R) tensor, N(0,1) initialised."""

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int):
        return self.input.expand(batch, -1, -1, -1)


# ------------------------------------------------------------------------------------------------
# Fold / Unfold (PixelFace+/code/pixel_models/blocks.py:18-51): space-to-depth ×2 with sub-pixel-major
# channel order


def fold(x: torch.Tensor, times: int = 1) -> torch.Tensor:
    """(B,C,H,W) -> (B,4^times·C, H/2^t, W/2^t); one Fold: channel (ph·2+pw)·C + c.

    Equal to pixel_unshuffle(2) followed by regrouping channels (c,ph,pw) -> (ph,pw,c), repeated;
    done here as one permute (one copy) however many times.
    """
    return fold_channels_last(x.permute(0, 2, 3, 1), times)


def fold_channels_last(x: torch.Tensor, times: int = 1) -> torch.Tensor:
    """`fold` for a (B,H,W,C) input; returns a contiguous NCHW tensor."""
    b, h, w, c = x.shape
    f = 2 ** times
    # After t folds, output channel = (ph_t, pw_t, …, ph_1, pw_1, c) and input row = I·2^t + Σ ph_j·2^(j-1):
    # the last fold's sub-pixel is the coarsest digit of the row index and the outermost in the channel.
    x = x.reshape(b, h // f, *([2] * times), w // f, *([2] * times), c)
    row_digits = range(2, 2 + times)                  # coarse -> fine
    col_digits = range(3 + times, 3 + 2 * times)
    order = [0]
    for ph, pw in zip(row_digits, col_digits):
        order += [ph, pw]
    order += [3 + 2 * times, 1, 2 + times]            # c, I, J
    return x.permute(order).reshape(b, c * f * f, h // f, w // f)


def unfold(x: torch.Tensor) -> torch.Tensor:
    """Inverse of one Fold: (B,4C,H,W) -> (B,C,2H,2W); regroup (ph,pw,c)->(c,ph,pw) + pixel_shuffle."""
    b, c4, h, w = x.shape
    c = c4 // 4
    return (x.reshape(b, 2, 2, c, h, w).permute(0, 3, 4, 1, 5, 2).reshape(b, c, 2 * h, 2 * w))


def channel_table(size: int, channel_multiplier: int = 2, channel_max: int = 512) -> dict[int, int]:
    """StyleGAN2 widths {4..32: 512, 64: 256·cm, 128: 128·cm, …, 1024: 16·cm}, capped at channel_max."""
    table = {}
    res = 4
    while res <= size:
        width = 512 if res <= 32 else (16384 // res) * channel_multiplier
        table[res] = min(width, channel_max)
        res *= 2
    return table
