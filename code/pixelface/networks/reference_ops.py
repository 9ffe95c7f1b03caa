"""Reference-style transcription, for equivalence tests and the benchmark.

The PixelFace+ forward passes written op for op as the public reference computes them
(qazwsx671713/PixelFace-Plus), but reading the parameters of OUR Generator / Discriminator, so both
sides of a comparison hold the same weights:

* G (PixelFace+/code/model.py:476-616, PixelFacePlus.forward): full-resolution mask conv and nearest
  resizes, per-sample coordinate grids and LFF, GCMF on (B·F, C) rows with explicit queries and the
  double dropout of GateCrossModelFusion.py (compute_probs / dropout), channel concatenations before
  every 1×1 posfolder conv, Fold/Unfold as the reference reshape+permute (pixel_models/blocks.py:18-51),
  modulated convs as one grouped conv over the batch (blocks.py ModulatedConv2d), noise injection and
  the skip upsampling through upfirdn2d.
* D (PixelFace+/code/model.py:194-311, Pixel_Discriminator): ConvLayer = Blur (upfirdn2d) + EqualConv2d
  + FusedLeakyReLU, ResBlock sums divided by √2, the StyleGAN2 minibatch stddev, and the COND_DNET head
  on a concatenation with the tiled sentence; one body pass per sentence, as the reference calls D.

The CUDA ops (fused_leaky_relu, upfirdn2d) are replaced by rosinality's pure-PyTorch fallbacks, which
is what the reference runs without its extensions. Nothing here is used for training: the modules in
generator.py / discriminator.py compute the same functions more cheaply (tests check it in float64).
The conditional head returns a logit here too: the reference's trailing Sigmoid is left to the losses.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SQRT2 = math.sqrt(2.0)
BLUR = (1.0, 3.0, 3.0, 1.0)


# ------------------------------------------------------------------------------------------------
# rosinality's native fallbacks of the CUDA ops


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor, scale: float = SQRT2) -> torch.Tensor:
    """op/fused_act.py without the extension: leaky_relu(x + bias, 0.2)·√2, bias over dim 1."""
    rest = [1] * (x.dim() - bias.dim() - 1)
    return F.leaky_relu(x + bias.view(1, bias.shape[0], *rest), negative_slope=0.2) * scale


def make_kernel(taps=BLUR, device=None, dtype=None) -> torch.Tensor:
    k = torch.tensor(taps, device=device, dtype=dtype)
    k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """op/upfirdn2d.py upfirdn2d_native: every channel becomes its own 1-channel image (B·C,1,H,W)."""
    _, channel, in_h, in_w = x.shape
    pad0, pad1 = pad
    x = x.reshape(-1, in_h, in_w, 1)
    kh, kw = kernel.shape
    out = x.view(-1, in_h, 1, in_w, 1, 1)
    out = F.pad(out, [0, 0, 0, up - 1, 0, 0, 0, up - 1])
    out = out.view(-1, in_h * up, in_w * up, 1)
    out = F.pad(out, [0, 0, pad0, pad1, pad0, pad1])
    out = out.permute(0, 3, 1, 2).reshape(-1, 1, in_h * up + pad0 + pad1, in_w * up + pad0 + pad1)
    out = F.conv2d(out, torch.flip(kernel, [0, 1]).view(1, 1, kh, kw))
    out = out.reshape(-1, 1, in_h * up + pad0 + pad1 - kh + 1, in_w * up + pad0 + pad1 - kw + 1)
    out = out.permute(0, 2, 3, 1)[:, ::down, ::down, :]
    out_h = (in_h * up + pad0 + pad1 - kh) // down + 1
    out_w = (in_w * up + pad0 + pad1 - kw) // down + 1
    return out.reshape(-1, channel, out_h, out_w)


# ------------------------------------------------------------------------------------------------
# Layers, reading our modules' parameters


def equal_linear(layer, x: torch.Tensor) -> torch.Tensor:
    """blocks.py EqualLinear: F.linear with weight·scale, then fused_leaky_relu(bias·lr_mul) or + bias."""
    if layer.activation:
        return fused_leaky_relu(F.linear(x, layer.weight * layer.scale), layer.bias * layer.lr_mul)
    bias = None if layer.bias is None else layer.bias * layer.lr_mul
    return F.linear(x, layer.weight * layer.scale, bias)


def pixel_norm(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(torch.mean(x ** 2, dim=1, keepdim=True) + 1e-8)


def fold(x: torch.Tensor) -> torch.Tensor:
    """blocks.py Fold: (B,C,H,W) -> (B,4C,H/2,W/2) by reshape + permute."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4)
    return x.reshape(b, 4 * c, h // 2, w // 2)


def unfold(x: torch.Tensor) -> torch.Tensor:
    """blocks.py Unfold: the inverse of Fold."""
    b, c4, h, w = x.shape
    x = x.reshape(b, 2, 2, c4 // 4, h, w).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(b, c4 // 4, 2 * h, 2 * w)


def conv_layer_1x1(mix, x: torch.Tensor) -> torch.Tensor:
    """Con_PosFold's ConvLayer(k=1) on a concatenation: EqualConv2d (no bias) + FusedLeakyReLU.
    `mix` is our PointwiseMix, whose (out, ΣC) weight is the reference conv's."""
    return fused_leaky_relu(F.conv2d(x, mix.weight[:, :, None, None] * mix.scale), mix.bias)


def modulated_conv(conv, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """blocks.py ModulatedConv2d.forward (no up/down): modulate, demodulate, one grouped conv."""
    batch, in_ch, h, w = x.shape
    out_ch, k = conv.weight.shape[0], conv.weight.shape[-1]
    style = equal_linear(conv.modulation, style).view(batch, 1, in_ch, 1, 1)
    weight = conv.scale * conv.weight.unsqueeze(0) * style
    if conv.demodulate:
        demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
        weight = weight * demod.view(batch, out_ch, 1, 1, 1)
    weight = weight.view(batch * out_ch, in_ch, k, k)
    out = F.conv2d(x.view(1, batch * in_ch, h, w), weight, padding=conv.padding, groups=batch)
    return out.view(batch, out_ch, *out.shape[2:])


def styled_conv(layer, x, style, noise=None):
    """blocks.py StyledConv: modulated conv, NoiseInjection (fresh N(0,1) when None), FusedLeakyReLU."""
    out = modulated_conv(layer.conv, x, style)
    if noise is None:
        noise = out.new_empty(out.shape[0], 1, *out.shape[2:]).normal_()
    out = out + layer.noise_weight * noise
    return fused_leaky_relu(out, layer.bias)


def to_rgb(layer, x, style, skip):
    """blocks.py ToRGB: 1×1 modulated conv (no demodulation) + bias + Upsample(skip) via upfirdn2d."""
    out = modulated_conv(layer.conv, x, style) + layer.bias
    if skip is not None:
        kernel = make_kernel(device=x.device, dtype=x.dtype) * 4
        out = out + upfirdn2d(skip, kernel, up=2, pad=(2, 1))
    return out


# ------------------------------------------------------------------------------------------------
# Generator


def coord_format(b: int, h: int, w: int, device, dtype) -> torch.Tensor:
    """tensor_transforms.convert_to_coord_format: (B,2,H,W) of x then y in [-1,1], one copy per sample."""
    x = torch.linspace(-1, 1, w, device=device, dtype=dtype).view(1, 1, 1, -1).repeat(b, 1, h, 1)
    y = torch.linspace(-1, 1, h, device=device, dtype=dtype).view(1, 1, -1, 1).repeat(b, 1, 1, w)
    return torch.cat((x, y), dim=1)


def _dropout(x: torch.Tensor, p: float, training: bool, shape) -> torch.Tensor:
    """GateCrossModelFusion.py dropout(): nn.Dropout of a ones tensor of `shape`, times x."""
    return F.dropout(torch.ones(shape, device=x.device, dtype=x.dtype), p, training) * x


def gcmf(module, rows: torch.Tensor, text: torch.Tensor, padding=None) -> torch.Tensor:
    """GateCrossModelFusion.forward (one head, no gates, no positions) on (B,F,C) queries, (B,T,C) words.

    The padding mask is ours (the reference attends to every word); the dropout rate per application is
    the module's (the reference's attention_dropout/2 = 0.06).
    """
    b, n, _ = rows.shape
    t = text.shape[1]
    queries = equal_linear(module.to_queries, rows.reshape(b * n, -1))
    keys = equal_linear(module.to_keys, text.reshape(b * t, -1))
    values = equal_linear(module.to_values, text.reshape(b * t, -1))
    queries = queries.reshape(b, n, 1, module.dim).permute(0, 2, 1, 3)
    keys = keys.reshape(b, t, 1, module.dim).permute(0, 2, 1, 3)
    values = values.reshape(b, t, 1, module.dim).permute(0, 2, 1, 3)
    scores = queries.matmul(keys.permute(0, 1, 3, 2)) / math.sqrt(float(module.dim))
    if padding is not None:
        scores = scores.masked_fill(padding[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    probs = _dropout(probs, module.dropout, module.training, probs.shape)
    probs = _dropout(probs, module.dropout, module.training, (b, 1, 1, t))
    control = probs.matmul(values).permute(0, 2, 1, 3).reshape(-1, module.dim)
    control = _mlp(module.c_mlp, control)
    out = control + _mlp(module.ffn, control)
    return out.reshape(b, n, module.dim)


def _mlp(ff, x):
    return equal_linear(ff.out_layer, equal_linear(ff.l1, equal_linear(ff.l0, x)))


def reference_latents(g, z: torch.Tensor) -> torch.Tensor:
    """Mapping network and latent broadcast of PixelFacePlus.forward: (B, n_latent, style_dim)."""
    w = pixel_norm(z)
    for layer in list(g.style)[1:]:
        w = equal_linear(layer, w)
    return w.unsqueeze(1).repeat(1, g.n_latent, 1)


def _text(g, words):
    """PixelFacePlus.linears on (B·T, C) rows (model.py, c_code permute/reshape)."""
    b, t, c = words.shape
    x = pixel_norm(words.reshape(b * t, c))
    for layer in list(g.text_mlp)[1:]:
        x = equal_linear(layer, x)
    return x.reshape(b, t, -1)


def literal_reference_forward(g, mask, words, latents, noise=None, padding=None) -> torch.Tensor:
    """The reference PixelFacePlus forward with G's parameters; returns the (B,3,size,size) image.

    latents (B, n_latent, style_dim) (see reference_latents); noise: one map per StyledConv, or None for
    fresh noise inside every layer as the reference draws it. GCMF dropout follows g's training mode.
    """
    if any(step.fold_skip is not None for stage in g.stages for step in stage.folds):
        raise ValueError("the reference has no fold skip (MODEL.FOLD_SKIP must be 'none')")
    if (g.text_to_w is not None or g.mask_context is not None
            or any(step.unfold_blur for stage in g.stages for step in stage.folds)):
        raise ValueError("the reference has no text route to w, no mask context and no blur after Unfold "
                         "(MODEL.TEXT_TO_W, MODEL.MASK_CONTEXT and MODEL.UNFOLD_BLUR must be off)")
    if g.stages[-1].folds[-1].stripes is not None:
        raise ValueError("the reference draws no pixel stripes (MODEL.PIXEL_STRIPES must be off)")
    if g.mask_encoder.kernel_size != (3, 3) or g.point_taps is not None:
        raise ValueError("the reference encodes the mask with one 3x3 conv (MODEL.MASK_KERNEL must be 3, "
                         "MODEL.MASK_POINT_CHANNELS 0)")
    if any(step.to_rgb.border != "zero" for stage in g.stages for step in stage.folds):
        raise ValueError("the reference pads G's convs and skip upsampling with zeros (MODEL.G_BORDER must be 'zero')")
    b = mask.shape[0]
    noise = [None] * g.num_layers if noise is None else noise
    text = _text(g, words)
    mask_full = F.conv2d(mask, g.mask_encoder.weight, g.mask_encoder.bias, padding=1)
    out = skip = None
    for stage in g.stages:
        r = stage.res
        m = mask_full if r == g.size else F.interpolate(mask_full, size=[r, r], mode="nearest")
        rows = m.reshape(b, m.shape[1], r * r).permute(0, 2, 1)
        e_rend = gcmf(stage.gcmf, rows, text, padding).permute(0, 2, 1).reshape(b, -1, r, r)
        emb = torch.sin(stage.lff.conv(coord_format(b, r, r, mask.device, mask.dtype)))
        if stage.index == 0:
            constant = g.input.input.repeat(b, 1, 1, 1)
            temp = torch.cat((torch.cat((torch.cat((e_rend, emb), 1), constant), 1), m), 1)
            out = fold(fold(conv_layer_1x1(stage.conv1, conv_layer_1x1(stage.conv0, temp))))
        else:
            temp = torch.cat((torch.cat((e_rend, emb), 1), m), 1)
            folded = fold(fold(conv_layer_1x1(stage.conv1, temp)))
            out = conv_layer_1x1(stage.conv_merge, torch.cat((folded, out), 1))
        for f, step in enumerate(stage.folds):
            i = 4 * stage.index + 2 * f
            out = styled_conv(step.conv_low, out, latents[:, i], noise[i])
            out = styled_conv(step.conv_high, unfold(out), latents[:, i + 1], noise[i + 1])
            skip = to_rgb(step.to_rgb, out, latents[:, i + 2], skip)
    return skip


# ------------------------------------------------------------------------------------------------
# Discriminator


def conv_layer(layer, x: torch.Tensor) -> torch.Tensor:
    """model.py ConvLayer: [Blur] + EqualConv2d + [FusedLeakyReLU], with our ConvLayer's parameters
    (its out_gain, the ResBlock's 1/√2, is applied by the caller as the reference does)."""
    k = layer.weight.shape[-1]
    weight = layer.weight * layer.scale
    if layer.downsample:
        p = (len(BLUR) - 2) + (k - 1)
        x = upfirdn2d(x, make_kernel(device=x.device, dtype=x.dtype), pad=((p + 1) // 2, p // 2))
        out = F.conv2d(x, weight, stride=2)
    else:
        out = F.conv2d(x, weight, padding=k // 2)
    if layer.activate:
        return fused_leaky_relu(out, layer.bias)
    return out if layer.bias is None else out + layer.bias.view(1, -1, 1, 1)


def res_block(block, x):
    """model.py ResBlock: (conv2(conv1(x)) + skip(x)) / √2."""
    return (conv_layer(block.conv2, conv_layer(block.conv1, x)) + conv_layer(block.skip, x)) / SQRT2


def stddev_feature(out: torch.Tensor, group_max: int = 4) -> torch.Tensor:
    """Pixel_Discriminator.forward's minibatch stddev (B must be divisible by min(B, 4))."""
    batch, channel, height, width = out.shape
    group = min(batch, group_max)
    stddev = out.view(group, -1, 1, channel, height, width)
    stddev = torch.sqrt(stddev.var(0, unbiased=False) + 1e-8)
    stddev = stddev.mean([2, 3, 4], keepdim=True).squeeze(2)
    stddev = stddev.repeat(group, 1, height, width)
    return torch.cat([out, stddev], 1)


def reference_discriminator_forward(d, image, mask, sentence=None):
    """Pixel_Discriminator.forward on cat[image, mask] with D's parameters: (logit (B,1), cond logit (B,)
    or None). One sentence per call, as the reference; each call runs the whole body."""
    if d.pixel_head is not None:
        raise ValueError("the reference's D reads the caption at 4x4 only (MODEL.D_COND_PIXEL_RES must be 0)")
    out = conv_layer(d.from_input, torch.cat([image, mask], 1))
    for block in d.blocks:
        out = res_block(block, out)
    out = conv_layer(d.final_conv, stddev_feature(out))
    cond = None
    if sentence is not None:
        head = d.cond_head
        c_code = sentence.view(-1, head.sentence_dim, 1, 1).repeat(1, 1, 4, 4)
        joint = F.leaky_relu(head.joint_conv(torch.cat((out, c_code), 1)), 0.2)
        cond = head.out(joint).view(-1)
    flat = out.reshape(out.shape[0], -1)    # the reference's .view fails on channels_last tensors
    logit = equal_linear(d.final_linear[1], equal_linear(d.final_linear[0], flat))
    return logit, cond
