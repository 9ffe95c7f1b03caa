"""Generator: shapes and parameter counts of the reference PixelFacePlus (PixelFace+/code/model.py:340-616),
determinism, latents, noise."""
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO_ROOT
from pixelface.core.config import load_config
from pixelface.networks.discriminator import Discriminator
from pixelface.networks.generator import FoldStep, Generator, PointwiseMix, blur_121
from pixelface.networks.layers import StyledConv, ToRGB, channel_table, distinct_rows, unfold
from pixelface.networks.reference_ops import literal_reference_forward, reference_latents

torch.set_num_threads(1)

TINY = dict(size=64, style_dim=32, n_mlp=2, text_dim=24, channel_max=32, mask_dim=16)


def tiny(**kw):
    torch.manual_seed(0)
    return Generator(**{**TINY, **kw})


def tiny_inputs(g, b=2, t=5, seed=1):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, g.mask_channels, g.size, g.size, generator=gen) * 2 - 1
    words = torch.randn(b, t, g.text_dim, generator=gen)
    z = torch.randn(b, g.style_dim, generator=gen)
    return mask, words, z


# ------------------------------------------------------------------------------------------------
# Reference configuration


def test_reference_parameter_count_without_dead_parameters():
    g = Generator.from_config(load_config(None, []))
    assert sum(p.numel() for p in g.parameters()) == 22_491_870 - 755_968 == 21_735_902
    assert g.n_latent == 13 and g.num_layers == 12


def test_reference_shapes_at_256():
    """One B=1 forward at the reference configuration; every layer's shape as in the reference forward pass
    (PixelFace+/code/model.py:476-616, PixelFacePlus.forward)."""
    torch.manual_seed(0)
    g = Generator().eval()
    seen = []
    for module in g.modules():
        if isinstance(module, (StyledConv, ToRGB)):
            module.register_forward_hook(lambda m, i, o: seen.append((type(m).__name__, tuple(o.shape[1:]))))
    with torch.no_grad():
        image, extras = g(torch.rand(1, 3, 256, 256) * 2 - 1, torch.randn(1, 7, 512), [torch.randn(1, 512)],
                          return_latents=True, return_attention=True)
    assert image.shape == (1, 3, 256, 256)
    sc = [s for n, s in seen if n == "StyledConv"]
    assert sc == [(512, 4, 4), (512, 8, 8), (512, 8, 8), (512, 16, 16), (512, 16, 16), (512, 32, 32),
                  (512, 32, 32), (512, 64, 64), (256, 64, 64), (256, 128, 128), (128, 128, 128),
                  (128, 256, 256)]
    rgb = [s for n, s in seen if n == "ToRGB"]
    assert rgb == [(3, r, r) for r in (8, 16, 32, 64, 128, 256)]
    assert extras["latents"].shape == (1, 13, 512)
    assert [a.shape for a in extras["attention"]] == [(1, 256, 7), (1, 4096, 7), (1, 65536, 7)]


def test_resolution_generic_layouts():
    assert channel_table(1024) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128,
                                   512: 64, 1024: 32}
    g = Generator(size=1024, channel_max=64, style_dim=16, text_dim=16, mask_dim=16, n_mlp=1)
    assert g.n_latent == 17 and [s.res for s in g.stages] == [16, 64, 256, 1024]
    assert Generator(size=64, **{k: v for k, v in TINY.items() if k != "size"}).n_latent == 9
    with pytest.raises(ValueError, match="64, 256 or 1024"):
        Generator(size=128)


def test_tiny_forward_shapes_at_64():
    g = tiny()
    mask, words, z = tiny_inputs(g, b=3)
    image, extras = g(mask, words, [z], return_latents=True, return_attention=True)
    assert image.shape == (3, 3, 64, 64)
    assert extras["latents"].shape == (3, 9, 32)
    assert [a.shape for a in extras["attention"]] == [(3, 256, 5), (3, 4096, 5)]


# ------------------------------------------------------------------------------------------------
# Re-associations equal the literal reference computations


def test_pointwise_mix_equals_conv_on_the_concatenation():
    torch.manual_seed(0)
    mix = PointwiseMix((3, 4, 5), 6).double()
    with torch.no_grad():
        mix.bias.normal_()
    a, b, c = (torch.randn(2, 3, 5, 5), torch.randn(1, 4, 5, 5), torch.randn(2, 5, 5, 5))
    a, b, c = a.double(), b.double(), c.double()
    concat = torch.cat([a, b.expand(2, -1, -1, -1), c], 1)
    ref = F.leaky_relu(F.conv2d(concat, mix.weight[:, :, None, None] * mix.scale)
                       + mix.bias.view(1, -1, 1, 1), 0.2) * math.sqrt(2)
    torch.testing.assert_close(mix(a, b, c), ref)
    rows = [t.flatten(2).transpose(1, 2) for t in (a, b, c)]
    torch.testing.assert_close(mix(*rows), ref.flatten(2).transpose(1, 2))


# colour masks (im2col rows), one-hot masks (a conv), one-hot under MODEL.MASK_KERNEL 1 (1x1 rows)
@pytest.mark.parametrize("channels, kernel", [(3, 3), (19, 3), (19, 1)])
def test_mask_features_equal_mask_conv_and_nearest_resize(channels, kernel):
    g = tiny(mask_channels=channels, mask_kernel=kernel)
    mask = torch.randn(2, channels, 64, 64)
    conv = F.conv2d(mask, g.mask_encoder.weight, g.mask_encoder.bias, padding=kernel // 2)
    for res in (64, 16):
        nearest = F.interpolate(conv, size=(res, res), mode="nearest")
        torch.testing.assert_close(g.mask_features(mask, res), nearest.flatten(2).transpose(1, 2),
                                   rtol=1e-5, atol=1e-5)


def test_a_1x1_mask_kernel_gives_every_pixel_of_a_class_the_same_feature():
    """MODEL.MASK_KERNEL 1: beside an edge a pixel's mask feature is its own class's (a 3x3 one blends both sides)."""
    labels = torch.zeros(1, 64, 64, dtype=torch.long)
    labels[:, :, 32:] = 13                                              # hair right of column 32
    mask = F.one_hot(labels, 19).permute(0, 3, 1, 2).float()
    for kernel, distinct in ((1, 2), (3, 4)):          # 3x3: two blended columns beside the edge as well
        rows = tiny(mask_channels=19, mask_kernel=kernel).mask_features(mask, 64).detach()[0]
        assert len(torch.unique(rows[8 * 64 + 1: 8 * 64 + 63], dim=0)) == distinct


def test_mask_point_channels_see_their_own_pixel_and_stay_so_through_training():
    """MODEL.MASK_POINT_CHANNELS: beside an edge those features are the pixel's own class's, the others blend both
    sides; Adam (beta1 = 0, as the trainer's) never gives their off-centre taps a value."""
    labels = torch.zeros(1, 64, 64, dtype=torch.long)
    labels[:, :, 32:] = 13
    mask = F.one_hot(labels, 19).permute(0, 3, 1, 2).float()
    g = tiny(mask_channels=19, mask_point_channels=4)
    optimizer = torch.optim.Adam(g.parameters(), lr=0.01, betas=(0.0, 0.99))
    for _ in range(2):
        optimizer.zero_grad()
        g.mask_features(mask, 16).square().sum().backward()
        optimizer.step()
    off_centre = g.mask_encoder.weight[:4].clone()
    off_centre[:, :, 1, 1] = 0
    assert off_centre.abs().max() == 0 and g.mask_encoder.weight[4:].abs().min() > 0
    rows = g.mask_features(mask, 64).detach()[0, 8 * 64 + 1: 8 * 64 + 63]
    assert len(torch.unique(rows[:, :4], dim=0)) == 2 and len(torch.unique(rows[:, 4:], dim=0)) == 4
    torch.testing.assert_close(g.mask_features(mask, 64), F.conv2d(
        mask, g.mask_encoder_weight(), g.mask_encoder.bias, padding=1).flatten(2).transpose(1, 2))


@pytest.mark.parametrize("kernel, channels", [(1, 2), (3, 16), (3, 17)])
def test_mask_point_channels_refuse_what_they_cannot_mean(kernel, channels):
    with pytest.raises(ValueError, match="mask point channels must lie in"):
        tiny(mask_channels=19, mask_kernel=kernel, mask_point_channels=channels)


def test_pixel_stripes_start_at_zero_and_paint_2_pixel_stripes_where_their_heads_say():
    """MODEL.PIXEL_STRIPES: a zero-initialised head leaves the image as without it; its column head's output is
    multiplied by (-1)^column, its row head's by (-1)^row, and the loss reaches both heads."""
    plain, striped = tiny().eval(), tiny(pixel_stripes=True).eval()
    mask, words, z = tiny_inputs(plain)
    torch.testing.assert_close(striped(mask, words, [z], noise_mode="const"),
                               plain(mask, words, [z], noise_mode="const"))
    heads = striped.stages[-1].folds[-1].stripes
    with torch.no_grad():
        heads.bias.copy_(torch.tensor([0.5, 0.0, 0.0, 0.0, 0.0, -0.25]))
    diff = striped(mask, words, [z], noise_mode="const") - plain(mask, words, [z], noise_mode="const")
    sign = 1 - 2 * (torch.arange(64) % 2).float()
    torch.testing.assert_close(diff[:, 0], 0.5 * sign.expand(2, 64, 64), atol=1e-5, rtol=0)
    torch.testing.assert_close(diff[:, 2], -0.25 * sign[:, None].expand(2, 64, 64), atol=1e-5, rtol=0)
    assert diff[:, 1].abs().max() < 1e-5
    striped(mask, words, [z]).square().mean().backward()
    assert heads.weight.grad.abs().sum() > 0 and heads.bias.grad.abs().sum() > 0


def test_pixel_stripes_classes_confine_the_stripes_to_the_named_classes_pixels():
    """MODEL.PIXEL_STRIPES_CLASSES: the stripes' amplitudes are multiplied by the one-hot mask's share of the named
    classes, so a pixel of another class gets none, whatever the heads say."""
    plain = tiny(mask_channels=19).eval()
    gated = tiny(mask_channels=19, pixel_stripes=True, pixel_stripes_classes=[13]).eval()
    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    labels[:, :20] = 13                                               # hair on the top 20 rows
    mask = F.one_hot(labels, 19).permute(0, 3, 1, 2).float()
    _, words, z = tiny_inputs(plain)
    with torch.no_grad():
        gated.stages[-1].folds[-1].stripes.bias.copy_(torch.tensor([0.5, 0.0, 0.0, 0.0, 0.0, 0.0]))
    diff = gated(mask, words, [z], noise_mode="const") - plain(mask, words, [z], noise_mode="const")
    sign = 1 - 2 * (torch.arange(64) % 2).float()
    torch.testing.assert_close(diff[:, 0, :20], 0.5 * sign.expand(2, 20, 64), atol=1e-5, rtol=0)
    assert diff[:, :, 20:].abs().max() < 1e-5


@pytest.mark.parametrize("kw, message", [({"pixel_stripes_classes": [13]}, "needs MODEL.PIXEL_STRIPES on"),
                                         ({"pixel_stripes": True, "pixel_stripes_classes": [13]}, "needs one-hot")])
def test_pixel_stripes_classes_refuse_what_they_cannot_mean(kw, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kw)          # the tiny generator reads colour masks: no class channels to gate by


def test_pixel_stripes_classes_name_an_unknown_class_in_the_error():
    cfg = load_config(REPO_ROOT / "cfg" / "synthface.yml", ["MODEL.PIXEL_STRIPES_CLASSES=[hair, hiar]"])
    with pytest.raises(ValueError, match="MODEL.PIXEL_STRIPES_CLASSES: unknown mask class 'hiar'"):
        Generator.from_config(cfg)
    assert Generator.from_config(load_config(REPO_ROOT / "cfg" / "synthface.yml")).stripe_classes == [13]


def test_mask_context_starts_as_the_reference_and_widens_what_a_pixel_sees():
    """MODEL.MASK_CONTEXT: zero-initialised, so the first step's image is the reference's; once its convs have
    weights, a mask change 6 pixels away reaches a pixel's feature, which the 3x3 conv alone never lets it."""
    plain, context = tiny().eval(), tiny(mask_context=3).eval()      # eval: no GCMF dropout
    assert [c.dilation for c in context.mask_context.convs] == [(1, 1), (2, 2), (4, 4)]
    context.load_state_dict(plain.state_dict(), strict=False)
    mask, words, z = tiny_inputs(plain)
    torch.testing.assert_close(context(mask, words, [z], noise_mode="const"),
                               plain(mask, words, [z], noise_mode="const"))
    for conv in context.mask_context.convs:
        torch.nn.init.normal_(conv.weight, std=0.1)
    far = mask.clone()
    far[:, :, 30, 36] += 1.0                                   # 6 pixels right of pixel (30, 30)
    for g, reaches in ((plain, False), (context, True)):
        before, after = (g.mask_features(m, 64).view(2, 64, 64, -1)[:, 30, 30] for m in (mask, far))
        assert bool((before != after).any()) == reaches
    full = context.mask_context(context.mask_encoder(mask))
    torch.testing.assert_close(context.mask_features(mask, 16), full[:, :, ::4, ::4].flatten(2).transpose(1, 2))
    context.train()(mask, words, [z]).square().mean().backward()
    assert all(c.weight.grad.abs().sum() > 0 for c in context.mask_context.convs)


def test_generator_equals_literal_transcription_of_the_reference():
    """Every re-association (split 1×1 convs, rows layout, folded projections, strided mask
    features, grouped convs, chunking) computes the reference function."""
    g = tiny(gcmf_chunk=50).double().eval()
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("bias") or name.endswith("noise_weight"):
                p.normal_(0, 0.5)
    mask, words, z = (t.double() for t in tiny_inputs(g, b=2, t=6))
    padding = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    noise = [n.double() for n in g.make_noise(2, torch.Generator().manual_seed(0))]
    with torch.no_grad():
        image, extras = g(mask, words, [z], word_padding=padding, noise=noise, return_latents=True)
        ref = literal_reference_forward(g, mask, words, extras["latents"], noise, padding)
        torch.testing.assert_close(reference_latents(g, z), extras["latents"])
    torch.testing.assert_close(image, ref)


def test_sampling_a_mask_of_regions_equals_the_reference_transcription():
    """A mask of regions repeats its features over each region's interior; sampling attends once per distinct
    feature row (GCMF) and still computes the reference function."""
    g = tiny().double().eval()
    gen = torch.Generator().manual_seed(3)
    colours = torch.rand(2, g.mask_channels, 4, 4, generator=gen, dtype=torch.float64) * 2 - 1
    mask = F.interpolate(colours, size=g.size, mode="nearest")              # 16 square regions
    _, words, z = tiny_inputs(g, b=2, t=6)
    words, z = words.double(), z.double()
    assert distinct_rows(g.mask_features(mask, g.size).detach()) is not None
    noise = [n.double() for n in g.make_noise(2, torch.Generator().manual_seed(0))]
    with torch.no_grad():
        image, extras = g(mask, words, [z], noise=noise, return_latents=True)
        ref = literal_reference_forward(g, mask, words, extras["latents"], noise, None)
    torch.testing.assert_close(image, ref)


def test_generator_gradients_equal_the_reference_transcription():
    """The backward the benchmark times computes the same gradients on both sides (train mode, no dropout)."""
    g = tiny(gcmf_dropout=0.0).double().train()
    mask, words, z = (t.double() for t in tiny_inputs(g, b=2, t=6))
    noise = [n.double() for n in g.make_noise(2, torch.Generator().manual_seed(0))]
    weight = torch.randn(2, 3, 64, 64, dtype=torch.float64)

    def grads(forward):
        g.zero_grad()
        (forward() * weight).sum().backward()
        return {n: p.grad.clone() for n, p in g.named_parameters() if p.grad is not None}

    ours = grads(lambda: g(mask, words, [z], noise=noise))
    ref = grads(lambda: literal_reference_forward(g, mask, words, reference_latents(g, z), noise))
    assert ours.keys() == ref.keys() and len(ours) == len(list(g.parameters()))
    for name in ours:
        torch.testing.assert_close(ours[name], ref[name], msg=name)


# ------------------------------------------------------------------------------------------------
# Determinism, batch independence, latents


def test_eval_generation_is_repeatable_and_independent_of_batch_companions():
    g = tiny().eval()
    gen = torch.Generator().manual_seed(3)
    mask = torch.rand(3, 3, 64, 64, generator=gen) * 2 - 1
    words = torch.randn(3, 8, 24, generator=gen)
    z = torch.randn(3, 32, generator=gen)
    lengths = torch.tensor([5, 8, 3])
    padding = torch.arange(8)[None] >= lengths[:, None]
    noise = g.make_noise(1, torch.Generator().manual_seed(7))
    with torch.no_grad():
        batch = g(mask, words, [z], word_padding=padding, noise=noise)
        again = g(mask, words, [z], word_padding=padding, noise=noise)
        alone = g(mask[:1], words[:1, :5], [z[:1]], noise=noise)
    assert torch.equal(batch, again)
    torch.testing.assert_close(alone[0], batch[0], rtol=0, atol=1e-4)  # BLAS blocking differs by batch
    assert not torch.allclose(batch[0], batch[2])


def test_noise_modes():
    g = tiny().eval()
    with torch.no_grad():
        for layer in g.modules():
            if isinstance(layer, StyledConv):
                layer.noise_weight.fill_(0.5)
    mask, words, z = tiny_inputs(g)
    with torch.no_grad():
        const = g(mask, words, [z], noise_mode="const")
        assert torch.equal(const, g(mask, words, [z], noise_mode="const"))
        buffers = [getattr(g, f"noise_const_{i}") for i in range(g.num_layers)]
        assert torch.equal(const, g(mask, words, [z], noise=buffers))
        zeros = [torch.zeros_like(n) for n in buffers]
        assert torch.equal(g(mask, words, [z], noise_mode="none"), g(mask, words, [z], noise=zeros))
        assert not torch.equal(g(mask, words, [z]), g(mask, words, [z]))        # random, reference
    a = g.make_noise(2, torch.Generator().manual_seed(1))
    b = g.make_noise(2, torch.Generator().manual_seed(1))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert [n.shape[-1] for n in a] == g.noise_resolutions == [4, 8, 8, 16, 16, 32, 32, 64]
    with pytest.raises(ValueError, match="noise_mode"):
        g(mask, words, [z], noise_mode="fixed")
    with pytest.raises(ValueError, match="one per StyledConv"):
        g(mask, words, [z], noise=a[:-1])


def test_truncation_zero_gives_the_same_image_for_any_z():
    g = tiny().eval()
    mask, words, z = tiny_inputs(g)
    w_avg = g.mean_latent(256, torch.Generator().manual_seed(0))
    assert w_avg.shape == (1, 32)
    with torch.no_grad():
        a = g(mask, words, [z], truncation=0.0, truncation_latent=w_avg, noise_mode="const")
        b = g(mask, words, [torch.randn_like(z)], truncation=0.0, truncation_latent=w_avg,
              noise_mode="const")
        c = g(mask, words, [z], truncation=0.5, truncation_latent=w_avg, noise_mode="const")
    assert torch.equal(a, b) and not torch.allclose(a, c)
    with pytest.raises(ValueError, match="truncation_latent"):
        g(mask, words, [z], truncation=0.5)


def test_style_mixing_uses_both_latents():
    g = tiny().eval()
    mask, words, z1 = tiny_inputs(g)
    z2 = torch.randn_like(z1)
    kw = dict(inject_index=4, noise_mode="const", return_latents=True)
    with torch.no_grad():
        base, extras = g(mask, words, [z1, z2], **kw)
        w1, w2 = g.style(z1), g.style(z2)
        expected = torch.cat([w1[:, None].expand(-1, 4, -1), w2[:, None].expand(-1, 5, -1)], 1)
        torch.testing.assert_close(extras["latents"], expected)
        assert not torch.allclose(base, g(mask, words, [torch.randn_like(z1), z2], **kw)[0])
        assert not torch.allclose(base, g(mask, words, [z1, torch.randn_like(z2)], **kw)[0])
        torch.manual_seed(0)
        crossovers = {int((g(mask, words, [z1, z2], noise_mode="const", return_latents=True)[1]
                           ["latents"][0] == w1[0]).all(-1).sum()) for _ in range(30)}
    assert crossovers <= set(range(1, 9)) and len(crossovers) > 3
    with pytest.raises(ValueError, match="exactly 9"):
        g(mask, words, [z1, z2, z1])


def test_latent_inputs_reproduce_the_z_path():
    g = tiny().eval()
    mask, words, z = tiny_inputs(g)
    with torch.no_grad():
        image, extras = g(mask, words, [z], noise_mode="const", return_latents=True)
        w_plus = g(mask, words, extras["latents"], input_is_latent=True, noise_mode="const")
        w = g(mask, words, g.style(z), input_is_latent=True, noise_mode="const")
        n_latent = g(mask, words, [z] * g.n_latent, noise_mode="const")
    torch.testing.assert_close(w_plus, image, rtol=0, atol=1e-6)
    torch.testing.assert_close(w, image, rtol=0, atol=1e-6)
    torch.testing.assert_close(n_latent, image, rtol=0, atol=1e-6)


def test_batch_mismatch_raises():
    g = tiny()
    mask, words, z = tiny_inputs(g, b=2)
    with pytest.raises(ValueError, match="batch mismatch"):
        g(mask, words[:1], [z])
    with pytest.raises(ValueError, match="batch mismatch"):
        g(mask, words, [z[:1]])
    with pytest.raises(ValueError, match=r"mask must be \(B,3,64,64\)"):
        g(mask[:, :, :32, :32], words, [z])


def test_word_padding_must_leave_a_word_in_every_sample():
    g = tiny()
    mask, words, z = tiny_inputs(g, b=2)
    padding = torch.zeros(words.shape[:2], dtype=torch.bool)
    padding[1, 1:] = True
    assert torch.isfinite(g(mask, words, [z], word_padding=padding)).all()   # one word left is enough
    padding[1, 0] = True
    with pytest.raises(ValueError, match="masks every word of some sample"):
        g(mask, words, [z], word_padding=padding)
    with pytest.raises(ValueError, match=r"word_padding must be \(B,T\)"):
        g(mask, words, [z], word_padding=padding[:1])


# ------------------------------------------------------------------------------------------------
# Training signal


def test_generator_step_reaches_every_parameter():
    g = tiny(gcmf_gate=True).train()
    d = Discriminator(size=64, channel_max=32, in_channels=6, sentence_dim=24)
    mask, words, z = tiny_inputs(g)
    image = g(mask, words, [z])
    logit, cond = d(image, mask, torch.randn(2, 24))
    (F.softplus(-logit).mean() + F.binary_cross_entropy_with_logits(cond, torch.ones(2))).backward()
    for name, p in g.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_path_length_double_backward_through_latents():
    g = tiny().train()
    mask, words, z = tiny_inputs(g)
    image, extras = g(mask, words, [z], return_latents=True)
    grad, = torch.autograd.grad((image * torch.randn_like(image)).sum(), extras["latents"],
                                create_graph=True)
    grad.square().sum().backward()
    assert torch.isfinite(g.style[1].weight.grad).all() and g.style[1].weight.grad.abs().sum() > 0


def test_onehot_masks_from_config():
    cfg = load_config(None, ["MODEL.MASK_INPUT=onehot", "MODEL.SIZE=64", "MODEL.CHANNEL_MAX=32",
                             "MODEL.STYLE_DIM=32", "MODEL.MASK_DIM=16", "MODEL.N_MLP=1",
                             "TEXT.EMBEDDING_DIM=24"])
    g = Generator.from_config(cfg)
    assert g.mask_channels == 19 and g.mask_encoder.in_channels == 19
    switched = Generator.from_config(load_config(None, ["MODEL.SIZE=64", "MODEL.CHANNEL_MAX=32", "MODEL.STYLE_DIM=32",
                                                        "MODEL.MASK_DIM=16", "MODEL.N_MLP=1", "TEXT.EMBEDDING_DIM=24",
                                                        "MODEL.TEXT_TO_W=true", "MODEL.UNFOLD_BLUR=true"]))
    assert switched.text_to_w is not None and all(step.unfold_blur for st in switched.stages for step in st.folds)
    final_sharp = Generator.from_config(load_config(None, ["MODEL.SIZE=64", "MODEL.CHANNEL_MAX=32", "MODEL.STYLE_DIM=32",
                                                           "MODEL.MASK_DIM=16", "MODEL.N_MLP=1", "TEXT.EMBEDDING_DIM=24",
                                                           "MODEL.UNFOLD_BLUR=true", "MODEL.UNFOLD_BLUR_FINAL=false"]))
    blurs = [step.unfold_blur for st in final_sharp.stages for step in st.folds]
    assert blurs == [True] * (len(blurs) - 1) + [False]          # every Unfold but the output's is blurred


def test_text_to_w_shifts_every_latent_by_the_mean_unpadded_word():
    g = tiny(text_to_w=True).eval()
    mask, words, z = tiny_inputs(g)
    padding = torch.zeros(2, 5, dtype=torch.bool)
    padding[:, 3:] = True
    run = lambda w: g(mask, w, [z], word_padding=padding, noise_mode="const")
    padded_changed, word_changed = words.clone(), words.clone()
    padded_changed[:, 4] += 3.0
    word_changed[:, 1] += 3.0
    assert torch.equal(run(words), run(padded_changed))        # padding is not part of the mean
    assert not torch.allclose(run(words), run(word_changed))
    # the returned W+ is the caller's (unshifted) one: passed back in, it redraws the same image
    image, extras = g(mask, words, [z], word_padding=padding, noise_mode="const", return_latents=True)
    again = g(mask, words, extras["latents"], word_padding=padding, noise_mode="const", input_is_latent=True)
    assert torch.allclose(image, again, atol=1e-6)
    image.sum().backward()
    assert g.text_to_w.weight.grad.abs().sum() > 0
    assert tiny().text_to_w is None                            # off by default: the reference's parameters


def test_unfold_blur_removes_the_two_pixel_pattern_and_adds_no_parameters():
    rows = torch.arange(8.0).remainder(2).view(1, 1, 8, 1).expand(1, 3, 8, 8)   # stripes, period 2
    flat = torch.full((1, 3, 8, 8), 0.7)
    assert blur_121(rows)[..., 1:-1, :].std() < 1e-6              # inside: the stripes average out
    assert torch.allclose(blur_121(flat), flat)                    # a constant passes unchanged
    plain, blurred = tiny(unfold_init="icnr"), tiny(unfold_init="icnr", unfold_blur=True)
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in blurred.parameters())
    mask, words, z = tiny_inputs(blurred)
    out = blurred(mask, words, [z], noise_mode="const")
    assert not torch.allclose(out, plain(mask, words, [z], noise_mode="const"))
    out.square().mean().backward()
    assert all(p.grad is not None for p in blurred.parameters())


def test_replicate_border_reaches_every_fold_step_and_changes_only_the_rim():
    """MODEL.G_BORDER replicate: every fold step's 3x3 convs and skip upsampling repeat the edge (replicate_skip: the
    upsampling only), no parameter is added, and with the same weights the image differs from the zero border's most
    on its outer rows."""
    for value, convs, skip in (("replicate", "replicate", "replicate"), ("replicate_skip", "zero", "replicate")):
        g = Generator.from_config(load_config("synthface", [f"MODEL.G_BORDER={value}"]))
        steps = [step for stage in g.stages for step in stage.folds]
        assert all(step.conv_low.conv.border == step.conv_high.conv.border == convs for step in steps)
        assert all(step.to_rgb.border == skip for step in steps)
    zero, replicate = tiny(), tiny(border="replicate")
    assert sum(p.numel() for p in zero.parameters()) == sum(p.numel() for p in replicate.parameters())
    replicate.load_state_dict(zero.state_dict())
    mask, words, z = tiny_inputs(zero)
    difference = (zero(mask, words, [z], noise_mode="const") - replicate(mask, words, [z], noise_mode="const")).abs()
    rim, inside = difference[..., :2, :].mean(), difference[..., 24:40, 24:40].mean()
    assert rim > 3 * inside > 0


@pytest.mark.parametrize("switch, message", [
    ({"text_to_w": True}, "MODEL.TEXT_TO_W, MODEL.MASK_CONTEXT and MODEL.UNFOLD_BLUR must be off"),
    ({"unfold_blur": True}, "MODEL.TEXT_TO_W, MODEL.MASK_CONTEXT and MODEL.UNFOLD_BLUR must be off"),
    ({"mask_context": 2}, "MODEL.TEXT_TO_W, MODEL.MASK_CONTEXT and MODEL.UNFOLD_BLUR must be off"),
    ({"mask_kernel": 1}, "MODEL.MASK_KERNEL must be 3"),
    ({"mask_point_channels": 4}, "MODEL.MASK_POINT_CHANNELS 0"),
    ({"pixel_stripes": True}, "MODEL.PIXEL_STRIPES must be off"),
    ({"border": "replicate"}, "MODEL.G_BORDER must be 'zero'")])
def test_reference_transcription_refuses_what_the_reference_lacks(switch, message):
    g = tiny(**switch)
    mask, words, z = tiny_inputs(g)
    with pytest.raises(ValueError, match=message):
        literal_reference_forward(g, mask, words, reference_latents(g, z))


# ------------------------------------------------------------------------------------------------
# ICNR initialisation of the convs before Unfold (MODEL.UNFOLD_INIT)


def test_icnr_unfold_starts_as_nearest_upsampling():
    torch.manual_seed(0)
    step = FoldStep(8, 16, style_dim=6, unfold_init="icnr")
    x, style = torch.randn(2, 8, 5, 5), torch.randn(2, 6)
    noise = torch.randn(2, 1, 5, 5)
    low = step.conv_low(x, style, noise)
    up = unfold(low)                                               # (2,4,10,10)
    nearest = low[:, :4].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert torch.equal(up, nearest)
    torch.manual_seed(0)
    random = FoldStep(8, 16, style_dim=6)
    low = random.conv_low(x, style, noise)
    assert not torch.allclose(unfold(low), low[:, :4].repeat_interleave(2, 2).repeat_interleave(2, 3))


def test_icnr_generator_has_the_same_parameters_and_trains_them_all():
    g, ref = tiny(unfold_init="icnr"), tiny()
    assert [(n, p.shape) for n, p in g.named_parameters()] == [(n, p.shape) for n, p in ref.named_parameters()]
    mask, words, z = tiny_inputs(g)
    g(mask, words, [z]).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in g.named_parameters()
               if "noise_weight" not in n)


def test_unknown_unfold_init_is_refused():
    with pytest.raises(ValueError, match="unfold_init"):
        tiny(unfold_init="zeros")


# ------------------------------------------------------------------------------------------------
# Fold skip (MODEL.FOLD_SKIP)


@pytest.mark.parametrize("kind", ["mask", "fusion"])
def test_fold_skip_starts_as_the_reference_and_learns(kind):
    g = tiny(fold_skip=kind).eval()     # eval: no GCMF dropout, so two calls can be compared
    mask, words, z = tiny_inputs(g)
    skips = [step.fold_skip for stage in g.stages for step in stage.folds]
    assert all(s is not None and s.weight.shape[1] == g.stages[0].gcmf.dim * (2 if kind == "fusion" else 1)
               for s in skips)
    noise = g.make_noise(2, torch.Generator().manual_seed(3))
    with_skip = g(mask, words, [z], noise=noise)
    for stage in g.stages:
        for step in stage.folds:
            step.fold_skip = None                 # the same network without the skip
    assert torch.equal(with_skip, g(mask, words, [z], noise=noise))
    for stage, step_skips in zip(g.stages, [skips[:2], skips[2:]]):
        for step, skip in zip(stage.folds, step_skips):
            step.fold_skip = skip
    g(mask, words, [z], noise=noise).square().mean().backward()
    assert all(s.weight.grad is not None and s.weight.grad.abs().sum() > 0 for s in skips)


def test_text_mlp_learning_rate_is_its_own_switch():
    """MODEL.LR_TEXT_MLP scales only the text MLP: the mapping network keeps LR_MLP (0.01 by default)."""
    cfg = load_config(None, ["MODEL.SIZE=64", "MODEL.CHANNEL_MAX=32", "MODEL.STYLE_DIM=32", "MODEL.MASK_DIM=16",
                             "TEXT.EMBEDDING_DIM=16", "MODEL.LR_TEXT_MLP=1"])
    g = Generator.from_config(cfg)
    text_rates = {layer.lr_mul for layer in g.text_mlp if hasattr(layer, "lr_mul")}
    style_rates = {layer.lr_mul for layer in g.style if hasattr(layer, "lr_mul")}
    assert text_rates == {1.0} and style_rates == {0.01}
    assert {layer.lr_mul for layer in tiny().text_mlp if hasattr(layer, "lr_mul")} == {0.01}   # the reference's
