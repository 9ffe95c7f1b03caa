"""Discriminator: parameter count of the reference Pixel_Discriminator (PixelFace+/code/model.py:194-311),
both heads, any-batch minibatch stddev."""
import pytest
import torch
import torch.nn.functional as F

from pixelface.core.config import load_config
from pixelface.networks.discriminator import Discriminator, minibatch_stddev, stddev_group
from pixelface.networks.reference_ops import reference_discriminator_forward

torch.set_num_threads(1)


def tiny(**kw):
    torch.manual_seed(0)
    return Discriminator(**{**dict(size=32, channel_max=32, in_channels=6, sentence_dim=16), **kw})


def tiny_inputs(b=4, size=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 3, size, size, generator=g), torch.rand(b, 3, size, size, generator=g),
            torch.randn(b, 16, generator=g))


def test_reference_parameter_count():
    d = Discriminator.from_config(load_config(None, []))
    trainable = sum(p.numel() for p in d.parameters() if p.requires_grad)
    power_iteration = sum(b.numel() for b in d.buffers())
    assert trainable == 33_591_810
    assert trainable + power_iteration == 33_601_538   # reference total incl. spectral-norm u, v
    assert d.in_channels == 6


def test_onehot_config_widens_the_input():
    d = Discriminator.from_config(load_config(None, ["MODEL.MASK_INPUT=onehot", "MODEL.SIZE=64",
                                                     "MODEL.CHANNEL_MAX=16"]))
    assert d.in_channels == 22


def test_heads_shapes_and_conditioning():
    d = tiny().eval()
    image, mask, sentence = tiny_inputs()
    logit, cond = d(image, mask, sentence)
    assert logit.shape == (4, 1) and cond.shape == (4,)
    logit_u, cond_u = d(image, mask)
    assert cond_u is None and torch.equal(logit_u, logit)
    other_logit, other_cond = d(image, mask, torch.randn_like(sentence))
    assert torch.equal(other_logit, logit) and not torch.allclose(other_cond, cond)


def test_several_sentences_share_one_body_pass():
    d = tiny().eval()
    image, mask, sentence = tiny_inputs()
    other = torch.randn_like(sentence)
    logit, conds = d(image, mask, [sentence, other])
    assert conds.shape == (2, 4)
    torch.testing.assert_close(conds[0], d(image, mask, sentence)[1])
    torch.testing.assert_close(conds[1], d(image, mask, other)[1])
    torch.testing.assert_close(logit, d(image, mask)[0])


def test_mask_is_part_of_the_input():
    d = tiny().eval()
    image, mask, sentence = tiny_inputs()
    assert not torch.allclose(d(image, mask)[0], d(image, torch.rand_like(mask))[0])


@pytest.mark.parametrize("batch,group", [(1, 1), (2, 2), (3, 3), (4, 4), (5, 1), (6, 3), (8, 4)])
def test_stddev_group_divides_any_batch(batch, group):
    assert stddev_group(batch) == group
    out = tiny()(*tiny_inputs(b=batch))[0]
    assert out.shape == (batch, 1)


def test_minibatch_stddev_matches_stylegan2_for_divisible_batches():
    x = torch.randn(8, 5, 4, 4, dtype=torch.float64)
    groups = x.view(4, 2, 5, 4, 4)                          # sample i is in group i mod 2
    sd = torch.sqrt(groups.var(0, unbiased=False) + 1e-8).mean((1, 2, 3))
    expected = sd.repeat(4).view(8, 1, 1, 1).expand(8, 1, 4, 4)
    out = minibatch_stddev(x)
    assert out.shape == (8, 6, 4, 4)
    torch.testing.assert_close(out[:, 5:], expected)
    torch.testing.assert_close(out[:, :5], x)


def test_discriminator_step_reaches_every_parameter():
    d = tiny().train()
    image, mask, sentence = tiny_inputs()
    real_logit, real_cond = d(image, mask, sentence)
    fake_logit, fake_cond = d(torch.randn_like(image), mask, sentence)
    loss = (F.softplus(-real_logit).mean() + F.softplus(fake_logit).mean()
            + F.binary_cross_entropy_with_logits(real_cond, torch.ones(4))
            + F.binary_cross_entropy_with_logits(fake_cond, torch.zeros(4)))
    loss.backward()
    for name, p in d.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_r1_double_backward_on_the_unconditional_path():
    d = tiny().train()
    image, mask, _ = tiny_inputs()
    image.requires_grad_(True)
    grad, = torch.autograd.grad(d(image, mask)[0].sum(), image, create_graph=True)
    grad.square().sum().backward()
    assert torch.isfinite(d.from_input.weight.grad).all() and d.from_input.weight.grad.abs().sum() > 0


def test_bad_inputs_raise():
    d = tiny()
    image, mask, sentence = tiny_inputs()
    with pytest.raises(ValueError, match="channels must total 6"):
        d(image, torch.cat([mask, mask], 1))
    with pytest.raises(ValueError, match="batch mismatch"):
        d(image, mask[:2])
    with pytest.raises(ValueError, match="sentence must be"):
        d(image, mask, sentence[:, :8])


def test_discriminator_equals_the_reference_transcription_with_gradients():
    """Folded gains, fused blur + stride, shared body pass for several sentences: the reference function
    (PixelFace+/code/model.py:194-311) and its gradients, in float64."""
    d = tiny().double().eval()
    with torch.no_grad():
        for name, p in d.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
    image, mask, sentence = (t.double() for t in tiny_inputs())
    other = torch.randn_like(sentence)

    def grads(forward):
        d.zero_grad()
        logit, conds = forward()
        (logit.sum() + (conds * torch.arange(1.0, 5.0, dtype=torch.float64)).sum()).backward()
        return logit, conds, {n: p.grad.clone() for n, p in d.named_parameters()}

    def reference():
        (logit, cond), (_, cond2) = (reference_discriminator_forward(d, image, mask, s) for s in (sentence, other))
        return logit, torch.stack([cond, cond2])

    ours, ref = grads(lambda: d(image, mask, [sentence, other])), grads(reference)
    torch.testing.assert_close(ours[0], ref[0])
    torch.testing.assert_close(ours[1], ref[1])
    for name in ours[2]:
        torch.testing.assert_close(ours[2][name], ref[2][name], msg=name)


def test_pixel_conditional_head_scores_the_caption_where_pixels_and_caption_meet():
    """MODEL.D_COND_PIXEL_RES: the per-pixel head's parameters get gradients, the caption changes its part of the
    conditional logit, the unconditional logit is untouched, and bad resolutions are refused."""
    d = tiny(cond_pixel_res=16).train()
    image, mask, sentence = tiny_inputs()
    logit, cond = d(image, mask, sentence)
    F.binary_cross_entropy_with_logits(cond, torch.ones(4)).backward()
    for name, p in d.pixel_head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    plain = tiny()
    plain.load_state_dict({k: v for k, v in d.state_dict().items() if not k.startswith("pixel_head.")})
    plain_logit, plain_cond = plain.eval()(image, mask, sentence)
    d.eval()
    torch.testing.assert_close(d(image, mask)[0], plain_logit)
    assert not torch.allclose(d(image, mask, sentence)[1], plain_cond)
    for bad in (4, 12, 64):
        with pytest.raises(ValueError, match="cond_pixel_res must be 0 or a power of two"):
            tiny(cond_pixel_res=bad)
