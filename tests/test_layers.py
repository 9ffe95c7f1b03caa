"""StyleGAN2 building blocks against their textbook definitions (PixelFace+/code/pixel_models/blocks.py)."""
import contextlib
import math

import pytest
import torch
import torch.nn.functional as F

from pixelface.networks import layers
from pixelface.networks.generator import PointwiseMix
from pixelface.networks.layers import (ConvLayer, EqualLinear, ModulatedConv2d, StyledConv, ToRGB, blur, blur_kernel,
                                       fold, fold_channels_last, fused_leaky_relu, row_product, row_products_sum,
                                       unfold, upsample2x)

torch.set_num_threads(1)


def naive_fold(x):
    """Fold (PixelFace+/code/pixel_models/blocks.py:18-35) literally: output channel (ph·2+pw)·C + c
    holds x[c, 2i+ph, 2j+pw]."""
    b, c, h, w = x.shape
    out = torch.empty(b, 4 * c, h // 2, w // 2, dtype=x.dtype)
    for ph in range(2):
        for pw in range(2):
            k = ph * 2 + pw
            out[:, k * c:(k + 1) * c] = x[:, :, ph::2, pw::2]
    return out


def regrouped_pixel_unshuffle(x):
    """pixel_unshuffle(2) (channel c·4 + sub) regrouped to sub-pixel-major (sub·C + c)."""
    b, c, h, w = x.shape
    y = F.pixel_unshuffle(x, 2).view(b, c, 4, h // 2, w // 2)
    return y.transpose(1, 2).reshape(b, 4 * c, h // 2, w // 2)


def regrouped_pixel_shuffle(x):
    b, c4, h, w = x.shape
    return F.pixel_shuffle(x.view(b, 4, c4 // 4, h, w).transpose(1, 2).reshape(b, c4, h, w), 2)


def naive_upfirdn(x, up, pad, kernel):
    """Zero-insertion upsampling, zero padding (pad0, pad1), true convolution with `kernel`."""
    b, c, h, w = x.shape
    u = torch.zeros(b, c, h * up, w * up, dtype=x.dtype)
    u[:, :, ::up, ::up] = x
    u = F.pad(u, (pad[0], pad[1], pad[0], pad[1]))
    k = kernel.flip(0, 1).to(x.dtype).expand(c, 1, *kernel.shape)
    return F.conv2d(u, k, groups=c)


def test_fold_matches_reference_definition_and_pixel_unshuffle_regroup():
    x = torch.randn(2, 5, 16, 16)
    assert torch.equal(fold(x), naive_fold(x))
    assert torch.equal(fold(x), regrouped_pixel_unshuffle(x))
    assert torch.equal(fold(x, times=2), naive_fold(naive_fold(x)))
    assert torch.equal(fold_channels_last(x.permute(0, 2, 3, 1).contiguous(), times=2), fold(x, 2))


def test_unfold_inverts_fold_and_matches_pixel_shuffle_regroup():
    x = torch.randn(2, 8, 6, 6)
    assert torch.equal(unfold(fold(x)), x)
    assert torch.equal(fold(unfold(x)), x)
    assert torch.equal(unfold(x), regrouped_pixel_shuffle(x))


def test_upsample_is_upfirdn_up2_pad_2_1():
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    ref = naive_upfirdn(x, 2, (2, 1), blur_kernel(dtype=torch.float64) * 4)
    torch.testing.assert_close(upsample2x(x), ref)


def test_replicate_border_upsample_keeps_a_flat_input_flat_and_the_interior_unchanged():
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    ref = naive_upfirdn(padded, 2, (2, 1), blur_kernel(dtype=torch.float64) * 4)[..., 2:-2, 2:-2]
    torch.testing.assert_close(upsample2x(x, "replicate"), ref)
    torch.testing.assert_close(upsample2x(x, "replicate")[..., 2:-2, 2:-2], upsample2x(x)[..., 2:-2, 2:-2])
    flat = torch.ones(1, 1, 4, 4)
    assert torch.equal(upsample2x(flat, "replicate"), torch.ones(1, 1, 8, 8))
    assert upsample2x(flat)[0, 0, 0, 3] == 0.75 and upsample2x(flat)[0, 0, 0, 0] == 0.5625   # zeros: a fading rim


def test_blur_and_strided_blur_match_upfirdn():
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    k = blur_kernel(dtype=torch.float64)
    torch.testing.assert_close(blur(x, 2), naive_upfirdn(x, 1, (2, 2), k))
    torch.testing.assert_close(blur(x, 1, stride=2), naive_upfirdn(x, 1, (1, 1), k)[:, :, ::2, ::2])


def test_cached_blur_kernel_built_in_inference_mode_still_trains():
    blur_kernel.cache_clear()
    with torch.inference_mode():
        upsample2x(torch.randn(1, 3, 4, 4))
    x = torch.randn(1, 3, 4, 4, requires_grad=True)
    upsample2x(x).sum().backward()
    assert x.grad is not None


def test_fused_leaky_relu_value_and_double_backward():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    ref = F.leaky_relu(x + b.view(1, -1, 1, 1), 0.2) * math.sqrt(2)
    torch.testing.assert_close(fused_leaky_relu(x, b), ref)
    assert torch.autograd.gradcheck(fused_leaky_relu, (x, b))
    assert torch.autograd.gradgradcheck(fused_leaky_relu, (x, b))


def test_equal_linear_matches_formula_and_double_backward():
    torch.manual_seed(0)
    layer = EqualLinear(6, 5, bias_init=0.3, lr_mul=0.01, activation=True).double()
    x = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    pre = x @ (layer.weight * 0.01 / math.sqrt(6)).t() + layer.bias * 0.01
    torch.testing.assert_close(layer(x), F.leaky_relu(pre, 0.2) * math.sqrt(2))
    assert torch.autograd.gradgradcheck(layer, (x,))


def naive_modconv(x, style, conv, demodulate):
    """Per-sample loop, rosinality formula."""
    outs = []
    s = conv.modulation(style)
    for i in range(x.shape[0]):
        w = conv.weight * conv.scale * s[i].view(1, -1, 1, 1)
        if demodulate:
            w = w / torch.sqrt(w.square().sum((1, 2, 3), keepdim=True) + 1e-8)
        outs.append(F.conv2d(x[i:i + 1], w, padding=conv.padding))
    return torch.cat(outs)


@pytest.mark.parametrize("form", [contextlib.nullcontext, layers.modulated_activations], ids=["grouped", "activations"])
def test_modulated_conv_both_forms_equal_per_sample_loop(form):
    torch.manual_seed(0)
    conv = ModulatedConv2d(4, 6, 3, style_dim=8).double()
    x, style = torch.randn(3, 4, 7, 7, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
    with form():
        torch.testing.assert_close(conv(x, style, gain=1.5), naive_modconv(x, style, conv, True) * 1.5)
        conv.demodulate = False
        torch.testing.assert_close(conv(x, style, gain=1.5), naive_modconv(x, style, conv, False) * 1.5)


@pytest.mark.parametrize("form", [contextlib.nullcontext, layers.modulated_activations], ids=["grouped", "activations"])
def test_replicate_border_modulated_conv_is_the_zero_padded_conv_of_the_edge_repeated_input(form):
    torch.manual_seed(0)
    conv = ModulatedConv2d(4, 6, 3, style_dim=8, border="replicate").double()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    style = torch.randn(2, 8, dtype=torch.float64, requires_grad=True)
    with form():
        ours = conv(x, style)
        ref = naive_modconv(F.pad(x, (1, 1, 1, 1), mode="replicate"), style, conv, True)[..., 1:-1, 1:-1]
        torch.testing.assert_close(ours, ref)
        assert torch.autograd.gradgradcheck(lambda x, style: conv(x, style), (x, style))   # path length
    with pytest.raises(ValueError, match="border must be one of"):
        ModulatedConv2d(4, 6, 3, style_dim=8, border="reflect")


def test_modulated_activations_give_path_length_gradients_of_the_per_sample_weights_form():
    """The path-length phase's form (input scaled by the style, shared weight, output demodulated) gives the
    penalty's parameter gradients of the reference's per-sample-weights form, in float64."""
    torch.manual_seed(0)
    conv = ModulatedConv2d(4, 6, 3, style_dim=8).double()
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64, requires_grad=True)
    noise = torch.randn(2, 6, 7, 7, dtype=torch.float64)

    def penalty_grads(forward):
        style = torch.randn(2, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
        (g,) = torch.autograd.grad((forward(style) * noise).sum(), style, create_graph=True)
        return torch.autograd.grad(g.square().sum(), [x, *conv.parameters()])

    def per_sample_weights(style):
        return naive_modconv(x, style, conv, True)
    with layers.modulated_activations():
        ours = penalty_grads(lambda style: conv(x, style))
    assert not layers._modulating_activations
    for ours, reference in zip(ours, penalty_grads(per_sample_weights)):
        torch.testing.assert_close(ours, reference)


def test_styled_conv_adds_weighted_noise_then_bias_and_activation():
    torch.manual_seed(0)
    layer = StyledConv(4, 6, style_dim=8).double()
    with torch.no_grad():
        layer.noise_weight.fill_(0.7)
        layer.bias.normal_()
    x, style = torch.randn(2, 4, 5, 5, dtype=torch.float64), torch.randn(2, 8, dtype=torch.float64)
    noise = torch.randn(2, 1, 5, 5, dtype=torch.float64)
    pre = naive_modconv(x, style, layer.conv, True) + 0.7 * noise + layer.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x, style, noise), F.leaky_relu(pre, 0.2) * math.sqrt(2))


def test_to_rgb_is_unnormalised_1x1_modconv_plus_bias_plus_upsampled_skip():
    torch.manual_seed(0)
    layer = ToRGB(4, style_dim=8).double()
    with torch.no_grad():
        layer.bias.normal_()
    x, style = torch.randn(2, 4, 6, 6, dtype=torch.float64), torch.randn(2, 8, dtype=torch.float64)
    skip = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    ref = naive_modconv(x, style, layer.conv, False) + layer.bias + upsample2x(skip)
    torch.testing.assert_close(layer(x, style, skip), ref)


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_downsampling_conv_layer_is_blur_then_strided_conv(kernel_size):
    torch.manual_seed(0)
    activate = kernel_size == 3
    layer = ConvLayer(3, 5, kernel_size, downsample=True, activate=activate, bias=activate).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    p = 2 + kernel_size - 1
    blurred = naive_upfirdn(x, 1, ((p + 1) // 2, p // 2), blur_kernel(dtype=torch.float64))
    y = F.conv2d(blurred, layer.weight * layer.scale, stride=2)
    if activate:
        y = F.leaky_relu(y + layer.bias.view(1, -1, 1, 1), 0.2) * math.sqrt(2)
    torch.testing.assert_close(layer(x), y)
    assert layer(x).shape == (2, 5, 4, 4)


def _graph_node_names(tensor):
    seen, stack, names = set(), [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(n for n, _ in node.next_functions)
    return names


def test_autocast_keeps_activations_low_precision_and_the_image_path_float32():
    """Under bf16 autocast a float32 parameter added to an activation must not promote it (that costs a
    full-size conversion copy per layer); ToRGB's 3-channel image path stays float32."""
    torch.manual_seed(0)
    conv, to_rgb = StyledConv(8, 8, 16), ToRGB(8, 16)
    mix = PointwiseMix((8, 4), 8)
    x, style = torch.randn(2, 8, 8, 8), torch.randn(2, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x, style, noise=torch.randn(2, 1, 8, 8))
        rgb = to_rgb(y, style, skip=torch.randn(2, 3, 4, 4))
        rows = mix(torch.randn(2, 16, 8), torch.randn(1, 16, 4))
    assert y.dtype == torch.bfloat16 and rows.dtype == torch.bfloat16
    assert rgb.dtype == torch.float32


def test_activated_layers_do_not_record_copy_slices():
    """In-place activations on views cost full-size copies in backward; none may sneak in."""
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    style = torch.randn(2, 8)
    out = StyledConv(4, 4, 8)(x, style, torch.randn(2, 1, 6, 6))
    out = EqualLinear(4, 4, activation=True)(out.permute(0, 2, 3, 1))
    assert "CopySlices" not in _graph_node_names(out)


@pytest.mark.parametrize("leaky", [False, True])
def test_row_product_as_1x1_conv_equals_linear_with_gradients(leaky):
    """Many float32 rows on CPU take the 1×1-convolution path: same values and gradients as F.linear
    (up to float32 summation order), a fresh contiguous (N, out) tensor, no CopySlices, and a
    double backward (path length differentiates through it twice)."""
    torch.manual_seed(0)
    x = torch.randn(layers.CONV_ROWS_MIN + 3, 12, requires_grad=True)
    w = torch.randn(7, 12, requires_grad=True)
    b = torch.randn(7, requires_grad=True)
    out = row_product(x, w, b, leaky=leaky)
    assert out.shape == (x.shape[0], 7) and out.is_contiguous()
    assert "_Conv2dBackward" in _graph_node_names(out) and "CopySlices" not in _graph_node_names(out)
    ref = F.linear(x, w, b)
    ref = F.leaky_relu(ref, 0.2) if leaky else ref
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(ref)
    grads = torch.autograd.grad((out * weights).sum(), (x, w, b), create_graph=True)
    ref_grads = torch.autograd.grad((ref * weights).sum(), (x, w, b), create_graph=True)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    second = torch.autograd.grad(grads[0].square().sum(), w)[0]
    ref_second = torch.autograd.grad(ref_grads[0].square().sum(), w)[0]
    torch.testing.assert_close(second, ref_second, rtol=1e-4, atol=1e-3)


def test_row_products_sum_equals_product_of_concatenation_on_both_paths():
    torch.manual_seed(0)
    for rows in (5, layers.CONV_ROWS_MIN):                   # F.linear path, 1×1-conv path
        parts = [torch.randn(rows, c, requires_grad=True) for c in (3, 5)]
        weights = [torch.randn(4, c, requires_grad=True) for c in (3, 5)]
        out = row_products_sum(parts, weights)
        ref = torch.cat(parts, 1) @ torch.cat(weights, 1).t()
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        grads = torch.autograd.grad(out.sum(), parts + weights)
        ref_grads = torch.autograd.grad(ref.sum(), parts + weights)
        for got, want in zip(grads, ref_grads):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("stride,padding,groups,kernel", [(1, 1, 1, 3), (2, 0, 1, 3), (2, 1, 2, 4), (1, 0, 3, 1),
                                                          (2, 1, 6, 4)])
def test_conv2d_first_and_second_order_gradients_equal_torch(stride, padding, groups, kernel):
    """layers.conv2d computes F.conv2d and its first- and second-order gradients (float64 checks, odd sizes
    whose strided output drops a row), with the bias; groups 6 is depthwise."""
    torch.manual_seed(0)
    x = torch.randn(2, 6, 9, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 6 // groups, kernel, kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)

    def ours(x, w, b):
        return layers.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)

    def torchs(x, w, b):
        return F.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)

    torch.testing.assert_close(ours(x, w, b), torchs(x, w, b))
    assert torch.autograd.gradcheck(ours, (x, w, b))
    assert torch.autograd.gradgradcheck(ours, (x, w, b))


def test_r1_style_double_backward_uses_no_convolution_double_backward():
    """The second-order pass runs plain convolutions: PyTorch's ConvolutionBackwardBackward (whose
    weight term convolves with a whole-feature-map kernel) never appears, and the result equals torch's."""
    torch.manual_seed(0)
    layer = ConvLayer(3, 4, 3, downsample=True)
    images = torch.randn(2, 3, 16, 16, requires_grad=True)
    (grad,) = torch.autograd.grad(layer(images).sum(), images, create_graph=True)
    assert "ConvolutionBackwardBackward0" not in _graph_node_names(grad)
    penalty_grads = torch.autograd.grad(grad.square().sum(), layer.weight)
    weight = layer.weight * (layer.scale * math.sqrt(2))
    ref_out = F.leaky_relu(F.conv2d(blur(images, layer.blur_pad), weight, layer.bias * math.sqrt(2), stride=2), 0.2)
    (ref_grad,) = torch.autograd.grad(ref_out.sum(), images, create_graph=True)
    torch.testing.assert_close(grad, ref_grad)
    torch.testing.assert_close(penalty_grads[0], torch.autograd.grad(ref_grad.square().sum(), layer.weight)[0])
