"""The frozen CLIP text encoder: feature layout, padding mask, freezing, image-tower gradients, loading errors."""
import socket
import warnings

import pytest
import torch
import torch.nn.functional as F

from pixelface.core.config import ConfigError, load_config
from pixelface.networks.text_encoder import (CLIP_FORMAT, TextEncoder, build_custom_clip, custom_arch, encode_text,
                                             pin_weights_hash, text_hidden_states)

TINY = ["TEXT.MODEL=custom", "TEXT.PRETRAINED=", "TEXT.EMBEDDING_DIM=64", "TEXT.SENTENCE_DIM=32",
        "TEXT.CUSTOM.EMBED_DIM=32", "TEXT.CUSTOM.IMAGE_SIZE=32", "TEXT.CUSTOM.VISION_LAYERS=1",
        "TEXT.CUSTOM.VISION_WIDTH=64", "TEXT.CUSTOM.VISION_PATCH=8", "TEXT.CUSTOM.TEXT_LAYERS=2",
        "TEXT.CUSTOM.TEXT_WIDTH=64", "TEXT.CUSTOM.TEXT_HEADS=2", "TEXT.CUSTOM.CONTEXT_LENGTH=48"]
SHORT = "a smiling woman"
LONG = ("the man has a big nose, bushy eyebrows, high cheekbones and a receding hairline. he wears "
        "eyeglasses and a hat, looks young and attractive and has black wavy hair with bangs and sideburns")


def tiny_cfg(*extra):
    return load_config(None, TINY + list(extra))


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder.from_config(tiny_cfg())


def bpe_length(encoder, caption):
    return len(encoder.tokenizer.encode(caption))


def test_encode_shapes_dtypes_and_mask(encoder):
    feats = encoder.encode([SHORT, "a man with black hair"])
    assert feats.words.shape == (2, 30, 64) and feats.words.dtype == torch.float32
    assert feats.padding.shape == (2, 30) and feats.padding.dtype == torch.bool
    assert feats.sentence.shape == (2, 32) and feats.sentence.dtype == torch.float32
    assert feats.tokens.shape == (2, 48) and feats.tokens.dtype == torch.int64
    # valid = SOT + the caption's BPE tokens; EOT and zero padding are masked
    for row, caption in zip(feats.padding, [SHORT, "a man with black hair"]):
        valid = 1 + bpe_length(encoder, caption)
        assert not row[:valid].any() and row[valid:].all()
    # sentence = open_clip's own text embedding (EOT state, projected)
    assert torch.allclose(feats.sentence, encoder.clip.encode_text(feats.tokens), atol=1e-5)


def test_long_caption_is_capped_at_max_words(encoder):
    assert bpe_length(encoder, LONG) > 30
    feats = encoder.encode([LONG])
    assert feats.words.shape[1] == 30 and not feats.padding.any()


def test_fixed_length_features_do_not_depend_on_batch_mates(encoder):
    alone = encoder.encode([SHORT])
    mixed = encoder.encode([LONG, SHORT, "hair"])
    valid = ~alone.padding[0]
    assert torch.equal(alone.padding[0], mixed.padding[1])
    assert torch.allclose(alone.words[0][valid], mixed.words[1][valid], atol=1e-5)
    assert torch.allclose(alone.sentence[0], mixed.sentence[1], atol=1e-5)


def test_attend_eot_shows_the_state_that_has_read_the_whole_caption(encoder):
    enc = TextEncoder.from_config(tiny_cfg("TEXT.ATTEND_EOT=true"))
    enc.load_state_dict(encoder.state_dict())
    captions = [SHORT, "a man with black hair"]
    hidden, shown = encoder.encode(captions), enc.encode(captions)
    assert torch.equal(hidden.words, shown.words)
    for row, caption in zip(shown.padding, captions):
        eot = 1 + bpe_length(enc, caption)                     # SOT + tokens, then the EOT position
        assert not row[:eot + 1].any() and row[eot + 1:].all()
    # its state depends on the last word, which no earlier position has read (the transformer is causal)
    other = enc.encode(["a smiling man"])
    eot = 1 + bpe_length(enc, SHORT)
    assert torch.allclose(other.words[0, :eot - 1], shown.words[0, :eot - 1], atol=1e-5)
    assert not torch.allclose(other.words[0, eot], shown.words[0, eot], atol=1e-3)
    # and a caption's features still do not depend on its batch-mates
    mixed = enc.encode([LONG, SHORT])
    assert torch.equal(mixed.padding[1], shown.padding[0])
    assert torch.allclose(mixed.words[1][~mixed.padding[1]], shown.words[0][~shown.padding[0]], atol=1e-5)


def test_reference_mode_uses_batch_dependent_length():
    enc = TextEncoder.from_config(tiny_cfg("TEXT.FIXED_LENGTH=false"))
    alone = enc.encode([SHORT])
    assert alone.padding is None
    assert alone.words.shape[1] == 1 + bpe_length(enc, SHORT)  # T = EOT index: SOT + tokens, no EOT
    pair = enc.encode([SHORT, "a man with black hair and a beard"])
    assert pair.words.shape[1] == 1 + bpe_length(enc, "a man with black hair and a beard")
    assert enc.encode([SHORT, LONG]).words.shape[1] == 30  # min(30, max EOT)
    # the short caption now carries its EOT state at position T_alone, as the reference does
    assert torch.allclose(pair.words[0, :alone.words.shape[1]], alone.words[0], atol=1e-5)


def test_frozen_and_always_eval(encoder):
    assert not any(p.requires_grad for p in encoder.parameters())
    parent = torch.nn.Sequential(encoder)
    parent.train()
    assert not encoder.training and not any(m.training for m in encoder.modules())
    assert encoder.train(True) is encoder and not encoder.training


@pytest.mark.parametrize("normalize", [False, True])
def test_gradient_reaches_images_through_frozen_tower(encoder, normalize):
    images = (torch.rand(3, 3, 40, 40) * 2 - 1).requires_grad_(True)  # any size: resized to 32
    tokens = encoder.tokenize([SHORT, LONG, "hair"])
    logits = encoder.logits_per_image(images, tokens, normalize=normalize)
    assert logits.shape == (3, 3)
    F.cross_entropy(logits, torch.arange(3)).backward()
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in encoder.parameters())
    # logits are logit_scale.exp() times cosine similarities
    cos = logits / encoder.clip.logit_scale.exp()
    assert cos.abs().max() <= 1 + 1e-5


def test_normalize_changes_the_image_input(encoder):
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    raw, normed = encoder.encode_image(images, normalize=False), encoder.encode_image(images, normalize=True)
    assert raw.shape == (2, 32) and not torch.allclose(raw, normed)


def test_embed_text_is_unit_length(encoder):
    emb = encoder.embed_text([SHORT, LONG])
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_random_init_is_reproducible_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = TextEncoder.from_config(tiny_cfg()), TextEncoder.from_config(tiny_cfg())
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.clip.token_embedding.weight, b.clip.token_embedding.weight)


def test_dimension_mismatch_names_the_keys():
    with pytest.raises(ConfigError, match=r"TEXT\.EMBEDDING_DIM = 512.*TEXT\.SENTENCE_DIM = 512"):
        TextEncoder.from_config(tiny_cfg("TEXT.EMBEDDING_DIM=512", "TEXT.SENTENCE_DIM=512"))
    with pytest.raises(ConfigError, match=r"TEXT\.MAX_WORDS"):
        TextEncoder.from_config(tiny_cfg("TEXT.CUSTOM.CONTEXT_LENGTH=20"))


def test_unknown_model_names_the_key():
    with pytest.raises(ConfigError, match=r"TEXT\.MODEL='ViT-X-99'"):
        TextEncoder.from_config(load_config(None, ["TEXT.MODEL=ViT-X-99"]))


@pytest.mark.parametrize("model", ["custom", "ViT-B-32"])
def test_missing_local_checkpoint_names_the_key(tmp_path, model):
    missing = tmp_path / "nope.pt"
    with pytest.raises(ConfigError, match=r"TEXT\.PRETRAINED = .*does not exist"):
        TextEncoder.from_config(tiny_cfg(f"TEXT.MODEL={model}", f"TEXT.PRETRAINED={missing}"))


def test_offline_pretrained_tag_is_one_clear_error(tmp_path, monkeypatch):
    """Offline with an empty cache: one ConfigError line, quickly, and no network access at all."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path))  # open_clip's URL cache (~/.cache/clip) is empty too

    def no_network(*args, **kwargs):
        raise AssertionError("the text encoder tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(ConfigError) as err:
        TextEncoder.from_config(load_config(None, ["TEXT.MODEL=ViT-B-32", "TEXT.PRETRAINED=openai"]))
    message = str(err.value)
    assert "\n" not in message
    assert "TEXT.PRETRAINED='openai'" in message and "ViT-B-32" in message and "local checkpoint" in message


def test_local_files_load_by_path(tmp_path):
    """A pixelface-clip file rebuilds its own architecture (warning when TEXT.CUSTOM differs); a plain state
    dict loads into TEXT.CUSTOM."""
    cfg = tiny_cfg()
    arch = dict(custom_arch(cfg), TEXT_LAYERS=1)
    torch.manual_seed(1)
    clip = build_custom_clip(arch)
    ours = tmp_path / "clip.pt"
    torch.save({"format": CLIP_FORMAT, "custom": arch, "state_dict": clip.state_dict()}, ours)
    with pytest.warns(UserWarning, match="TEXT_LAYERS: config 2 -> file 1"):
        enc = TextEncoder.from_config(tiny_cfg(f"TEXT.PRETRAINED={ours}"))
    tokens = enc.tokenize([SHORT, LONG])
    assert torch.allclose(enc.encode([SHORT, LONG]).sentence, clip.encode_text(tokens), atol=1e-5)

    plain = tmp_path / "plain.pt"
    same_arch = build_custom_clip(custom_arch(cfg))
    torch.save(same_arch.state_dict(), plain)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc = TextEncoder.from_config(tiny_cfg(f"TEXT.PRETRAINED={plain}"))
    assert torch.allclose(enc.embed_text([SHORT]), F.normalize(same_arch.encode_text(tokens[:1]), dim=-1),
                          atol=1e-5)

    with pytest.raises(ConfigError, match=r"TEXT\.PRETRAINED=.*does not fit TEXT\.CUSTOM"):
        TextEncoder.from_config(tiny_cfg(f"TEXT.PRETRAINED={plain}", "TEXT.CUSTOM.TEXT_WIDTH=32",
                                         "TEXT.EMBEDDING_DIM=32"))


def save_clip_file(path, cfg, seed):
    torch.manual_seed(seed)
    torch.save({"format": CLIP_FORMAT, "custom": custom_arch(cfg), "state_dict": build_custom_clip(custom_arch(cfg)).state_dict()},
               path)


def test_a_pinned_clip_file_that_changed_is_refused(tmp_path):
    """Training pins the sha256 of its local CLIP file; loading with a re-written file is one clear error."""
    path = tmp_path / "clip.pt"
    save_clip_file(path, tiny_cfg(), seed=1)
    cfg = tiny_cfg(f"TEXT.PRETRAINED={path}")
    pin_weights_hash(cfg)
    assert len(cfg.TEXT.PRETRAINED_SHA256) == 64
    TextEncoder.from_config(cfg)  # the pinned file itself loads
    save_clip_file(path, tiny_cfg(), seed=2)  # e.g. pretrained again into the same path
    with pytest.raises(ConfigError, match=r"clip\.pt has changed since this model was trained") as error:
        TextEncoder.from_config(cfg)
    assert cfg.TEXT.PRETRAINED_SHA256[:12] in str(error.value) and "\n" not in str(error.value)
    random_weights = tiny_cfg()
    pin_weights_hash(random_weights)  # nothing to pin for random weights (nor for pretrained tags)
    assert random_weights.TEXT.PRETRAINED_SHA256 == ""


def test_features_stay_float32_under_autocast(encoder):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = encoder.encode([SHORT])
        emb = encoder.embed_text([SHORT])
    assert feats.words.dtype == feats.sentence.dtype == emb.dtype == torch.float32
    assert torch.allclose(feats.sentence, encoder.encode([SHORT]).sentence)


def test_text_states_stop_at_the_last_eot_and_equal_the_whole_context(encoder):
    """Causal attention: computing only the positions through the batch's last EOT changes no state that is read."""
    tokens = encoder.tokenize([SHORT, "a man with black hair"])
    full = text_hidden_states(encoder.clip, tokens, tokens.shape[1])
    short = text_hidden_states(encoder.clip, tokens)
    assert short.shape[1] == int(tokens.argmax(-1).max()) + 1 < tokens.shape[1]
    torch.testing.assert_close(short, full[:, :short.shape[1]], rtol=0, atol=1e-5)
    expected = encoder.clip.encode_text(tokens)
    torch.testing.assert_close(encode_text(encoder.clip, tokens), expected, rtol=0, atol=1e-5)
    feats = encoder.encode([SHORT, "a man with black hair"])
    torch.testing.assert_close(feats.words, full[:, :30], rtol=0, atol=1e-5)
