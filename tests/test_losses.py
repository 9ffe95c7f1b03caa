import pytest
import torch
import torch.nn.functional as F

from pixelface.core.config import load_config
from pixelface.data.caption_regions import named_makeup_zones, named_region_masks, named_regions, named_zone_weights
from pixelface.data.face_zones import MAKEUP_ZONES, face_zones, makeup_zone_masks
from pixelface.data.masks import LABEL_ID
from pixelface.networks import losses
from pixelface.training.trainer import adam_optimizer, ema_beta, lr_factor


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


def test_recon_weight_fades_linearly_to_zero_and_stays_off():
    assert losses.recon_weight(100.0, 0.0, 50.0) == 100.0               # no fade: constant
    assert losses.recon_weight(100.0, 8.0, 0.0) == 100.0
    assert losses.recon_weight(100.0, 8.0, 2.0) == pytest.approx(75.0)
    assert losses.recon_weight(100.0, 8.0, 8.0) == 0.0
    assert losses.recon_weight(100.0, 8.0, 30.0) == 0.0


def test_captions_name_the_regions_whose_colour_they_state():
    assert named_regions("she has brown hair and wears lipstick") == ["hair", "u_lip", "l_lip"]
    assert named_regions("the man has black hair he has no beard") == ["hair", "skin"]
    assert named_regions("this person has rosy cheeks and wavy hair") == ["skin"]   # a style, not a colour
    assert named_regions("this person is smiling") == []


def test_with_zones_blush_and_make_up_name_the_cheeks_and_eyelids_not_the_skin():
    assert named_regions("this person has rosy cheeks and wavy hair", zones=True) == ["cheeks"]
    assert named_regions("she wears heavy makeup and has pale skin", zones=True) == ["skin", "eyelids"]
    assert named_regions("he has a goatee and black hair", zones=True) == ["hair", "skin"]


def _upright_face(size=32, eye_row=12, eye_cols=(10, 21)):
    """A label map of skin with two 2x2 eyes and a lip row: the eye axis is horizontal."""
    labels = torch.zeros(size, size, dtype=torch.long)
    labels[4:28, 4:28] = LABEL_ID["skin"]
    for name, col in zip(("r_eye", "l_eye"), eye_cols):
        labels[eye_row:eye_row + 2, col:col + 2] = LABEL_ID[name]
    labels[22, 12:20] = LABEL_ID["u_lip"]
    return labels


def test_face_zones_place_cheeks_below_and_eyelids_above_the_eyes_and_follow_them():
    labels = _upright_face()
    zones = face_zones(labels.numpy())
    cheek_rows, eyelid_rows = zones["cheeks"].nonzero()[0], zones["eyelids"].nonzero()[0]
    assert cheek_rows.min() > 13 and eyelid_rows.max() < 13          # eye centres at row 13
    assert zones["eyelids"].sum() > 0 and zones["cheeks"].sum() > 0
    lower = face_zones(_upright_face(eye_row=15).numpy())              # the face moved down 3 rows
    assert lower["cheeks"].nonzero()[0].min() == cheek_rows.min() + 3
    no_eyes = labels.clone()
    no_eyes[no_eyes == LABEL_ID["l_eye"]] = LABEL_ID["skin"]
    assert face_zones(no_eyes.numpy()) is None


def test_zone_masks_are_empty_for_a_face_without_eyes_and_skin_stays_whole():
    labels = torch.stack([_upright_face(), torch.full((32, 32), LABEL_ID["skin"])])
    regions = named_region_masks(["she has rosy cheeks and pale skin"] * 2, labels, zones=True)
    assert regions.shape == (2, 2, 32, 32)                            # skin, cheeks
    assert regions[0, 0].sum() == (labels[0] == LABEL_ID["skin"]).sum() and regions[1, 0].sum() == 32 * 32
    assert 0 < regions[0, 1].sum() < 100 and regions[1, 1].sum() == 0  # no eyes, no cheeks to judge


def test_named_region_loss_weighs_each_named_region_alike_and_ignores_the_rest():
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    labels[:, :4] = LABEL_ID["hair"]
    labels[:, 7, :2] = LABEL_ID["u_lip"]                     # 2 lip pixels against 32 of hair
    real = torch.zeros(2, 3, 8, 8)
    fake = real.clone()
    fake[0, :, 7, :2] = 1.0                                  # sample 0: lips off by 1
    fake[:, :, 5:7] = 0.7                                    # background off everywhere: never named
    regions = named_region_masks(["she wears lipstick and has brown hair", "she is smiling"], labels)
    assert regions.shape == (2, 3, 8, 8) and regions[1].sum() == 0
    # named pairs of sample 0: hair (error 0), u_lip (error 1), l_lip (absent from the mask): mean 0.5
    assert losses.named_region_loss(fake, real, regions).item() == pytest.approx(0.5)
    assert losses.named_region_loss(fake, real, regions[:, :0]).item() == 0.0


def _painted_face(labels: torch.Tensor, skin_rgb, blush: bool) -> torch.Tensor:
    """(3,S,S) image in [-1,1]: one skin colour everywhere, the cheek zone reddened when `blush`."""
    image = torch.tensor(skin_rgb).view(3, 1, 1).expand(3, *labels.shape).clone()
    if blush:
        cheeks = torch.from_numpy(face_zones(labels.numpy())["cheeks"])
        image[0][cheeks] += 0.4
    return image * 2 - 1


def test_zone_chroma_loss_compares_make_up_against_each_face_own_skin():
    labels = torch.stack([_upright_face(), torch.full((32, 32), LABEL_ID["skin"])])
    zones = makeup_zone_masks(labels)
    assert zones.shape == (2, 1 + len(MAKEUP_ZONES), 32, 32) and zones[1].sum() == 0   # no eyes: nothing judged
    assert zones[0, 1].sum() == (labels[0] == LABEL_ID["u_lip"]).sum()                 # then lips, cheeks, eyelids
    rosy = torch.stack([_painted_face(labels[0], (0.6, 0.45, 0.4), True)] * 2)
    darker_rosy = (rosy + 1) * 0.7 - 1                       # the same face in dimmer light: same chromaticity
    plain_pale = torch.stack([_painted_face(labels[0], (0.8, 0.78, 0.76), False)] * 2)
    assert losses.zone_chroma_loss(darker_rosy, rosy, zones).item() < 1e-3
    missed = losses.zone_chroma_loss(plain_pale, rosy, zones)
    # only the cheeks differ: one zone of the three judged on face 0
    cheeks = zones[0, 2].bool()
    relative_red = losses.chromaticity(rosy)[0, 0][cheeks].mean() - losses.chromaticity(rosy)[0, 0][~cheeks].mean()
    assert missed.item() == pytest.approx(relative_red.item() / 3, rel=0.05)
    fake = plain_pale.clone().requires_grad_(True)
    losses.zone_chroma_loss(fake, rosy, zones).backward()
    assert fake.grad[0].abs().sum() > 0 and fake.grad[1].abs().sum() == 0
    assert losses.zone_chroma_loss(plain_pale, rosy, zones[1:]).item() == 0.0
    # weighted: a named zone (the cheeks, weight 9) counts 9 times as much as each unnamed one
    weights = torch.tensor([[1.0, 9.0, 1.0], [1.0, 1.0, 1.0]])
    boosted = losses.zone_chroma_loss(plain_pale, rosy, zones, weights)
    assert boosted.item() == pytest.approx(relative_red.item() * 9 / 11, rel=0.05)
    assert losses.zone_chroma_loss(plain_pale, rosy, zones, torch.ones(2, 3)).item() == pytest.approx(missed.item())


def test_named_makeup_zones_flag_the_zone_of_each_named_make_up():
    flags = named_makeup_zones(["she has rosy cheeks and wears lipstick", "he has black hair",
                                "she wears heavy makeup", "this person has pale skin and a beard"])
    assert flags.tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 1], [0, 0, 0]]     # lips, cheeks, eyelids


def test_named_zone_weights_give_the_naming_faces_the_share_of_each_zone():
    # lipstick named by 1 caption of 4, rosy cheeks by 2, heavy makeup by none
    captions = ["she wears lipstick", "she has rosy cheeks", "she has rosy cheeks", "he has black hair"]
    weights = named_zone_weights(captions, share=0.6)
    assert weights.tolist() == pytest.approx([0.6 / 0.4 * 3, 0.6 / 0.4 * 1, 1.0])
    flags = named_makeup_zones(captions)
    per_face = 1 + (weights - 1) * flags
    carried = (per_face * flags).sum(0) / per_face.sum(0)
    assert carried[:2].tolist() == pytest.approx([0.6, 0.6])                # the share, whatever the frequency
    assert named_zone_weights(["she wears lipstick"] * 3, 0.6).tolist() == [1.0, 1.0, 1.0]   # all or none: 1


def test_mode_seeking_rewards_image_distance_per_z_distance_up_to_its_cap():
    z_a, z_b = torch.zeros(2, 4), torch.full((2, 4), 2.0)                 # mean |z_a - z_b| = 2
    same = torch.ones(2, 3, 8, 8)
    assert losses.mode_seeking_loss(same, same.clone(), z_a, z_b, cap=1.0).item() == 0.0
    apart = torch.cat([torch.full((1, 3, 8, 8), 0.5), torch.full((1, 3, 8, 8), 4.0)])
    # ratios 0.5/2 = 0.25 and 4/2 = 2 -> capped at 1: mean 0.625, as a loss to minimise
    assert losses.mode_seeking_loss(same + apart, same, z_a, z_b, cap=1.0).item() == pytest.approx(-0.625)
    fake = (same + apart).requires_grad_(True)
    losses.mode_seeking_loss(fake, same, z_a, z_b, cap=1.0).backward()
    assert fake.grad[0].abs().sum() > 0 and fake.grad[1].abs().sum() == 0   # no reward past the cap


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
    opt = adam_optimizer(torch.nn.Linear(2, 2), 0.002, 0.99, 4)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0016)
    assert opt.param_groups[0]["betas"] == (0.0, pytest.approx(0.99 ** 0.8))
    ramp = load_config(None, ["TRAIN.EMA_RAMPUP=0.05"])
    assert ema_beta(ramp, 4, 100) < ema_beta(ramp, 4, 100000)  # early on, G_ema follows G closely


def test_lr_rampdown_is_constant_then_linear_to_the_final_fraction():
    assert lr_factor(load_config(None), 10 ** 9) == 1.0                         # off: the reference
    cfg = load_config(None, ["TRAIN.TOTAL_KIMG=20", "TRAIN.LR_RAMPDOWN_KIMG=10", "TRAIN.LR_RAMPDOWN_FINAL=0.2"])
    assert lr_factor(cfg, 0) == 1.0
    assert lr_factor(cfg, 10_000) == 1.0
    assert lr_factor(cfg, 15_000) == pytest.approx(0.6)
    assert lr_factor(cfg, 20_000) == pytest.approx(0.2)
    assert lr_factor(cfg, 30_000) == pytest.approx(0.2)                        # past the end: stays there
