"""The frozen CLIP text encoder (PixelFace+/code/trainer.py:424-433), plus CLIP's image tower for the
generator's CLIP loss.

Word features are the final hidden states of CLIP's text transformer after `ln_final`, without the text
projection, for at most TEXT.MAX_WORDS positions: SOT, then the caption's BPE tokens. The sentence feature
is CLIP's usual text embedding (the EOT state, projected).

Two ways to cut the word sequence (TEXT.FIXED_LENGTH):
- True (our fix): always MAX_WORDS positions plus a key-padding mask that hides the zero padding and, unless
  TEXT.ATTEND_EOT, the EOT. The text transformer is causal, so a caption's features never depend on its
  batch-mates; for the same reason only the EOT state has read the whole caption (a word's state knows the words
  before it), which is why the reference, whose short captions keep theirs, and ATTEND_EOT let G attend to it.
- False (reference): T = min(MAX_WORDS, largest EOT index in the batch) and no mask, so short captions
  carry their EOT/padding states and every sample's features depend on the batch.

Which CLIP (TEXT.MODEL / TEXT.PRETRAINED): an open_clip architecture with a pretrained tag (ViT-B-32 +
openai for MMCelebA), an open_clip/OpenAI state-dict file, a random init (''), or 'custom': a small
CLIP built from TEXT.CUSTOM, random or loaded from a file written by `pretrain_clip` (the file describes
its own architecture).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.tokenizer import SimpleTokenizer
from torch import nn

from pixelface.core.config import ConfigError, resolve_path
from pixelface.core.files import file_hash

CLIP_FORMAT = "pixelface-clip"  # `format` field of the files pretrain_clip writes
CUSTOM_KEYS = ("EMBED_DIM", "IMAGE_SIZE", "VISION_LAYERS", "VISION_WIDTH", "VISION_PATCH",
               "TEXT_LAYERS", "TEXT_WIDTH", "TEXT_HEADS", "CONTEXT_LENGTH")
VISION_HEAD_WIDTH = 64  # open_clip's default; custom vision heads = VISION_WIDTH // 64
BPE_VOCAB_SIZE = 49408  # open_clip's SimpleTokenizer: 49406 BPE entries + SOT + EOT


@dataclass(frozen=True)
class TextFeatures:
    words: torch.Tensor             # (B, T, EMBEDDING_DIM) float32: ln_final states, no projection
    padding: torch.Tensor | None    # (B, T) bool, True = padding (EOT, zero pad); None when FIXED_LENGTH is False
    sentence: torch.Tensor          # (B, SENTENCE_DIM) float32: projected EOT state (not normalised)
    tokens: torch.Tensor            # (B, context) int64 BPE ids (SOT ... EOT 0 ...)


# ---------------------------------------------------------------------------------------------------
# Building and loading CLIP models


def custom_arch(cfg) -> dict:
    """TEXT.CUSTOM as a plain dict of ints (what pretrain_clip stores next to the weights)."""
    return {key: int(cfg.TEXT.CUSTOM[key]) for key in CUSTOM_KEYS}


def build_custom_clip(arch: dict) -> open_clip.CLIP:
    """A small open_clip CLIP (ViT image tower, causal text transformer) with the CLIP BPE vocabulary."""
    vision = open_clip.CLIPVisionCfg(
        layers=arch["VISION_LAYERS"], width=arch["VISION_WIDTH"], head_width=VISION_HEAD_WIDTH,
        patch_size=arch["VISION_PATCH"], image_size=arch["IMAGE_SIZE"])
    text = open_clip.CLIPTextCfg(
        context_length=arch["CONTEXT_LENGTH"], vocab_size=BPE_VOCAB_SIZE,
        width=arch["TEXT_WIDTH"], heads=arch["TEXT_HEADS"], layers=arch["TEXT_LAYERS"])
    return open_clip.CLIP(embed_dim=arch["EMBED_DIM"], vision_cfg=vision, text_cfg=text)


def _seeded(seed: int, build):
    """Build a randomly initialised model reproducibly without disturbing the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _offline() -> bool:
    try:
        from huggingface_hub import constants
        if constants.is_offline_mode():
            return True
    except ImportError:
        pass
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _fetch_tag_weights(name: str, tag: str) -> str:
    """Local file of open_clip's pretrained `tag` for `name`, downloaded (or found in the cache) by open_clip.

    Any failure (offline, no network, hub error) becomes one ConfigError line. When open_clip would use
    a plain URL download (no huggingface_hub), offline mode is checked first because urllib has no timeout.
    """
    pretrained_cfg = open_clip.get_pretrained_cfg(name, tag)
    offline_hint = (f"TEXT.PRETRAINED={tag!r}: could not load pretrained weights for {name} (offline?). "
                    f"Download them once with internet, or set TEXT.PRETRAINED to a local checkpoint file.")
    via_hub = open_clip.pretrained.has_hf_hub() and pretrained_cfg.get("hf_hub")
    if _offline() and not via_hub:
        url = pretrained_cfg.get("url", "")
        if not os.path.isfile(os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))):
            raise ConfigError(offline_hint)
    try:
        path = open_clip.pretrained.download_pretrained(pretrained_cfg)
    except Exception:  # the hub and urllib raise many kinds; the hint says what to do about all of them
        raise ConfigError(offline_hint) from None
    if not path:
        raise ConfigError(offline_hint)
    return path


def _read_file(path: Path):
    """The object in a checkpoint file, or None when torch.load (weights only) cannot read it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # legacy/non-zip formats cannot be memory-mapped; TorchScript archives are for open_clip
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            return None


def _load_pixelface_clip(cfg, path: Path, ckpt: dict) -> open_clip.CLIP:
    """Rebuild the architecture a pretrain_clip file describes and load its weights."""
    arch = ckpt.get("custom")
    if not isinstance(arch, dict) or set(arch) != set(CUSTOM_KEYS):
        raise ConfigError(f"TEXT.PRETRAINED={str(path)!r}: {CLIP_FORMAT} file without a complete 'custom' "
                          f"architecture (expected keys {', '.join(CUSTOM_KEYS)})")
    differs = {k: (cfg.TEXT.CUSTOM[k], arch[k]) for k in CUSTOM_KEYS if cfg.TEXT.CUSTOM[k] != arch[k]}
    if differs:
        listed = ", ".join(f"{k}: config {c} -> file {f}" for k, (c, f) in differs.items())
        warnings.warn(f"TEXT.CUSTOM differs from the architecture stored in {path}; using the file's ({listed})",
                      stacklevel=3)
    if cfg.TEXT.MODEL != "custom":
        warnings.warn(f"TEXT.MODEL={cfg.TEXT.MODEL!r} but {path} holds a custom CLIP; using the file's",
                      stacklevel=3)
    clip = build_custom_clip(arch)
    try:
        clip.load_state_dict(ckpt["state_dict"])
    except (KeyError, RuntimeError) as e:
        raise ConfigError(f"TEXT.PRETRAINED={str(path)!r}: weights do not fit the stored architecture "
                          f"({str(e).splitlines()[0]})") from None
    return clip


def local_weights_file(cfg) -> Path | None:
    """The local file TEXT.PRETRAINED names, or None for random weights and open_clip pretrained tags."""
    pretrained = cfg.TEXT.PRETRAINED
    if not pretrained:
        return None
    if cfg.TEXT.MODEL != "custom" and cfg.TEXT.MODEL in open_clip.list_models() \
            and pretrained in open_clip.list_pretrained_tags_by_model(cfg.TEXT.MODEL):
        return None
    return resolve_path(cfg, "TEXT.PRETRAINED")


def pin_weights_hash(cfg) -> None:
    """Record the sha256 of the local CLIP file in cfg (TEXT.PRETRAINED_SHA256) unless it is already there.

    Training calls this, so its checkpoints say which file their generator learnt to read; loading them
    later with a different file (e.g. re-pretrained into the same path) then fails loudly.
    """
    path = local_weights_file(cfg)
    if path is not None and path.is_file() and not cfg.TEXT.PRETRAINED_SHA256:
        cfg.TEXT.PRETRAINED_SHA256 = file_hash(path, length=64)


def _local_checkpoint(cfg, expected: str) -> Path:
    path = resolve_path(cfg, "TEXT.PRETRAINED")
    if not path.is_file():
        raise ConfigError(f"{cfg.get('_source', 'config')}: TEXT.PRETRAINED = {cfg.TEXT.PRETRAINED!r} "
                          f"({path}) does not exist; expected {expected}")
    pinned = cfg.TEXT.PRETRAINED_SHA256
    if pinned and file_hash(path, length=len(pinned)) != pinned:
        raise ConfigError(f"TEXT.PRETRAINED = {path} has changed since this model was trained (sha256 "
                          f"{file_hash(path)}..., expected {pinned[:12]}...): put the original file back; the "
                          f"generator learnt to read that file's features")
    return path


def _load_custom(cfg) -> open_clip.CLIP:
    """TEXT.MODEL='custom': random TEXT.CUSTOM, a pretrain_clip file, or a state dict for TEXT.CUSTOM."""
    if not cfg.TEXT.PRETRAINED:
        return _seeded(cfg.SEED, lambda: build_custom_clip(custom_arch(cfg)))
    path = _local_checkpoint(cfg, f"a {CLIP_FORMAT} file written by scripts/pretrain_clip.py or a state dict")
    ckpt = _read_file(path)
    if isinstance(ckpt, dict) and ckpt.get("format") == CLIP_FORMAT:
        return _load_pixelface_clip(cfg, path, ckpt)
    if not isinstance(ckpt, dict):
        raise ConfigError(f"TEXT.PRETRAINED={str(path)!r}: not a readable weights-only checkpoint")
    clip = build_custom_clip(custom_arch(cfg))
    try:
        clip.load_state_dict(ckpt.get("state_dict", ckpt))
    except RuntimeError as e:
        raise ConfigError(f"TEXT.PRETRAINED={str(path)!r}: does not fit TEXT.CUSTOM "
                          f"({str(e).splitlines()[0]})") from None
    return clip


def _load_named(cfg) -> tuple[open_clip.CLIP, tuple | None]:
    """An open_clip architecture: random (''), a pretrained tag, or a local file.

    A local file is loaded into TEXT.MODEL as named, so OpenAI weights kept in a file need
    TEXT.MODEL=<name>-quickgelu (the tag route switches QuickGELU on by itself).
    """
    name, pretrained = cfg.TEXT.MODEL, cfg.TEXT.PRETRAINED
    if name not in open_clip.list_models():
        raise ConfigError(f"TEXT.MODEL={name!r} is neither 'custom' nor an open_clip architecture "
                          f"(e.g. ViT-B-32; see open_clip.list_models())")
    model_cfg = open_clip.get_model_config(name)
    text_cfg = model_cfg.get("text_cfg", {})
    if (model_cfg.get("custom_text") or "multimodal_cfg" in model_cfg or text_cfg.get("hf_tokenizer_name")
            or text_cfg.get("pool_type", "argmax") != "argmax"):
        raise ConfigError(f"TEXT.MODEL={name!r}: expected an open_clip CLIP with the CLIP BPE text transformer "
                          f"(e.g. ViT-B-32, ViT-B-16, ViT-L-14)")
    if not pretrained:
        return _seeded(cfg.SEED, lambda: open_clip.create_model(name)), None
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained in tags:
        weights = _fetch_tag_weights(name, pretrained)
        tag_cfg = open_clip.get_pretrained_cfg(name, pretrained)
        # open_clip 3.x does not switch to QuickGELU for the OpenAI tags by itself; those weights need it.
        clip = open_clip.create_model(name, pretrained=weights,
                                      force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)))
        stats = (tag_cfg["mean"], tag_cfg["std"]) if "mean" in tag_cfg and "std" in tag_cfg else None
        return clip, stats
    path = _local_checkpoint(cfg, f"a pretrained tag of {name} ({', '.join(tags) or 'none'}) or a checkpoint file")
    ckpt = _read_file(path)
    if isinstance(ckpt, dict) and ckpt.get("format") == CLIP_FORMAT:
        return _load_pixelface_clip(cfg, path, ckpt), None
    del ckpt  # open_clip re-reads the file with its own format conversions
    try:
        return open_clip.create_model(name, pretrained=str(path)), None
    except Exception as e:  # open_clip raises RuntimeError/KeyError/ValueError depending on the mismatch
        raise ConfigError(f"TEXT.PRETRAINED={str(path)!r}: could not load it as {name} weights "
                          f"({str(e).splitlines()[0]})") from None


def load_clip(cfg) -> tuple[open_clip.CLIP, tuple | None]:
    """(CLIP as TEXT.MODEL/TEXT.PRETRAINED say, the pretrained tag's image (mean, std) or None)."""
    if cfg.TEXT.MODEL == "custom":
        return _load_custom(cfg), None
    return _load_named(cfg)


def _text_dims(clip: open_clip.CLIP) -> tuple[int, int]:
    """(text width, projected width) of a CLIP text tower."""
    width = clip.ln_final.normalized_shape[0]
    proj = clip.text_projection
    out = proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1]
    return width, out


def _check_dims(cfg, clip: open_clip.CLIP):
    width, out = _text_dims(clip)
    problems = []
    if cfg.TEXT.EMBEDDING_DIM != width:
        problems.append(f"TEXT.EMBEDDING_DIM = {cfg.TEXT.EMBEDDING_DIM} but the CLIP text width is {width}")
    if cfg.TEXT.SENTENCE_DIM != out:
        problems.append(f"TEXT.SENTENCE_DIM = {cfg.TEXT.SENTENCE_DIM} but the CLIP embedding width is {out}")
    if not 1 <= cfg.TEXT.MAX_WORDS <= clip.context_length:
        problems.append(f"TEXT.MAX_WORDS = {cfg.TEXT.MAX_WORDS} must lie in 1..{clip.context_length} "
                        f"(the CLIP context length, TEXT.CUSTOM.CONTEXT_LENGTH for custom models)")
    if problems:
        raise ConfigError(f"{cfg.get('_source', 'config')}: " + "; ".join(problems)
                          + f" (TEXT.MODEL={cfg.TEXT.MODEL!r}, TEXT.PRETRAINED={cfg.TEXT.PRETRAINED!r})")


# ---------------------------------------------------------------------------------------------------
# Shared helpers (also used by pretrain_clip)


def clip_image_input(images: torch.Tensor, size: int, mean: torch.Tensor, std: torch.Tensor,
                     normalize: bool) -> torch.Tensor:
    """Images in [-1,1] (B,3,H,W) -> CLIP's input: bilinear resize to size², then optionally CLIP mean/std.

    normalize=False keeps the [-1,1] range, as the reference feeds G's output to CLIP
    (PixelFace+/code/miscc/losses.py:87-98).
    The resize is torchvision's tensor Resize of the time (bilinear, no antialias).
    """
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    if normalize:
        images = ((images + 1) / 2 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    return images


def text_hidden_states(clip: open_clip.CLIP, tokens: torch.Tensor, positions: int | None = None) -> torch.Tensor:
    """(B, positions, width): token + position embeddings through the causal transformer and ln_final, for the
    first `positions` tokens (default: through the batch's last EOT).

    Attention is causal, so no position reads a later one: these states are those of the whole context, and the
    padding after the last EOT (most of CLIP's 77 positions for a short caption) need not be computed.
    """
    positions = int(tokens.argmax(dim=-1).max()) + 1 if positions is None else positions
    x = clip.token_embedding(tokens[:, :positions]) + clip.positional_embedding[:positions]
    mask = None if clip.attn_mask is None else clip.attn_mask[:positions, :positions]
    x = clip.transformer(x, attn_mask=mask)
    return clip.ln_final(x)


def project_eot(clip: open_clip.CLIP, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Sentence embedding: the state at the EOT token (the largest id, so argmax finds it), projected."""
    pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), tokens.argmax(dim=-1)]
    proj = clip.text_projection
    return proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj


def encode_text(clip: open_clip.CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """clip.encode_text(tokens) (the projected EOT state), computed through the batch's last EOT only."""
    return project_eot(clip, text_hidden_states(clip, tokens), tokens)


# ---------------------------------------------------------------------------------------------------
# The module


class TextEncoder(nn.Module):
    """Frozen CLIP: word/sentence features for G and D, image embeddings (with autograd) for the CLIP loss."""

    def __init__(self, clip: open_clip.CLIP, max_words: int, fixed_length: bool, image_stats: tuple | None = None,
                 attend_eot: bool = False):
        super().__init__()
        self.clip = clip.float()
        self.tokenizer = SimpleTokenizer(context_length=clip.context_length)
        self.max_words = max_words          # T of the word features (fixed mode) or its cap (reference mode)
        self.fixed_length = fixed_length    # pad to max_words + mask, or reference batch-dependent T
        self.attend_eot = attend_eot        # fixed mode: the EOT state stays visible to G (whole-caption context)
        self.image_size = clip.visual.image_size[0]
        mean, std = image_stats or (open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
        self.register_buffer("image_mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("image_std", torch.tensor(std, dtype=torch.float32), persistent=False)
        self.requires_grad_(False)
        self.train(False)

    @classmethod
    def from_config(cls, cfg) -> "TextEncoder":
        clip, image_stats = load_clip(cfg)
        _check_dims(cfg, clip)
        return cls(clip, cfg.TEXT.MAX_WORDS, cfg.TEXT.FIXED_LENGTH, image_stats, cfg.TEXT.ATTEND_EOT)

    def train(self, mode: bool = True) -> "TextEncoder":
        """Always eval: CLIP is frozen, whatever its parent module is switched to."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.clip.token_embedding.weight.device

    def tokenize(self, captions: list[str]) -> torch.Tensor:
        """(B, context) int64 CLIP BPE ids on this module's device."""
        if isinstance(captions, str) or not captions or not all(isinstance(c, str) for c in captions):
            raise TypeError(f"expected a non-empty list of caption strings, got {type(captions).__name__}")
        return self.tokenizer(list(captions)).to(self.device)

    @torch.no_grad()
    def encode(self, captions: list[str]) -> TextFeatures:
        """Word features, padding mask and sentence embedding of each caption (detached, as in the reference)."""
        tokens = self.tokenize(captions)
        with torch.autocast(self.device.type, enabled=False):  # fp32 features even inside an AMP region
            eot = tokens.argmax(dim=-1)  # = number of valid positions (SOT + BPE tokens)
            hidden = text_hidden_states(self.clip, tokens, max(self.max_words, int(eot.max()) + 1))
            sentence = project_eot(self.clip, hidden, tokens)
        if self.fixed_length:
            length = self.max_words
            last = eot + 1 if self.attend_eot else eot          # first hidden position
            padding = torch.arange(length, device=tokens.device)[None, :] >= last[:, None]
        else:
            length = min(self.max_words, int(eot.max()))
            padding = None
        return TextFeatures(words=hidden[:, :length].contiguous(), padding=padding,
                            sentence=sentence, tokens=tokens)

    def encode_image(self, images: torch.Tensor, normalize: bool) -> torch.Tensor:
        """(B, SENTENCE_DIM) image embeddings of images in [-1,1]; differentiable w.r.t. the images."""
        x = clip_image_input(images, self.image_size, self.image_mean, self.image_std, normalize)
        return self.clip.encode_image(x)

    def logits_per_image(self, images: torch.Tensor, tokens: torch.Tensor, normalize: bool) -> torch.Tensor:
        """(B, B) logit_scale.exp() · cos(image_i, text_j): the input of the reference CLIP loss."""
        image = F.normalize(self.encode_image(images, normalize), dim=-1)
        with torch.no_grad():
            text = F.normalize(encode_text(self.clip, tokens.to(self.device)), dim=-1)
        return self.clip.logit_scale.exp() * image @ text.t()

    @torch.no_grad()
    def embed_text(self, captions: list[str]) -> torch.Tensor:
        """(B, SENTENCE_DIM) unit-length sentence embeddings (for CLIP score)."""
        with torch.autocast(self.device.type, enabled=False):
            return F.normalize(encode_text(self.clip, self.tokenize(captions)), dim=-1)
