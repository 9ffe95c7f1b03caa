import pytest
import torch
import torch.nn.functional as F

from pixelface import losses
from pixelface.config import load_config
from pixelface.trainer import _adam, ema_beta


def test_d_loss_pieces_sum_to_the_reference_formula():
    g = torch.Generator().manual_seed(0)
    rl, rc, fl, fc, mc = (torch.randn(4, generator=g) for _ in range(5))
    bce = lambda x, t: F.binary_cross_entropy(torch.sigmoid(x), torch.full_like(x, t))  # reference: sigmoid + BCE
    reference = (F.softplus(-rl).mean() + bce(rc, 1)) / 2 + (F.softplus(fl).mean() + bce(fc, 0) + bce(mc, 0)) / 3
    ours = losses.d_real_loss(rl, rc) + losses.d_fake_loss(fl, fc) + losses.d_mismatch_loss(mc)
    assert torch.allclose(ours, reference, atol=1e-6)


def test_generator_loss_matches_reference():
    fl, fc = torch.tensor([0.3, -2.0]), torch.tensor([1.5, -0.5])
    expected = F.softplus(-fl).mean() + F.binary_cross_entropy(torch.sigmoid(fc), torch.ones(2))
    assert torch.allclose(losses.generator_adversarial_loss(fl, fc), expected, atol=1e-6)


def test_rotate_pairs_each_sample_with_another_caption():
    s = torch.arange(5.0)[:, None]
    assert losses.rotate(s).flatten().tolist() == [2, 3, 4, 0, 1]  # reference cat(s[2:], s[:2])
    assert losses.rotate(torch.arange(2.0)).tolist() == [1, 0]       # B = 2 still mismatches


def test_clip_loss_is_low_for_a_diagonal_and_high_for_a_shuffle():
    eye = torch.eye(4) * 100
    assert losses.clip_loss(eye) < 1e-6
    assert losses.clip_loss(eye.roll(1, 1)) > 50


def test_clip_weight_schedule_is_opt_in():
    assert losses.clip_weight(1.0, False, 0) == 1.0
    assert losses.clip_weight(1.0, True, 0) == pytest.approx(0.03)
    assert losses.clip_weight(2.0, True, 1000) == 2.0


def test_r1_of_a_linear_critic_is_its_squared_weight_norm():
    w = torch.tensor([1.0, 2.0, -2.0])
    x = torch.randn(6, 3, requires_grad=True)
    m = torch.randn(6, 2, requires_grad=True)
    logit = (x @ w)[:, None] + (m @ torch.tensor([3.0, 0.0]))[:, None]
    assert losses.r1_penalty(logit, [x]).item() == pytest.approx(9.0)
    assert losses.r1_penalty(logit, [x, m]).item() == pytest.approx(18.0)  # image and mask channels


def test_path_length_of_a_linear_map():
    torch.manual_seed(0)
    latents = torch.randn(3, 5, 4, requires_grad=True)
    images = 2.0 * latents.sum(1)[:, :, None, None].expand(3, 4, 8, 8)  # every pixel scales its latent by 2
    lengths = losses.path_lengths(images, latents)
    assert lengths.shape == (3,)
    assert torch.all(lengths > 0)
    # J^T y for this map is 2·Σ_pixels y, so E‖J^T y‖² per latent layer = 4·64·4/64 = 16 -> length ≈ 4.
    assert lengths.mean().item() == pytest.approx(4.0, rel=0.5)


def test_ema_and_adam_reproduce_the_reference_constants():
    cfg = load_config(None)
    assert ema_beta(cfg, 4, 0) == pytest.approx(0.5 ** (32 / 10000))
    opt = _adam(torch.nn.Linear(2, 2), 0.002, 0.99, 4)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0016)
    assert opt.param_groups[0]["betas"] == (0.0, pytest.approx(0.99 ** 0.8))
    ramp = load_config(None, ["TRAIN.EMA_RAMPUP=0.05"])
    assert ema_beta(ramp, 4, 100) < ema_beta(ramp, 4, 100000)  # early on, G_ema follows G closely
