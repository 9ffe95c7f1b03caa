"""Converting the official PixelFace+ checkpoint: a state dict laid out as the reference lays it out (names,
shapes, registration order; random values) converts, and our networks then compute what a literal
transcription of the reference forward passes computes from the reference names (float64, <= 1e-9).
Bad files give one error naming the keys; a pickle carrying code is refused; the result samples."""
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pixelface.core.config import load_config
from pixelface.core.files import FolderLock
from pixelface.data.masks import label_to_color
from pixelface.data.synthface import make_face, write_dataset
from pixelface.networks.checkpoint import load_checkpoint, load_generator
from pixelface.networks.discriminator import Discriminator
from pixelface.networks.generator import Generator
from pixelface.networks.layers import channel_table
from pixelface.training.convert import (ConversionError, convert, discriminator_rules, generator_rules,
                                        load_reference, read_reference)
from test_generator import literal_reference_forward
from conftest import REPO_ROOT, load_script

torch.set_num_threads(1)

# The reference ties the word width to style_dim (linears: text_dim -> style_dim) and GCMF's width to the
# mask features, so the tiny layout keeps those equal.
DIMS = dict(size=64, style_dim=32, n_mlp=2, text_dim=32, mask_dim=16, channel_max=32, sentence_dim=32)
TINY_CFG = ["MODEL.SIZE=64", "MODEL.STYLE_DIM=32", "MODEL.N_MLP=2", "MODEL.CHANNEL_MAX=32", "MODEL.MASK_DIM=16",
            "TEXT.EMBEDDING_DIM=32", "TEXT.SENTENCE_DIM=32"]
SQRT2 = math.sqrt(2.0)


# ------------------------------------------------------------------------------------------------
# The reference's state-dict layout, written from its modules (PixelFace+/code/model.py, blocks.py,
# GateCrossModelFusion.py, spectral.py), in registration order


def make_kernel(gain):
    k = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)
    k = torch.outer(k, k)
    return k / k.sum() * gain


def stage_resolutions(size):
    return [16 * 4 ** i for i in range(int(math.log(size // 16, 4)) + 1)]


def reference_g_shapes(size, style_dim, n_mlp, text_dim, mask_dim, channel_max, **_):
    """PixelFacePlus: style, mask_cov, linears, fc1, posfolders, convs, to_rgbs, lffs, input, gcmf1-3, upsample."""
    ch = channel_table(size, 2, channel_max)
    shapes = {}
    for i in range(1, n_mlp + 1):
        shapes.update({f"style.{i}.weight": (style_dim, style_dim), f"style.{i}.bias": (style_dim,)})
    shapes.update({"mask_cov.weight": (mask_dim, 3, 3, 3), "mask_cov.bias": (mask_dim,),
                   "linears.1.weight": (style_dim, text_dim), "linears.1.bias": (style_dim,),
                   "linears.2.weight": (style_dim, style_dim), "linears.2.bias": (style_dim,),
                   "fc1.weight": (text_dim // 2, text_dim), "fc1.bias": (text_dim // 2,)})
    stages = stage_resolutions(size)
    for i, res in enumerate(stages):                       # Con_PosFold: conv0, conv1, conv_merge
        in_c, out_c, p = ch[res // 4], ch[res], f"posfolders.{i}"
        if i == 0:
            shapes.update({f"{p}.conv0.0.weight": (out_c, 2 * out_c + 2 * mask_dim, 1, 1),
                           f"{p}.conv0.1.bias": (out_c,),
                           f"{p}.conv1.0.weight": (in_c // 16, out_c, 1, 1)})
        else:
            shapes[f"{p}.conv1.0.weight"] = (in_c // 16, out_c + 2 * mask_dim, 1, 1)
        shapes.update({f"{p}.conv1.1.bias": (in_c // 16,), f"{p}.conv_merge.0.weight": (in_c, 2 * in_c, 1, 1),
                       f"{p}.conv_merge.1.bias": (in_c,)})
    convs, rgbs = {}, {}
    for i, res in enumerate(stages):
        in_ch = ch[res // 4]
        for f in range(2):
            out_ch, k = ch[res // 4 * 2 ** (f + 1)], 4 * i + 2 * f
            for c, (cin, cout) in enumerate(((in_ch, out_ch), (out_ch // 4, out_ch))):
                p = f"convs.{k + c}"
                convs.update({f"{p}.conv.weight": (1, cout, cin, 3, 3), f"{p}.conv.modulation.weight": (cin, style_dim),
                              f"{p}.conv.modulation.bias": (cin,), f"{p}.noise.weight": (1,),
                              f"{p}.activate.bias": (cout,)})
            p = f"to_rgbs.{2 * i + f}"
            rgbs.update({f"{p}.bias": (1, 3, 1, 1), f"{p}.upsample.kernel": (4, 4),
                         f"{p}.conv.weight": (1, 3, out_ch, 1, 1),
                         f"{p}.conv.modulation.weight": (out_ch, style_dim), f"{p}.conv.modulation.bias": (out_ch,)})
            in_ch = out_ch
    shapes.update(convs)
    shapes.update(rgbs)
    for i, res in enumerate(stages):
        shapes.update({f"lffs.{i}.ffm.conv.weight": (ch[res], 2, 1, 1), f"lffs.{i}.ffm.conv.bias": (ch[res],)})
    shapes["input.input"] = (1, ch[16], 16, 16)
    for i in range(1, len(stages) + 1):                    # GateCrossModelFusion(dim=mask_dim, pos_dim=0)
        p, d = f"gcmf{i}", mask_dim
        for fc, fan_in in (("to_queries", mask_dim), ("to_keys", style_dim), ("to_values", style_dim),
                           ("from_pos_map", 0), ("to_pos_map", 0)):
            shapes.update({f"{p}.{fc}.weight": (d, fan_in), f"{p}.{fc}.bias": (d,)})
        shapes.update({f"{p}.modulation.weight": (2 * d, d), f"{p}.modulation.bias": (2 * d,)})
        for mlp in ("c_mlp", "ffn"):                       # MLP registers out_layer before l0, l1
            for layer in ("out_layer", "l0", "l1"):
                shapes.update({f"{p}.{mlp}.{layer}.weight": (d, d), f"{p}.{mlp}.{layer}.bias": (d,)})
    shapes["upsample.kernel"] = (4, 4)
    return shapes


def reference_d_shapes(size, channel_max, sentence_dim, **_):
    """Pixel_Discriminator: convs (ConvLayer 1x1, ResBlocks), final_conv, final_linear, COND_DNET."""
    ch = channel_table(size, 2, channel_max)
    shapes = {"convs.0.0.weight": (ch[size], 6, 1, 1), "convs.0.1.bias": (ch[size],)}
    res, i = size, 1
    while res > 4:
        cin, cout, p = ch[res], ch[res // 2], f"convs.{i}"
        shapes.update({f"{p}.conv1.0.weight": (cin, cin, 3, 3), f"{p}.conv1.1.bias": (cin,),
                       f"{p}.conv2.0.kernel": (4, 4), f"{p}.conv2.1.weight": (cout, cin, 3, 3),
                       f"{p}.conv2.2.bias": (cout,), f"{p}.skip.0.kernel": (4, 4),
                       f"{p}.skip.1.weight": (cout, cin, 1, 1)})
        res, i = res // 2, i + 1
    c4, joint = ch[4], "COND_DNET.jointConv.0.module"
    shapes.update({"final_conv.0.weight": (c4, c4 + 1, 3, 3), "final_conv.1.bias": (c4,),
                   "final_linear.0.weight": (c4, c4 * 16), "final_linear.0.bias": (c4,),
                   "final_linear.1.weight": (1, c4), "final_linear.1.bias": (1,),
                   # SpectralNorm deletes `weight` and appends u, v, bar after the conv's bias
                   f"{joint}.bias": (c4,), f"{joint}.weight_u": (c4,), f"{joint}.weight_v": ((c4 + sentence_dim) * 9,),
                   f"{joint}.weight_bar": (c4, c4 + sentence_dim, 3, 3),
                   "COND_DNET.outlogits.0.weight": (1, c4, 4, 4), "COND_DNET.outlogits.0.bias": (1,)})
    return shapes


def unit(v):
    return v / (v.norm() + 1e-12)      # spectral.py l2normalize


def random_state(shapes, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("upsample.kernel"):
            state[key] = make_kernel(16 if key == "upsample.kernel" else 4).to(dtype)
        elif key.endswith(".kernel"):
            state[key] = make_kernel(1).to(dtype)
        elif key.endswith(("weight_u", "weight_v")):
            state[key] = unit(torch.randn(shape, generator=gen, dtype=dtype))
        else:
            state[key] = torch.randn(shape, generator=gen, dtype=dtype) * (0.5 if "bias" in key else 1.0)
    return state


def reference_file_dict(dims=DIMS, seed=0, dtype=torch.float32):
    g = random_state(reference_g_shapes(**dims), seed, dtype)
    return {"g": g, "d": random_state(reference_d_shapes(**dims), seed + 1, dtype),
            "g_ema": random_state(reference_g_shapes(**dims), seed + 2, dtype)}


# ------------------------------------------------------------------------------------------------
# Literal transcriptions of the reference forward passes, reading the reference names


def equal_linear(sd, name, x, lr_mul=1.0, activate=False):           # blocks.py EqualLinear
    w, b = sd[f"{name}.weight"], sd[f"{name}.bias"]
    out = F.linear(x, w * (lr_mul / math.sqrt(w.shape[1])))
    return F.leaky_relu(out + b * lr_mul, 0.2) * SQRT2 if activate else out + b * lr_mul


def fully_connected(sd, name, x, activate=False):                    # GANformer FullyConnectedLayer
    w = sd[f"{name}.weight"]
    out = x @ (w / math.sqrt(w.shape[1])).t() + sd[f"{name}.bias"]
    return F.leaky_relu(out, 0.2) * SQRT2 if activate else out


def pixel_norm(x):
    return x * torch.rsqrt(torch.mean(x ** 2, dim=1, keepdim=True) + 1e-8)


def conv_layer(sd, name, x, index=0, stride=1, padding=0, activate=True):   # ConvLayer Sequential
    w = sd[f"{name}.{index}.weight"]
    out = F.conv2d(x, w / math.sqrt(w[0].numel()), stride=stride, padding=padding)
    if not activate:
        return out
    return F.leaky_relu(out + sd[f"{name}.{index + 1}.bias"].view(1, -1, 1, 1), 0.2) * SQRT2


def fold(x):                                                          # blocks.py Fold
    b, c, h, w = x.shape
    return x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4).reshape(b, 4 * c, h // 2, w // 2)


def unfold(x):                                                        # blocks.py Unfold
    b, c, h, w = x.shape
    return x.reshape(b, 2, 2, c // 4, h, w).permute(0, 3, 4, 1, 5, 2).reshape(b, c // 4, 2 * h, 2 * w)


def upfirdn(x, kernel, up, pad):
    """upfirdn2d(x, kernel, up, down=1, pad=(p0, p1)): zero insertion, padding, true convolution."""
    b, c, h, w = x.shape
    if up > 1:
        z = x.new_zeros(b, c, h * up, w * up)
        z[:, :, ::up, ::up] = x
        x = z
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    return F.conv2d(x, kernel.flip(0, 1).expand(c, 1, *kernel.shape).to(x.dtype), groups=c)


def modulated_conv(sd, name, x, style, demodulate=True):             # blocks.py ModulatedConv2d
    w = sd[f"{name}.weight"]
    b, cin = x.shape[:2]
    s = equal_linear(sd, f"{name}.modulation", style).view(b, 1, cin, 1, 1)
    weight = w / math.sqrt(w[0, 0].numel()) * s
    if demodulate:
        weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(b, -1, 1, 1, 1)
    out = F.conv2d(x.reshape(1, b * cin, *x.shape[2:]), weight.reshape(-1, cin, *w.shape[3:]),
                   padding=w.shape[-1] // 2, groups=b)
    return out.view(b, -1, *out.shape[2:])


def gcmf(sd, name, rows, c):                                         # GateCrossModelFusion.forward
    q, k, v = (fully_connected(sd, f"{name}.{fc}", t) for fc, t in
               (("to_queries", rows), ("to_keys", c), ("to_values", c)))
    probs = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)
    control = probs @ v

    def mlp(prefix, x):
        for layer in ("l0", "l1", "out_layer"):
            x = fully_connected(sd, f"{prefix}.{layer}", x, activate=True)
        return x

    control = mlp(f"{name}.c_mlp", control)
    return control + mlp(f"{name}.ffn", control)


def reference_generator(sd, mask, words_bct, z, noise, n_mlp):
    """PixelFacePlus.forward with one z, given noise maps (the reference draws them itself)."""
    b = mask.shape[0]
    c = words_bct.permute(0, 2, 1).reshape(-1, words_bct.shape[1])
    for i in (1, 2):
        c = equal_linear(sd, f"linears.{i}", pixel_norm(c) if i == 1 else c, 0.01, True)
    c = c.reshape(b, words_bct.shape[2], -1)
    w = pixel_norm(z)
    for i in range(1, n_mlp + 1):
        w = equal_linear(sd, f"style.{i}", w, 0.01, True)
    stages = stage_resolutions(mask.shape[-1])
    latent = w.unsqueeze(1).repeat(1, 4 * len(stages) + 1, 1)
    m_full = F.conv2d(mask, sd["mask_cov.weight"], sd["mask_cov.bias"], padding=1)
    out, skip = sd["input.input"].repeat(b, 1, 1, 1), None
    for i, res in enumerate(stages):
        axis = torch.linspace(-1, 1, res, dtype=mask.dtype)
        coord = torch.stack([axis.view(1, res).expand(res, res), axis.view(res, 1).expand(res, res)])
        emb = torch.sin(F.conv2d(coord.expand(b, -1, -1, -1), sd[f"lffs.{i}.ffm.conv.weight"],
                                 sd[f"lffs.{i}.ffm.conv.bias"]))
        m = F.interpolate(m_full, size=[res, res], mode="nearest")
        temp = gcmf(sd, f"gcmf{i + 1}", m.reshape(b, m.shape[1], -1).permute(0, 2, 1), c)
        temp = temp.permute(0, 2, 1).reshape(b, -1, res, res)
        p = f"posfolders.{i}"
        if i == 0:
            out = fold(fold(conv_layer(sd, f"{p}.conv1", conv_layer(sd, f"{p}.conv0",
                                                                   torch.cat((temp, emb, out, m), 1)))))
        else:
            folded = fold(fold(conv_layer(sd, f"{p}.conv1", torch.cat((temp, emb, m), 1))))
            out = conv_layer(sd, f"{p}.conv_merge", torch.cat((folded, out), 1))
        for f in range(2):
            k = 4 * i + 2 * f
            for j in (k, k + 1):
                x = out if j == k else unfold(out)
                y = modulated_conv(sd, f"convs.{j}.conv", x, latent[:, j]) + sd[f"convs.{j}.noise.weight"] * noise[j]
                out = F.leaky_relu(y + sd[f"convs.{j}.activate.bias"].view(1, -1, 1, 1), 0.2) * SQRT2
            r = f"to_rgbs.{2 * i + f}"
            rgb = modulated_conv(sd, f"{r}.conv", out, latent[:, k + 2], demodulate=False) + sd[f"{r}.bias"]
            skip = rgb if skip is None else rgb + upfirdn(skip, sd[f"{r}.upsample.kernel"], 2, (2, 1))
    return skip


def reference_discriminator(sd, image, sentence, update=True):
    """Pixel_Discriminator.forward -> (logit, conditional pre-sigmoid, probability); the SpectralNorm
    steps sd's weight_u / weight_v in place, as spectral.py does on every call."""
    x = conv_layer(sd, "convs.0", image)
    i = 1
    while f"convs.{i}.conv1.0.weight" in sd:
        p = f"convs.{i}"
        y = conv_layer(sd, f"{p}.conv1", x, padding=1)
        y = conv_layer(sd, f"{p}.conv2", upfirdn(y, sd[f"{p}.conv2.0.kernel"], 1, (2, 2)), index=1, stride=2)
        skip = conv_layer(sd, f"{p}.skip", upfirdn(x, sd[f"{p}.skip.0.kernel"], 1, (1, 1)), index=1, stride=2,
                          activate=False)
        x, i = (y + skip) / SQRT2, i + 1
    b, c, h, w = x.shape
    group = min(b, 4)
    std = torch.sqrt(x.view(group, -1, 1, c, h, w).var(0, unbiased=False) + 1e-8)
    std = std.mean([2, 3, 4], keepdim=True).squeeze(2).repeat(group, 1, h, w)
    h_code = conv_layer(sd, "final_conv", torch.cat([x, std], 1), padding=1)
    logit = equal_linear(sd, "final_linear.1", equal_linear(sd, "final_linear.0", h_code.view(b, -1), activate=True))
    joint = "COND_DNET.jointConv.0.module"
    weight = sd[f"{joint}.weight_bar"]
    matrix = weight.view(weight.shape[0], -1)
    if update:
        sd[f"{joint}.weight_v"] = unit(torch.mv(matrix.t(), sd[f"{joint}.weight_u"]))
        sd[f"{joint}.weight_u"] = unit(torch.mv(matrix, sd[f"{joint}.weight_v"]))
    sigma = sd[f"{joint}.weight_u"].dot(matrix.mv(sd[f"{joint}.weight_v"]))
    tiled = sentence.view(b, -1, 1, 1).repeat(1, 1, 4, 4)
    hc = F.leaky_relu(F.conv2d(torch.cat((h_code, tiled), 1), weight / sigma, sd[f"{joint}.bias"], padding=1), 0.2)
    pre = F.conv2d(hc, sd["COND_DNET.outlogits.0.weight"], sd["COND_DNET.outlogits.0.bias"], stride=4).view(-1)
    return logit, pre, torch.sigmoid(pre)


# ------------------------------------------------------------------------------------------------
# Exactness


def tiny_generator():
    return Generator(**{k: v for k, v in DIMS.items() if k != "sentence_dim"}).double().eval()


def tiny_discriminator(spectral_norm="torch"):
    return Discriminator(size=64, channel_max=32, sentence_dim=32, spectral_norm=spectral_norm).double()


def test_converted_generator_equals_the_reference_forward():
    sd = random_state(reference_g_shapes(**DIMS), seed=0)
    g = tiny_generator()
    counts = load_reference(g, sd, "g_ema")
    gen = torch.Generator().manual_seed(1)
    mask = torch.rand(2, 3, 64, 64, generator=gen, dtype=torch.float64) * 2 - 1
    words = torch.randn(2, 5, 32, generator=gen, dtype=torch.float64)
    z = torch.randn(2, 32, generator=gen, dtype=torch.float64)
    noise = [n.double() for n in g.make_noise(2, torch.Generator().manual_seed(2))]
    with torch.no_grad():
        image, extras = g(mask, words, [z], noise=noise, return_latents=True)
        reference = reference_generator(sd, mask, words.transpose(1, 2), z, noise, DIMS["n_mlp"])
        ours_literal = literal_reference_forward(g, mask, words, extras["latents"], noise)
    assert image.abs().max() > 1e-3                       # a real image, not a vanishing one
    assert (image - reference).abs().max() <= 1e-9
    assert (ours_literal - reference).abs().max() <= 1e-9   # tests/test_generator.py's transcription agrees
    dead = 2 + 2 + 6 * 2 + 1                              # fc1, stage-0 conv_merge, GCMF maps x2, upsample
    assert counts == {"param": len(sd) - dead - 4, "dead": dead, "constant": 4}


def test_generator_mapping_is_not_trivially_satisfied():
    """Swapping two same-shaped reference tensors (conv_low/conv_high of one fold step) changes the image."""
    sd = random_state(reference_g_shapes(**DIMS), seed=0)
    swapped = dict(sd)
    swapped["convs.2.conv.weight"] = sd["convs.4.conv.weight"]
    swapped["convs.4.conv.weight"] = sd["convs.2.conv.weight"]
    g = tiny_generator()
    load_reference(g, swapped)
    mask = torch.zeros(1, 3, 64, 64, dtype=torch.float64)
    words, z = torch.ones(1, 3, 32, dtype=torch.float64), torch.ones(1, 32, dtype=torch.float64)
    with torch.no_grad():
        image = g(mask, words, [z], noise_mode="none")
        noise = [torch.zeros(1, 1, r, r, dtype=torch.float64) for r in g.noise_resolutions]
        assert (image - reference_generator(sd, mask, words.transpose(1, 2), z, noise, 2)).abs().max() > 1e-3


def discriminator_inputs(b=4):
    gen = torch.Generator().manual_seed(3)
    image = torch.randn(b, 3, 64, 64, generator=gen, dtype=torch.float64)
    mask = torch.rand(b, 3, 64, 64, generator=gen, dtype=torch.float64) * 2 - 1
    return image, mask, torch.randn(b, 32, generator=gen, dtype=torch.float64)


def test_converted_discriminator_equals_the_reference_on_every_call():
    """With spectral_norm="reference", each call steps u and v exactly as spectral.py does: in training,
    in evaluation and without gradients alike."""
    sd = random_state(reference_d_shapes(**DIMS), seed=1)
    d = tiny_discriminator("reference")
    load_reference(d, sd, "d")
    image, mask, sentence = discriminator_inputs()
    ref = dict(sd)
    for mode in ("train", "eval", "no_grad"):
        d.train(mode == "train")
        with torch.set_grad_enabled(mode != "no_grad"):
            logit, cond = d(image, mask, sentence)
        ref_logit, ref_pre, ref_prob = reference_discriminator(ref, torch.cat([image, mask], 1), sentence)
        assert (logit - ref_logit).abs().max() <= 1e-9, mode
        assert (cond - ref_pre).abs().max() <= 1e-9, mode
        assert (torch.sigmoid(cond) - ref_prob).abs().max() <= 1e-9, mode
    buffers = dict(d.named_buffers())
    assert torch.equal(buffers["cond_head.joint_conv.parametrizations.weight.0._u"],
                       ref["COND_DNET.jointConv.0.module.weight_u"])


def test_reference_spectral_norm_trains_with_several_captions_per_forward():
    """One D forward scores two captions (two head calls, two in-place steps of u, v): backward still works."""
    d = tiny_discriminator("reference").train()
    image, mask, sentence = discriminator_inputs()
    logit, conds = d(image, mask, [sentence, sentence.roll(2, 0)])
    (logit.sum() + conds.sum()).backward()
    weight = d.cond_head.joint_conv.parametrizations.weight.original
    assert conds.shape == (2, 4) and weight.grad is not None and weight.grad.abs().sum() > 0


def test_default_spectral_norm_evaluates_with_the_stored_vectors():
    """The default (torch) spectral norm is the listed deviation: in evaluation it takes σ = uᵀWv from the
    stored vectors without a step, i.e. the σ of the reference's last training call before saving."""
    sd = random_state(reference_d_shapes(**DIMS), seed=1)
    d = tiny_discriminator().eval()
    load_reference(d, sd, "d")
    image, mask, sentence = discriminator_inputs()
    with torch.no_grad():
        _, cond = d(image, mask, sentence)
    _, stored, _ = reference_discriminator(dict(sd), torch.cat([image, mask], 1), sentence, update=False)
    _, stepped, _ = reference_discriminator(dict(sd), torch.cat([image, mask], 1), sentence)
    assert (cond - stored).abs().max() <= 1e-9
    assert (cond - stepped).abs().max() > 1e-6            # the reference would have stepped first


def test_spectral_norm_modes_share_one_state_dict_layout():
    torch_sd, ref_sd = tiny_discriminator().state_dict(), tiny_discriminator("reference").state_dict()
    assert {k: v.shape for k, v in torch_sd.items()} == {k: v.shape for k, v in ref_sd.items()}
    with pytest.raises(ValueError, match="spectral_norm"):
        tiny_discriminator("power")


def test_reference_configuration_counts():
    """The real layout: 22,491,870 G parameters (+ the 16-element dead buffer), D 33,601,538 with u and v."""
    torch.manual_seed(0)
    cfg = load_config(REPO_ROOT / "cfg" / "mmceleba.yml")
    g, d = Generator.from_config(cfg), Discriminator.from_config(cfg)
    size = lambda rules, kinds: sum(math.prod(r.shape) for r in rules.values() if r.kind in kinds)  # noqa: E731
    assert size(generator_rules(g), ("param", "dead")) == 22_491_870 + 16
    assert size(generator_rules(g), ("param",)) == sum(p.numel() for p in g.parameters()) == 21_735_902
    assert size(discriminator_rules(d), ("param",)) == 33_601_538
    shapes = lambda rules: {k: r.shape for k, r in rules.items()}  # noqa: E731
    assert shapes(generator_rules(g)) == reference_g_shapes(256, 512, 8, 512, 128, 512)
    assert shapes(discriminator_rules(d)) == reference_d_shapes(256, 512, 512)


# ------------------------------------------------------------------------------------------------
# Bad files


def tiny_cfg():
    return load_config(None, TINY_CFG)


def test_one_error_lists_missing_unknown_and_misshaped_keys():
    data = reference_file_dict()
    for key in ("convs.3.noise.weight", "style.1.bias", "linears.2.bias", "input.input", "fc1.bias"):
        del data["g_ema"][key]
    data["g"]["foo.weight"] = torch.zeros(1)
    data["d"]["final_conv.1.bias"] = torch.zeros(3)
    with pytest.raises(ConversionError) as e:
        convert(data, tiny_cfg(), source="ckpt_0150.pth")
    message = str(e.value)
    assert "\n" not in message and message.startswith("ckpt_0150.pth does not fit")
    assert "g: 1 unknown (foo.weight)" in message
    assert "d: 1 mis-shaped (final_conv.1.bias (3,) where (32,) was expected)" in message
    assert "g_ema: 5 missing (style.1.bias, linears.2.bias, fc1.bias and 2 more)" in message


def test_damaged_weights_are_refused_naming_the_tensor():
    """NaN or inf, or complex numbers, in the official file would convert, sample black images and train on: refused."""
    data = reference_file_dict()
    data["g_ema"]["style.1.weight"] = data["g_ema"]["style.1.weight"].clone()
    data["g_ema"]["style.1.weight"].view(-1)[3] = float("inf")
    with pytest.raises(ConversionError, match=r"^ckpt_0150.pth: g_ema: tensor style.1.weight holds 1 non-finite value"):
        convert(data, tiny_cfg(), source="ckpt_0150.pth")
    data = reference_file_dict()
    data["d"]["final_conv.1.bias"] = data["d"]["final_conv.1.bias"].to(torch.complex64)
    with pytest.raises(ConversionError, match="d: tensor final_conv.1.bias is complex64; expected real floating-point"):
        convert(data, tiny_cfg(), source="ckpt_0150.pth")


def test_altered_blur_kernel_is_refused():
    data = reference_file_dict()
    data["d"]["convs.1.conv2.0.kernel"] = torch.ones(4, 4) / 16
    with pytest.raises(ConversionError, match=r"d: 1 blur kernels unlike \[1,3,3,1\] \(convs.1.conv2.0.kernel\)"):
        convert(data, tiny_cfg())


def test_ddp_prefix_is_stripped_but_inner_module_names_kept():
    data = reference_file_dict()
    data["d"] = {f"module.{k}": v for k, v in data["d"].items()}
    ckpt, _ = convert(data, tiny_cfg())
    assert torch.equal(ckpt["D"]["cond_head.joint_conv.parametrizations.weight.original"],
                       data["d"]["module.COND_DNET.jointConv.0.module.weight_bar"])


def test_config_with_parameters_the_reference_lacks_is_refused():
    with pytest.raises(ConversionError, match="GCMF_GATE"):
        convert(reference_file_dict(), load_config(None, [*TINY_CFG, "MODEL.GCMF_GATE=true"]))


class Payload:
    """A pickle that runs code when loaded without weights_only."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def test_pickle_with_code_is_refused_and_not_run(tmp_path):
    path, marker = tmp_path / "ckpt_0001.pth", tmp_path / "ran"
    torch.save({"g": {"style.1.weight": Payload(marker)}, "d": {}, "g_ema": {}}, path)
    with pytest.raises(ConversionError, match=r"ckpt_0001.pth: refused"):
        read_reference(path)
    assert not marker.exists()


def test_cli_reports_one_error_line_and_writes_nothing(tmp_path, capsys):
    data = reference_file_dict()
    del data["g"]["mask_cov.weight"]
    src, out = tmp_path / "ckpt_0150.pth", tmp_path / "model.pt"
    torch.save(data, src)
    script = load_script("convert_reference")
    assert script.main(["--in", str(src), "--out", str(out), "--cfg", str(REPO_ROOT / "cfg" / "smoke.yml"),
                        *(a for o in TINY_CFG for a in ("--set", o))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(src) in err and "g: 1 missing (mask_cov.weight)" in err
    assert not out.exists()


# ------------------------------------------------------------------------------------------------
# Optimisers and the written checkpoint


def reference_adam(state, seed, vector_states=False):
    """The reference's Adam state dict: states indexed by position in parameters() (buffers excluded). The
    spectral-norm vectors get no state (no grad), unless `vector_states` (a file that has them anyway)."""
    names = [k for k in state if not k.endswith("kernel")]
    gen = torch.Generator().manual_seed(seed)
    moments = {i: {"step": 120, "exp_avg": torch.randn(state[n].shape, generator=gen),
                   "exp_avg_sq": torch.rand(state[n].shape, generator=gen)}
               for i, n in enumerate(names) if vector_states or not n.endswith(("weight_u", "weight_v"))}
    group = {"lr": 0.0016, "betas": (0.0, 0.992), "eps": 1e-8, "weight_decay": 0, "amsgrad": False,
             "params": list(range(len(names)))}
    return {"state": moments, "param_groups": [group]}, names


def test_adam_states_follow_their_parameters():
    data = reference_file_dict()
    data["g_optim"], g_names = reference_adam(data["g"], 5)
    data["d_optim"], d_names = reference_adam(data["d"], 6)
    ckpt, summary = convert(data, tiny_cfg())
    g = Generator.from_config(tiny_cfg())
    index = {n: i for i, (n, _) in enumerate(g.named_parameters())}
    ours = ckpt["opt_G"]["state"][index["stages.0.folds.1.conv_high.conv.weight"]]
    theirs = data["g_optim"]["state"][g_names.index("convs.3.conv.weight")]
    assert torch.equal(ours["exp_avg"], theirs["exp_avg"][0]) and float(ours["step"]) == 120
    assert len(ckpt["opt_G"]["state"]) == len(index)           # every live parameter; dead ones dropped
    d = Discriminator.from_config(tiny_cfg())
    opt = torch.optim.Adam(d.parameters())
    opt.load_state_dict(ckpt["opt_D"])                          # loads as the trainer's would
    assert summary.lines()[-2] == f"g_optim: {len(index)} Adam states converted"
    assert summary.lines()[-1].startswith("d_optim:")


def test_adam_states_of_the_spectral_norm_vectors_are_dropped():
    """The reference keeps D's spectral-norm vectors as parameters without gradients; a file holding Adam moments
    for them anyway converts (they are buffers here, updated by power iteration, not by Adam)."""
    data = reference_file_dict()
    data["d_optim"], names = reference_adam(data["d"], 6, vector_states=True)
    assert any(n.endswith("weight_u") for n in names)
    ckpt, summary = convert(data, tiny_cfg())
    d = Discriminator.from_config(tiny_cfg())
    assert len(ckpt["opt_D"]["state"]) == len(list(d.parameters()))
    assert summary.lines()[-1] == f"d_optim: {len(list(d.parameters()))} Adam states converted"


def test_mismatched_adam_state_starts_fresh_with_a_notice():
    data = reference_file_dict()
    data["g_optim"], _ = reference_adam(data["g"], 5)
    data["g_optim"]["param_groups"][0]["params"].pop()          # no d_optim at all
    ckpt, summary = convert(data, tiny_cfg())
    assert ckpt["opt_G"]["state"] == {} and ckpt["opt_D"]["state"] == {}
    assert any(line.startswith("g_optim: Adam starts fresh (it covers") for line in summary.lines())
    assert any(line == "d_optim: Adam starts fresh (absent from the file)" for line in summary.lines())


def test_converted_checkpoint_samples_and_edits_through_the_scripts(tmp_path, capsys):
    """Reference layout for cfg/smoke.yml's sizes -> convert_reference.py -> sample.py -> manipulate.py."""
    dims = dict(size=64, style_dim=32, n_mlp=2, text_dim=32, mask_dim=8, channel_max=16, sentence_dim=32)
    data = reference_file_dict(dims)
    src, out = tmp_path / "ckpt_0150.pth", tmp_path / "models" / "pixelface.pt"
    torch.save(data, src)
    smoke = str(REPO_ROOT / "cfg" / "smoke.yml")
    assert load_script("convert_reference").main(["--in", str(src), "--out", str(out), "--cfg", smoke]) == 0
    printed = capsys.readouterr().out
    assert "g_ema: " in printed and "dropped as dead" in printed and "parameters: G " in printed
    (tmp_path / "busy").mkdir()
    held = FolderLock(tmp_path / "busy", "busy").acquire()   # another writer holds the folder: refused, nothing written
    try:
        assert load_script("convert_reference").main(["--in", str(src), "--out", str(tmp_path / "busy" / "b.pt"),
                                                      "--cfg", smoke]) == 2
        assert "is being written by another process" in capsys.readouterr().err
    finally:
        held.release()
    assert list((tmp_path / "busy").iterdir()) == []

    ckpt = load_checkpoint(out)
    assert ckpt["converted_from"]["file"] == "ckpt_0150.pth"
    g, cfg = load_generator(out)
    assert torch.equal(g.stages[1].gcmf.to_keys.weight, data["g_ema"]["gcmf2.to_keys.weight"])

    _, _, labels, _ = make_face(0, 1, 64)
    Image.fromarray(label_to_color(labels)).save(tmp_path / "mask.png")
    args = ["--ckpt", out, "--mask", tmp_path / "mask.png", "--text", "she has blond hair", "--seeds", "0-1",
            "--out", tmp_path / "samples"]
    assert load_script("sample").main([str(a) for a in args]) == 0
    assert (tmp_path / "samples" / "000_seed1.png").is_file() and (tmp_path / "samples" / "grid.png").is_file()
    Image.open(tmp_path / "samples" / "000_seed0.png").save(tmp_path / "face.png")
    args = ["--ckpt", out, "--image", tmp_path / "face.png", "--mask", tmp_path / "mask.png", "--caption",
            "she has blond hair", "--edit-text", "she has black hair", "--steps", "3", "--out", tmp_path / "edits"]
    assert load_script("manipulate").main([str(a) for a in args]) == 0
    assert (tmp_path / "edits" / "edit_1.png").is_file() and (tmp_path / "edits" / "inversion.pt").is_file()


def test_training_resumes_from_a_converted_checkpoint(tmp_path):
    """convert -> code/main.py --resume FILE: a new run folder starts from the converted weights and trains on."""
    dims = dict(size=64, style_dim=32, n_mlp=2, text_dim=32, mask_dim=8, channel_max=16, sentence_dim=32)
    src, converted = tmp_path / "ckpt_0150.pth", tmp_path / "models" / "pixelface.pt"
    torch.save(reference_file_dict(dims), src)
    smoke = str(REPO_ROOT / "cfg" / "smoke.yml")
    assert load_script("convert_reference").main(["--in", str(src), "--out", str(converted), "--cfg", smoke]) == 0
    write_dataset(tmp_path / "data", 8, 64, 0, workers=1, force=True)
    cmd = [sys.executable, str(REPO_ROOT / "code" / "main.py"), "--cfg", smoke, "--out", str(tmp_path / "runs"),
           "--resume", str(converted), "--no-progress", "--set", f"DATA.ROOT={tmp_path / 'data'}",
           "--set", "DATA.SYNTHESIZE=false", "--set", "MODEL.D_SPECTRAL_NORM=reference", "--set", "TRAIN.TOTAL_KIMG=0.004"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed from {converted}" in done.stdout
    run = tmp_path / "runs" / "smoke-00000"
    trained = load_checkpoint(run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip())
    assert trained["progress"]["nimg"] == 4
    start = load_checkpoint(converted)
    assert not torch.equal(trained["G"]["style.1.weight"], start["G"]["style.1.weight"])   # it trained
    assert not (tmp_path / "config.yaml").exists()   # nothing written beside the converted file's folder
