"""The metric formulas on tiny inputs with known answers, the real-statistics cache and the Inception weights."""
import numpy as np
import pytest
import torch

from conftest import load_script
from pixelface.data.masks import accuracy_from_confusion, confusion_matrix
from pixelface.evaluation import extractors, stats_cache
from pixelface.evaluation.extractors import MissingWeightsError
from pixelface.evaluation.formulas import (clip_score, color_spread, feature_stats, frechet_distance,
                                           high_frequency_map, kid, pairwise_distance_diversity, r_precision,
                                           region_colors, region_edges, region_texture)
from pixelface.evaluation.stats_cache import StatsCache


def pooled_accuracy(pred, true) -> dict[str, float]:
    """{pixel_acc, miou} over every pixel of every image, as the mask metrics pool them."""
    return accuracy_from_confusion(confusion_matrix(pred, true))


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Any attempt to fetch weights fails the test instead of reaching for the network."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args}")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


# ------------------------------------------------------------------------------------------------ Fréchet distance
def test_frechet_distance_of_1d_gaussians_matches_closed_form():
    # (mu1 - mu2)^2 + s1 + s2 - 2 sqrt(s1 s2) = 9 + 1 + 4 - 4
    assert frechet_distance(np.array([0.0]), np.array([[1.0]]), np.array([3.0]), np.array([[4.0]])) == \
        pytest.approx(10.0)


def test_frechet_distance_of_diagonal_gaussians_matches_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected)


@pytest.mark.parametrize("n", [200, 10])  # 10 samples of 16 dims: a singular covariance
def test_identical_feature_sets_are_at_distance_zero(n):
    features = np.random.default_rng(0).normal(size=(n, 16))
    stats = feature_stats(features)
    assert abs(frechet_distance(*stats, *stats)) < 1e-3


def test_shifted_feature_set_is_at_the_squared_shift():
    features = np.random.default_rng(0).normal(size=(500, 8))
    assert frechet_distance(*feature_stats(features), *feature_stats(features + 2.0)) == pytest.approx(32.0, rel=1e-4)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# ------------------------------------------------------------------------------------------------ KID
def test_kid_of_two_point_sets_matches_hand_computation():
    # X = {0, 0}, Y = {1, 1} in 1-D, k(x, y) = (x y + 1)^3: MMD^2 = k(0,0) + k(1,1) - 2 k(0,1) = 1 + 8 - 2.
    mean, std = kid(np.zeros((2, 1)), np.ones((2, 1)), subsets=3, subset_size=2)
    assert (mean, std) == pytest.approx((7.0, 0.0))
    assert kid(np.ones((2, 1)), np.ones((2, 1)), subsets=3, subset_size=2) == pytest.approx((0.0, 0.0))


def test_kid_separates_equal_from_shifted_distributions():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    same, _ = kid(a, b, subsets=10, subset_size=100)
    shifted, _ = kid(a, b + 1.0, subsets=10, subset_size=100)
    assert abs(same) < 0.05 < shifted


# ------------------------------------------------------------------------------------------------ text-image
def test_clip_score_is_100_times_cosine():
    emb = torch.randn(5, 8)
    assert clip_score(emb, 3 * emb) == pytest.approx(100.0)
    assert clip_score(torch.eye(4)[:2], torch.eye(4)[2:]) == pytest.approx(0.0)


def test_r_precision_finds_matching_captions_and_misses_swapped_ones():
    emb = torch.eye(12)
    generator = torch.Generator().manual_seed(0)
    assert r_precision(emb, emb, k=5, generator=generator) == 1.0
    assert r_precision(emb, emb.roll(1, 0), k=12, generator=generator) == 0.0


def test_r_precision_never_uses_a_duplicate_of_the_true_caption_as_distractor():
    # Images 0 and 1 share one caption text; with it as a distractor they could not win strictly.
    text = torch.eye(3)[[0, 0, 1, 2]]
    assert r_precision(text, text, k=3, generator=torch.Generator().manual_seed(0),
                       caption_ids=[0, 0, 1, 2]) == 1.0
    with pytest.raises(ValueError, match="distinct other captions"):
        r_precision(text, text, k=4, generator=torch.Generator(), caption_ids=[0, 0, 1, 2])


# ------------------------------------------------------------------------------------------------ masks, diversity
def test_mask_accuracy_matches_hand_computation():
    true = torch.tensor([[[0, 0], [1, 1]]])
    pred = torch.tensor([[[0, 1], [1, 1]]])
    scores = pooled_accuracy(pred, true)
    # IoU: class 0 -> 1/2, class 1 -> 2/3; the 17 classes absent from both do not count.
    assert scores == pytest.approx({"pixel_acc": 0.75, "miou": (1 / 2 + 2 / 3) / 2})
    assert pooled_accuracy(true, true) == pytest.approx({"pixel_acc": 1.0, "miou": 1.0})


# ------------------------------------------------------------------------------------------------ region texture
def _two_region_face():
    """A 16x16 label map split into two regions, and an image painted flat in each (sharp edge between)."""
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels[:, :, 8:] = 17
    image = torch.full((1, 3, 16, 16), -0.5)
    image[:, :, :, 8:] = 0.6
    return image, labels


def test_region_texture_of_flat_regions_is_zero_whatever_the_edges():
    image, labels = _two_region_face()
    assert region_texture(image, labels).item() == pytest.approx(0.0, abs=1e-3)


def test_region_texture_measures_noise_and_checkerboard_inside_regions():
    image, labels = _two_region_face()
    noise = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.1
    assert region_texture(image + noise, labels).item() == pytest.approx(0.1 * 127.5, rel=0.2)
    checker = ((torch.arange(16)[:, None] + torch.arange(16)[None]) % 2).float() * 0.2   # 0 / 0.2: std 0.1
    assert region_texture(image + checker, labels).item() == pytest.approx(0.1 * 127.5, rel=0.05)


def test_region_texture_ignores_region_edges_and_thin_regions():
    image, labels = _two_region_face()
    image[:, :, :, 7] = 1.0          # a stripe along the edge of region 0: eroded away
    labels[:, 3, 3] = 5              # a one-pixel region: too small to measure, and it erodes its neighbours
    image[:, :, 3, 3] = -1.0
    assert region_texture(image, labels).item() == pytest.approx(0.0, abs=1e-3)


def test_region_texture_refuses_mismatched_sizes():
    image, labels = _two_region_face()
    with pytest.raises(ValueError, match="differ in size"):
        region_texture(image[..., :8], labels)


def high_frequency_energy(images):
    return high_frequency_map(images).mean((1, 2))          # per image, as the sharpness measure averages it


def test_high_frequency_energy_is_zero_for_flat_images_and_falls_with_blur():
    flat = torch.full((2, 3, 16, 16), 0.3)
    assert high_frequency_energy(flat).tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    image, _ = _two_region_face()
    sharp = high_frequency_energy(image).item()
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(image, (1, 1, 1, 1), mode="replicate"), 3, 1)
    assert sharp > 0 and high_frequency_energy(blurred).item() < 0.5 * sharp
    checker = ((torch.arange(16)[:, None] + torch.arange(16)[None]) % 2).float().expand(1, 3, 16, 16) * 0.2
    assert high_frequency_energy(image + checker).item() > 1.4 * sharp


def test_region_edges_mark_both_sides_of_every_label_change_and_hold_a_flat_faces_energy():
    image, labels = _two_region_face()
    edges = region_edges(labels)                                     # regions meet between columns 7 and 8
    assert edges[0].all(0).nonzero().flatten().tolist() == [7, 8] and edges.sum() == 2 * 16
    energy = high_frequency_map(image)
    assert energy[~edges].sum() == pytest.approx(0.0, abs=1e-6)      # flat regions: all energy at the edge
    assert energy[edges].min() > 0


def test_region_colors_are_eroded_region_means_and_nan_where_too_small():
    image, labels = _two_region_face()
    image[:, :, :, 7] = 1.0                    # the edge column of region 0 is eroded away
    colors = region_colors(image, labels, [0, 17, 5])
    assert colors.shape == (1, 3, 3)
    assert colors[0, 0].tolist() == pytest.approx([0.5 * 127.5] * 3, abs=1e-3)
    assert colors[0, 1].tolist() == pytest.approx([1.6 * 127.5] * 3, abs=1e-3)
    assert colors[0, 2].isnan().all()          # no pixel of label 5


def test_color_spread_is_the_root_mean_channel_variance_ignoring_unmeasured_rows():
    colors = torch.tensor([[0.0, 0.0, 0.0], [2.0, 4.0, 6.0], [float("nan")] * 3])
    # per channel, sample variance of two values a, b is (a-b)^2/2: 2, 8, 18 -> mean 28/3
    assert color_spread(colors).item() == pytest.approx((28 / 3) ** 0.5)
    assert color_spread(colors[:1]).isnan()    # one measured row has no spread
    same = torch.tensor([[5.0, 6.0, 7.0]] * 4)
    assert color_spread(same).item() == pytest.approx(0.0)


def test_pairwise_diversity_is_zero_for_copies_and_one_for_orthogonal_samples():
    copies = torch.randn(4, 1, 8).expand(4, 3, 8)
    assert pairwise_distance_diversity(copies) == pytest.approx(0.0, abs=1e-9)
    assert pairwise_distance_diversity(torch.eye(3)[None].expand(2, 3, 3)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="samples >= 2"):
        pairwise_distance_diversity(torch.randn(4, 1, 8))


# ------------------------------------------------------------------------------------------------ cache
def test_stats_cache_computes_once_and_reuses(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return np.random.default_rng(0).normal(size=(20, 4))

    cache = StatsCache(tmp_path)
    first = cache.get_or_compute("set-a", compute)
    second = StatsCache(tmp_path).get_or_compute("set-a", compute)
    assert len(calls) == 1
    np.testing.assert_array_equal(first["sigma"], second["sigma"])
    cache.get_or_compute("set-b", compute)
    assert len(calls) == 2


def test_damaged_cache_entry_is_recomputed(tmp_path):
    cache = StatsCache(tmp_path)
    cache.path("set").write_bytes(b"not an npz")
    entry = cache.get_or_compute("set", lambda: np.ones((3, 2)))
    assert entry["features"].shape == (3, 2)
    assert cache.load("set") is not None


def test_stats_key_names_dataset_split_extractor_size_and_count(tmp_path):
    from pixelface.core.config import load_config
    cfg = load_config(overrides=["DATA.NAME=synthface", f"DATA.ROOT={tmp_path}", "DATA.IMAGE_SIZE=64"])
    key = stats_cache.real_stats_key(cfg, "test", ["1", "2", "3"], "clip-custom-ab12")
    assert key.startswith("synthface-test-clip-custom-ab12-64px-n3-")
    assert stats_cache.real_stats_key(cfg, "test", ["1", "2", "4"], "clip-custom-ab12") != key


# ------------------------------------------------------------------------------------------------ Inception weights
def test_missing_inception_weights_raise_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELFACE_HOME", str(tmp_path / "repo"))   # no models/ in the project home
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(MissingWeightsError) as error:
        extractors.InceptionExtractor()
    message = str(error.value)
    assert extractors.INCEPTION_URL in message and str(tmp_path / "hub" / "checkpoints") in message
    with pytest.raises(MissingWeightsError, match="elsewhere.pth"):
        extractors.InceptionExtractor(tmp_path / "elsewhere.pth")


def test_inception_weights_are_found_in_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELFACE_HOME", str(tmp_path / "repo"))   # no models/ in the project home
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cached = tmp_path / "hub" / "checkpoints" / extractors.INCEPTION_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert extractors.find_inception_weights() == cached


@pytest.mark.slow
def test_inception_extractor_gives_2048_features_from_a_local_file(tmp_path, monkeypatch):
    """The real torch-fidelity network, with random weights written to a local file."""
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
    with monkeypatch.context() as patch:  # build it once without weights, to have a file to load
        patch.setattr(tf_inception, "load_state_dict_from_url", lambda *a, **k: None)
        patch.setattr(tf_inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        net = tf_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path / extractors.INCEPTION_FILE
    torch.save(net.state_dict(), path)
    features = extractors.InceptionExtractor(path)(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert features.shape == (2, 2048) and torch.isfinite(features).all()


def test_border_band_mean_reads_the_background_band_at_its_inset():
    """scripts/synthface_probes.py's frame measure: a background whose outer 2 pixels are brighter reads that rim
    in the 0-2 band only, and pixels of other classes never count."""
    probes = load_script("synthface_probes")
    levels = torch.full((1, 16, 16), 100.0)
    levels[:, :2, :] = levels[:, -2:, :] = levels[:, :, :2] = levels[:, :, -2:] = 130.0
    background = torch.ones(1, 16, 16, dtype=torch.bool)
    background[:, 6:10, 6:10] = False
    levels[:, 6:10, 6:10] = 255.0
    assert probes.band_mean(levels, background, 0, 2).item() == 130.0
    assert probes.band_mean(levels, background, 4, 8).item() == 100.0
