"""Every configuration key, its default and what it means, in one place; and the project home.

YAML files in cfg/ only override these defaults; `--set KEY.SUB=VALUE` overrides on the command line
are parsed to the default's type. Relative paths in a config are resolved against project_home() (the
source checkout when the package runs from one), the one place that decides where the project's files are.
"""
from __future__ import annotations

import difflib
import math
import os
import re
from pathlib import Path

import yaml
from easydict import EasyDict

PACKAGE_DIR = Path(__file__).resolve().parents[1]   # pixelface/, this file being pixelface/core/config.py
HOME_VARIABLE = "PIXELFACE_HOME"
# The wheel ships cfg/*.yml here (setup.py copies them at build time); a checkout has only cfg/.
PACKAGED_CONFIGS = PACKAGE_DIR / "configs"


def checkout_root() -> Path | None:
    """The source checkout the package runs from (an editable install or PYTHONPATH=code), or None for an
    installed copy. Recognised by its layout, not by name: <root>/code/pixelface with <root>/cfg/ and
    <root>/code/main.py next to it."""
    root = PACKAGE_DIR.parents[1]
    in_code = PACKAGE_DIR.parent == root / "code"
    return root if in_code and (root / "cfg").is_dir() and (root / "code" / "main.py").is_file() else None


def project_home() -> Path:
    """The folder relative config paths and the default models/, runs/ and data/.cache/ belong to:
    $PIXELFACE_HOME when set, else the source checkout the package runs from, else the working directory
    (an installed package has no folder of its own to write into)."""
    home = os.environ.get(HOME_VARIABLE)
    if home:
        return Path(home).expanduser().resolve()
    return checkout_root() or Path.cwd()


class ConfigError(ValueError):
    """A config file or override names an unknown key, a wrong type or a missing path."""


PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def plain_name_problem(name) -> str | None:
    """Why `name` cannot become one path component (a run name, a dataset id…), or None when it can:
    letters, digits, '.', '_' and '-', starting with a letter or digit, so never '..', '/' or absolute."""
    if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name):
        return (f"{name!r} is not a plain name (letters, digits, '.', '_', '-', starting with a letter "
                f"or digit; no '/', '..' or spaces)")
    return None


class Check:
    """A constraint on one key's value: `problem(value)` says what is wrong, or None."""

    def __init__(self, problem, text: str):
        self.problem, self.text = problem, text

    def __repr__(self):
        return self.text


def one_of(*choices) -> Check:
    return Check(lambda v: None if v in choices else f"expected one of {', '.join(map(repr, choices))}",
                 f"one of {', '.join(map(repr, choices))}")


def at_least(lo, above: bool = False) -> Check:
    """v >= lo (or v > lo with `above`)."""
    sign = ">" if above else ">="
    return Check(lambda v: None if (v > lo if above else v >= lo) else f"expected a value {sign} {lo}",
                 f"{sign} {lo}")


def between(lo, hi, hi_open: bool = False) -> Check:
    """lo <= v <= hi (or < hi with `hi_open`)."""
    right = ")" if hi_open else "]"
    return Check(lambda v: None if lo <= v and (v < hi if hi_open else v <= hi)
                 else f"expected a value in [{lo}, {hi}{right}", f"in [{lo}, {hi}{right}")


PLAIN = Check(plain_name_problem, "a plain name")
# A relative path inside a folder (DATA.INDEX, DATA.IMAGE_DIR…): never absolute, never '..'.
INSIDE = Check(lambda v: None if v and not Path(v).is_absolute() and ".." not in Path(v).parts
               else "expected a relative path inside DATA.ROOT (no leading '/', no '..')",
               "a relative path without '..'")
POSITIVE = at_least(1)
NON_NEGATIVE = at_least(0)


def _names_problem(value) -> str | None:
    if not isinstance(value, (list, tuple)) or any(plain_name_problem(name) for name in value):
        return "expected a list of plain names"
    return None


NAMES = Check(_names_problem, "a list of plain names")


def _k(default, doc, check: Check | None = None):
    return (default, doc, check)


# Each leaf is (default, one-line comment). Nested dicts are sections.
SCHEMA = {
    "CONFIG_NAME": _k("pixelface", "run name prefix; runs land in <out>/<CONFIG_NAME>-<NNNNN>", PLAIN),
    "SEED": _k(3201, "global seed; rank r uses SEED + r for its own randomness", NON_NEGATIVE),
    "DATA": {
        "NAME": _k("mmceleba", "dataset name recorded in run folders and metric caches", PLAIN),
        "ROOT": _k("data/mmceleba", "dataset folder in the MMCelebA layout (relative: to the project home)"),
        "INDEX": _k("dataset2.json", "split/caption index file inside ROOT", INSIDE),
        "IMAGE_DIR": _k("images", "image folder inside ROOT", INSIDE),
        "IMAGE_EXT": _k("jpg", "image file extension (jpg or png)", one_of("jpg", "jpeg", "png")),
        "MASK_DIR": _k("masks", "mask folder inside ROOT", INSIDE),
        "MASK_EXT": _k("png", "mask file extension (jpg or png)", one_of("png", "jpg", "jpeg")),
        "MASK_KIND": _k("color", "'color': CelebAMask-HQ palette RGB masks; 'label': label-id PNGs", one_of("color", "label")),
        "MASK_ORDER": _k("celebamask", "label ids of MASK_KIND 'label' masks: 'celebamask' (CelebAMask-HQ order) or 'faceparsing' (face-parsing.PyTorch/BiSeNet order, remapped on reading)", one_of("celebamask", "faceparsing")),
        "MASK_SNAP_DISTANCE": _k(80.0, "colour pixels farther than this (RGB L2) from every palette colour are off-palette", between(0, 442)),
        "MASK_MAX_OFF_PALETTE": _k(0.05, "largest tolerated share of off-palette pixels before a mask is an error", between(0, 1)),
        "MASK_RESIZE": _k("bilinear", "how the colour mask fed to the networks is resized: 'bilinear' (reference) or 'nearest'", one_of("bilinear", "nearest")),
        "IMAGE_SIZE": _k(256, "training resolution of images and masks", at_least(16)),
        "WORDS_NUM": _k(30, "captions are cut to at most this many words (reference: random order-preserving subset)", POSITIVE),
        "EVAL_CAPTION": _k(0, "caption slot (0-9) used for evaluation and fixed sample grids", between(0, 9)),
        "NUM_WORKERS": _k(2, "DataLoader worker processes per rank", NON_NEGATIVE),
        "SYNTHESIZE": _k(False, "render the synthetic face dataset into ROOT when it is missing"),
        "SYNTH_NUM": _k(5000, "number of synthetic faces to render when SYNTHESIZE is on", at_least(10)),
        "SYNTH_SIZE": _k(64, "resolution of the rendered synthetic faces", at_least(32)),
        "SYNTH_SEED": _k(0, "seed of the synthetic face renderer", NON_NEGATIVE),
    },
    "TEXT": {
        "MODEL": _k("ViT-B-32", "open_clip architecture name, or 'custom' for the CUSTOM architecture below"),
        "PRETRAINED": _k("openai", "open_clip pretrained tag, or a local checkpoint path; '' for random weights"),
        "PRETRAINED_SHA256": _k("", "sha256 of the local PRETRAINED file; training records it, every later load checks it ('' = unchecked)"),
        "MAX_WORDS": _k(30, "text positions handed to the generator (T <= 30)", POSITIVE),
        "FIXED_LENGTH": _k(True, "pad words to MAX_WORDS with a padding mask (fix); False: reference batch-dependent T, no mask"),
        "ATTEND_EOT": _k(False, "with FIXED_LENGTH, G may attend to the caption's EOT state, the only one that has read the whole caption (the reference's short captions keep theirs); False hides it with the padding"),
        "EMBEDDING_DIM": _k(512, "width of the word features (CLIP text width)", POSITIVE),
        "SENTENCE_DIM": _k(512, "width of the sentence embedding (CLIP projection)", POSITIVE),
        "PRETRAIN_IF_MISSING": _k(False, "when PRETRAINED is a missing local file, pretrain a CUSTOM CLIP on the dataset into it"),
        "PRETRAIN_EPOCHS": _k(10, "epochs of that contrastive pretraining", POSITIVE),
        "PRETRAIN_HARD_NEGATIVES": _k(False, "in that pretraining, also score each image against its caption plus a sentence naming an attribute none of its captions names (rosy cheeks, pale skin, lipstick, heavy makeup), as NegCLIP does"),
        "CUSTOM": {
            "EMBED_DIM": _k(128, "custom CLIP: joint embedding width", POSITIVE),
            "IMAGE_SIZE": _k(64, "custom CLIP: vision tower input size", at_least(16)),
            "VISION_LAYERS": _k(4, "custom CLIP: vision transformer depth", POSITIVE),
            "VISION_WIDTH": _k(128, "custom CLIP: vision transformer width", POSITIVE),
            "VISION_PATCH": _k(8, "custom CLIP: vision patch size", POSITIVE),
            "TEXT_LAYERS": _k(4, "custom CLIP: text transformer depth", POSITIVE),
            "TEXT_WIDTH": _k(128, "custom CLIP: text transformer width", POSITIVE),
            "TEXT_HEADS": _k(4, "custom CLIP: text attention heads", POSITIVE),
            "CONTEXT_LENGTH": _k(77, "custom CLIP: token context length", POSITIVE),
        },
    },
    "MODEL": {
        "SIZE": _k(256, "output resolution: 64, 256 or 1024 (each stage multiplies it by 4)", one_of(64, 256, 1024)),
        "STYLE_DIM": _k(512, "z and w width", POSITIVE),
        "N_MLP": _k(8, "mapping network depth", POSITIVE),
        "LR_MLP": _k(0.01, "learning-rate multiplier of the mapping network", at_least(0, above=True)),
        "LR_TEXT_MLP": _k(0.01, "learning-rate multiplier of the text MLP before GCMF (reference: LR_MLP's 0.01)", at_least(0, above=True)),
        "CHANNEL_MULTIPLIER": _k(2, "StyleGAN2 channel multiplier of G and D", POSITIVE),
        "CHANNEL_MAX": _k(512, "cap on every feature-map width of G and D", at_least(16)),
        "MASK_DIM": _k(128, "mask-encoder feature width (GCMF query width)", POSITIVE),
        "MASK_CONTEXT": _k(0, "0 (reference: one 3x3 conv encodes the mask), or that many residual dilated 3x3 convs after it, so each pixel's mask feature sees the face around it (3 layers: 1/8 of the image), e.g. a cheek below an eye (not in the paper)", NON_NEGATIVE),
        "MASK_KERNEL": _k(3, "side of the mask encoder's conv: 3 (reference mask_cov) or 1 (each pixel's feature is its own class's, so every per-pixel path draws region edges crisp; not in the paper)", one_of(1, 3)),
        "MASK_POINT_CHANNELS": _k(0, "with MASK_KERNEL 3: this many of the MASK_DIM mask features see only their own pixel (crisp at region edges) while the rest keep the 3x3 view of the neighbours; 0 = the reference (not in the paper)", NON_NEGATIVE),
        "MASK_INPUT": _k("color", "'color': 3-channel palette mask (reference); 'onehot': 19-channel label one-hot; 'onehot_zones': that plus the cheeks and eyelids placed from the eyes (not in the paper)", one_of("color", "onehot", "onehot_zones")),
        "GCMF_GATE": _k(False, "add the paper figure's correlation gate to GCMF (our reading; reference code has none)"),
        "GCMF_DROPOUT": _k(0.06, "GCMF attention dropout, applied per element and per word (reference 0.06 each)", between(0, 1, hi_open=True)),
        "GCMF_CHUNK": _k(0, "GCMF processes at most this many query rows at once; 0: 16384 on CPU (cache-sized), all at once on GPU (fewer launches)", NON_NEGATIVE),
        "D_SPECTRAL_NORM": _k("torch", "power iteration of D's text-head spectral norm: 'torch' (u then v, training only) or 'reference' (v then u on every call)", one_of("torch", "reference")),
        "D_COND_PIXEL_RES": _k(0, "0 (reference: D reads the caption at 4x4 only), or a resolution of D's body where a per-pixel head also scores image against caption (not in the paper)", NON_NEGATIVE),
        "FOLD_SKIP": _k("none", "also add a linear projection of each stage's per-pixel rows to every fold step's output: 'none' (reference: they pass only through the positional fold), 'mask' (mask features), 'fusion' (mask features and GCMF output)", one_of("none", "mask", "fusion")),
        "UNFOLD_BLUR": _k(False, "a [1,2,1]x[1,2,1]/16 low-pass after every Unfold, so the four sub-pixel channel groups cannot paint a 2-pixel pattern (not in the paper; False = the reference)"),
        "UNFOLD_BLUR_FINAL": _k(True, "with UNFOLD_BLUR, also blur after the last Unfold, the one that makes the output's pixels; false leaves them to the last 3x3 conv, so a 2-pixel detail (an iris, a lip line) can be drawn"),
        "PIXEL_STRIPES": _k(False, "two zero-initialised 1x1 heads on the last fold step give the amplitude of a 2-pixel stripe along each axis, added to the image: with the Unfold blurred, the only way to draw detail at the pixel grid's frequency (hair strands); not in the paper"),
        "PIXEL_STRIPES_CLASSES": _k([], "with PIXEL_STRIPES, the stripes only where the one-hot mask has these classes, e.g. [hair] (their amplitudes times the pixel's share of them); [] = everywhere (not in the paper)", NAMES),
        "TEXT_TO_W": _k(False, "also shift every w by a linear map of the caption's mean word feature, a global text route beside GCMF's per-pixel one (not in the paper; False = the reference)"),
        "G_BORDER": _k("zero", "what G's 3x3 convs and its RGB-skip upsampling read beyond the image: 'zero' (reference, StyleGAN2: a flat colour fades toward the border, 0.75 of it on the outer row per upsampling, and G must learn to undo that) or 'replicate' (the edge pixels repeated: a flat colour stays flat to the border; not in the paper), or 'replicate_skip' (the skip upsampling only)", one_of("zero", "replicate", "replicate_skip")),
        "UNFOLD_INIT": _k("random", "init of the convs before each Unfold: 'random' (reference) or 'icnr' (Unfold starts as nearest upsampling: no checkerboard)", one_of("random", "icnr")),
    },
    "TRAIN": {
        "BATCH_SIZE": _k(4, "images per process per step", POSITIVE),
        "TOTAL_KIMG": _k(25000.0, "training length in thousands of real images shown (all ranks together)", at_least(0, above=True)),
        "LR_G": _k(0.002, "generator learning rate before the lazy-regularisation correction", at_least(0, above=True)),
        "LR_D": _k(0.004, "discriminator learning rate before the lazy-regularisation correction", at_least(0, above=True)),
        "LR_RAMPDOWN_KIMG": _k(0.0, "if > 0, G's and D's learning rates fall linearly over the last this many kimg of TOTAL_KIMG to LR_RAMPDOWN_FINAL of their value (not in the paper; 0 = constant, the reference)", NON_NEGATIVE),
        "LR_RAMPDOWN_FINAL": _k(0.1, "learning-rate fraction reached at TOTAL_KIMG when LR_RAMPDOWN_KIMG > 0", between(0, 1)),
        "BETA2": _k(0.99, "Adam beta2 before the lazy-regularisation correction (beta1 is 0)", between(0, 1, hi_open=True)),
        "R1_GAMMA": _k(10.0, "R1 weight gamma", NON_NEGATIVE),
        "R1_INTERVAL": _k(16, "R1 every this many steps (lazy regularisation)", POSITIVE),
        "R1_IMAGE_ONLY": _k(False, "penalise the image channels only (fix); False: image and mask channels (reference)"),
        "PL_WEIGHT": _k(2.0, "path-length regularisation weight", NON_NEGATIVE),
        "PL_INTERVAL": _k(4, "path-length regularisation every this many steps", POSITIVE),
        "PL_BATCH_SHRINK": _k(2, "path-length batch = BATCH_SIZE // this", POSITIVE),
        "PL_DECAY": _k(0.01, "decay of the running mean path length", between(0, 1)),
        "CLIP_WEIGHT": _k(1.0, "weight of the CLIP contrastive loss on G", NON_NEGATIVE),
        "CLIP_SCHEDULE": _k(False, "ramp the CLIP weight as min(1, 0.03 + 0.005 epoch) x CLIP_WEIGHT (reference computed it, never used it)"),
        "CLIP_NORMALIZE": _k(False, "map G output to [0,1] and CLIP mean/std before the CLIP loss (fix); False: raw [-1,1] (reference)"),
        "RECON_WEIGHT": _k(0.0, "weight of an L1 loss between G's image and the real image of the same mask and caption (not in the paper; 0 = off)", NON_NEGATIVE),
        "RECON_FADE_KIMG": _k(0.0, "if > 0, the L1 weight falls linearly from RECON_WEIGHT to 0 over this many kimg, then stays off: the L1 term lays out the faces early, the adversarial terms alone shape them after (0 = constant)", NON_NEGATIVE),
        "RECON_NAMED_WEIGHT": _k(0.0, "weight of an L1 loss to the real face of the same mask and caption inside the regions whose colour the caption names only (hair for a hair colour, lips for lipstick, skin for pale skin / rosy cheeks / makeup / beard), each region weighed alike (not in the paper; 0 = off)", NON_NEGATIVE),
        "RECON_NAMED_ZONES": _k(False, "with RECON_NAMED_WEIGHT, place what a caption names for the skin where it is worn: rosy cheeks on the cheeks, make-up on the eyelids (zones from the eye positions, pixelface/data/face_zones.py), pale skin and beards on the skin (not in the paper)"),
        "RECON_ZONE_CHROMA_WEIGHT": _k(0.0, "weight of an L1 loss to the real face of the same mask and caption on the colour of the lips, cheeks and eyelids relative to the face's own skin, on every face whether or not its caption names lipstick, blush or make-up (not in the paper; 0 = off)", NON_NEGATIVE),
        "RECON_ZONE_NAMED_BOOST": _k(0.0, "with RECON_ZONE_CHROMA_WEIGHT, a make-up zone whose attribute the caption names (lips: lipstick, cheeks: rosy cheeks, eyelids: makeup) weighs 1 + this in that term, the others 1: while G cannot yet tell the captions apart, the few faces that ask for an attribute are not outvoted by the many that do not (not in the paper; 0 = all alike)", NON_NEGATIVE),
        "RECON_ZONE_NAMED_SHARE": _k(0.0, "with RECON_ZONE_CHROMA_WEIGHT, instead of RECON_ZONE_NAMED_BOOST: the share of each make-up zone's weight in that term carried by the faces whose captions name its make-up, the weight per zone derived from how often the training captions name it (an attribute one face in ten asks for and one that one in three asks for are tipped alike; not in the paper; 0 = off)", between(0, 1, hi_open=True)),
        "MODE_SEEKING_WEIGHT": _k(0.0, "weight of a diversity-sensitive term in G main (not in the paper; 0 = off): the batch's second half repeats the first half's masks and captions with other z, and G is rewarded, up to MODE_SEEKING_CAP, for image distance per unit of z distance between each such pair", NON_NEGATIVE),
        "MODE_SEEKING_CAP": _k(1.0, "the mode-seeking reward stops growing at this mean-absolute image distance per unit of mean-absolute z distance", at_least(0, above=True)),
        "MISMATCH_ON": _k("fake", "image paired with rotated text in the D mismatch term: 'fake' (reference) or 'real'", one_of("fake", "real")),
        "MISMATCH_HARD_NEGATIVES": _k(0.0, "fraction of D's mismatched captions that are the face's own caption plus a sentence naming an attribute none of its captions names (rosy cheeks, pale skin, lipstick, heavy makeup) instead of another face's caption, so D learns that an asked attribute must be seen (not in the paper; 0 = off)", between(0, 1)),
        "EMA_HALFLIFE_KIMG": _k(1.25, "G_ema half-life in thousands of images (1.25 reproduces the reference at batch 4)", NON_NEGATIVE),
        "EMA_RAMPUP": _k(0.0, "if > 0, half-life is at most this fraction of the images seen so far", NON_NEGATIVE),
        "AMP": _k("auto", "autocast: 'bf16' in every phase (GPU, or a CPU with AMX/AVX512-BF16), 'fp16' in the main phases (GPU), 'none' (float32), or 'auto': bf16 on a CPU with bf16 units for a generator of the reference's width (MODEL.CHANNEL_MAX >= 256), float32 elsewhere", one_of("auto", "none", "bf16", "fp16")),
        "TF32": _k(True, "allow TF32 matmuls on GPU"),
        "CHANNELS_LAST": _k(False, "channels_last memory format on GPU"),
        "COMPILE": _k(False, "torch.compile G and D for the main D and G phases; R1 and path length need double backward, which compiled graphs lack, and stay eager (the first steps are slow while it compiles)"),
        "MAX_NONFINITE_SKIPS": _k(10, "stop with an error (and a checkpoint) after this many consecutive non-finite losses", NON_NEGATIVE),
        "LOG_KIMG": _k(1.0, "log line and scalars every this many kimg (0: only at the end)", NON_NEGATIVE),
        "SAMPLE_KIMG": _k(10.0, "sample grid every this many kimg", NON_NEGATIVE),
        "SNAPSHOT_KIMG": _k(50.0, "checkpoint every this many kimg (0: only at the end and on SIGTERM)", NON_NEGATIVE),
        "SNAPSHOT_MINUTES": _k(0.0, "if > 0, also a checkpoint whenever this many minutes of wall time have passed since the last one (preemptible clusters think in minutes lost, not kimg)", NON_NEGATIVE),
        "STALL_TIMEOUT_S": _k(600.0, "progress watchdog: when no rank has made progress for this many seconds, every rank stops with one line naming the rank that stopped first and what it was doing (exit code 75; the newest checkpoint stays loadable); 0 = off. Beats come at every phase of a step, every evaluation batch and every checkpoint", NON_NEGATIVE),
        "KEEP_CHECKPOINTS": _k(3, "keep the last K periodic checkpoints (plus best and final)", POSITIVE),
        "EVAL_KIMG": _k(0.0, "run the evaluation hook every this many kimg (0: never)", NON_NEGATIVE),
        "EVAL_METRICS": _k(["fid_clip", "clip_score"], "metrics of the periodic evaluation (names from pixelface.evaluation.metrics.METRICS)"),
        "EVAL_METRIC": _k("fid_clip", "value (a key the EVAL_METRICS return) that decides checkpoints/best.pt"),
        "EVAL_NUM": _k(1000, "images generated by the periodic evaluation", at_least(2)),
        "GRID_SIZE": _k(8, "number of fixed test items in the sample grids", POSITIVE),
    },
}


# Keys that act only together with a partner key: set away from its default while the partner is off, such a key
# would change nothing, silently, so a config that does so is an error. Only a partner switched off by a later
# layer (the overrides, after the file: `--set TRAIN.RECON_WEIGHT=0` ablating a config that fades it) parks the
# keys an earlier layer set. (key, partner, partner is on, what "on" is)
PARTNERS = [
    ("TEXT.ATTEND_EOT", "TEXT.FIXED_LENGTH", bool, "true"),
    ("MODEL.MASK_POINT_CHANNELS", "MODEL.MASK_KERNEL", lambda v: v == 3, "3"),
    ("MODEL.UNFOLD_BLUR_FINAL", "MODEL.UNFOLD_BLUR", bool, "true"),
    ("MODEL.PIXEL_STRIPES_CLASSES", "MODEL.PIXEL_STRIPES", bool, "true"),
    ("TRAIN.LR_RAMPDOWN_FINAL", "TRAIN.LR_RAMPDOWN_KIMG", lambda v: v > 0, "> 0"),
    ("TRAIN.RECON_FADE_KIMG", "TRAIN.RECON_WEIGHT", lambda v: v > 0, "> 0"),
    ("TRAIN.RECON_NAMED_ZONES", "TRAIN.RECON_NAMED_WEIGHT", lambda v: v > 0, "> 0"),
    ("TRAIN.RECON_ZONE_NAMED_BOOST", "TRAIN.RECON_ZONE_CHROMA_WEIGHT", lambda v: v > 0, "> 0"),
    ("TRAIN.RECON_ZONE_NAMED_SHARE", "TRAIN.RECON_ZONE_CHROMA_WEIGHT", lambda v: v > 0, "> 0"),
    ("TRAIN.MODE_SEEKING_CAP", "TRAIN.MODE_SEEKING_WEIGHT", lambda v: v > 0, "> 0"),
]
# Keys that are alternatives to each other: at most one of each group may be set away from its default.
ALTERNATIVES = [("TRAIN.RECON_ZONE_NAMED_BOOST", "TRAIN.RECON_ZONE_NAMED_SHARE")]


def _value(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _is_default(cfg, key: str) -> bool:
    return _value(cfg, key) == _leaf(key)[0][0]


def check_partners(cfg: EasyDict, source: str = "config", layers: dict[str, int] | None = None):
    """One ConfigError for the first key that would act on nothing (PARTNERS) or that is set together with its
    alternative (ALTERNATIVES). `layers`: key -> the last layer that set it (1 the file, 2 the overrides; 0 the
    defaults)."""
    layer = (layers or {}).get
    for key, partner, is_on, on in PARTNERS:
        parked = layer(partner, 0) > layer(key, 0)
        if not _is_default(cfg, key) and not is_on(_value(cfg, partner)) and not parked:
            raise ConfigError(f"{source}: {key} = {_value(cfg, key)!r} acts only with {partner} {on}, which is "
                              f"{_value(cfg, partner)!r}: set {partner} too, or leave {key} at its default "
                              f"{_leaf(key)[0][0]!r}")
    for group in ALTERNATIVES:
        chosen = [key for key in group if not _is_default(cfg, key)]
        if len(chosen) > 1:
            raise ConfigError(f"{source}: " + " and ".join(f"{key} = {_value(cfg, key)!r}" for key in chosen)
                              + ": expected only one of them set (each replaces the other)")


def _defaults(schema) -> dict:
    return {k: _defaults(v) if isinstance(v, dict) else v[0] for k, v in schema.items()}


def default_config() -> EasyDict:
    return EasyDict(_defaults(SCHEMA))


def describe(schema=SCHEMA, prefix="") -> list[str]:
    """One line per key: dotted name, default and comment (for --help-config)."""
    lines = []
    for k, v in schema.items():
        if isinstance(v, dict):
            lines += describe(v, f"{prefix}{k}.")
        else:
            allowed = f" [{v[2]!r}]" if v[2] is not None else ""
            lines.append(f"{prefix}{k} = {v[0]!r}  # {v[1]}{allowed}")
    return lines


def _leaf(path: str):
    node = SCHEMA
    parts = path.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            return None, parts[: i + 1]
        node = node[part]
    return node, parts


def _all_keys(schema=SCHEMA, prefix=""):
    for k, v in schema.items():
        if isinstance(v, dict):
            yield from _all_keys(v, f"{prefix}{k}.")
        else:
            yield prefix + k


# YAML 1.1 reads 1e-3 (no dot) as a string; floats also accept that notation.
_FLOAT_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _coerce(value, leaf, key: str, source: str):
    """Check `value` against the default's type (ints and exponent notation are accepted for floats;
    floats must be finite) and against the key's declared values or range."""
    default, _, check = leaf
    expected = type(default)
    if expected is float and isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
        value = float(value)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(
            f"{source}: {key} = {value!r} has type {type(value).__name__}, expected {expected.__name__} "
            f"(default {default!r})")
    if expected is float and not math.isfinite(value):
        raise ConfigError(f"{source}: {key} = {value!r}: expected a finite number")
    problem = check.problem(value) if check is not None else None
    if problem:
        raise ConfigError(f"{source}: {key} = {value!r}: {problem}")
    return value


def _set(cfg: EasyDict, key: str, value, source: str):
    leaf, parts = _leaf(key)
    if leaf is None or isinstance(leaf, dict):
        close = difflib.get_close_matches(key, list(_all_keys()), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"{source}: unknown key {key}{hint}")
    node = cfg
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = _coerce(value, leaf, key, source)


def _flatten(tree: dict, prefix="") -> dict:
    flat = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[prefix + k] = v
    return flat


def config_folders() -> list[Path]:
    """Where bare config names are looked up: the checkout's cfg/, then the configs shipped in the wheel."""
    root = checkout_root()
    return [folder for folder in ([root / "cfg"] if root else []) + [PACKAGED_CONFIGS] if folder.is_dir()]


def known_configs() -> list[str]:
    return sorted({p.stem for folder in config_folders() for p in folder.glob("*.yml")})


def find_config(path: str | Path) -> Path:
    """`path` as given when it is a file or has a folder part; else a bare name (`synthface` or `synthface.yml`) found
    in config_folders(), so an installed package runs its shipped configs from any directory."""
    text = str(path)
    if Path(text).is_file() or "/" in text or os.sep in text:
        return Path(text)   # a missing path keeps load_config's "does not exist" error
    stem = text.removesuffix(".yml").removesuffix(".yaml")
    for folder in config_folders():
        if (folder / f"{stem}.yml").is_file():
            return folder / f"{stem}.yml"
    raise ConfigError(f"config {text!r} is neither a file nor a known config name "
                      f"(known: {', '.join(known_configs()) or 'none'})")


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> EasyDict:
    """Defaults, then the YAML file at `path` (a file, or a bare name: see find_config), then
    `KEY.SUB=VALUE` overrides."""
    cfg, layers = default_config(), {}
    if path is not None:
        path = find_config(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: expected a mapping of keys at the top level")
        for key, value in _flatten(tree).items():
            _set(cfg, key, value, str(path))
        layers.update(dict.fromkeys(_flatten(tree), 1))
        cfg._source = str(path)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected KEY.SUB=VALUE")
        key, text = item.split("=", 1)
        leaf, _ = _leaf(key)
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
        if leaf is not None and not isinstance(leaf, dict) and isinstance(leaf[0], str):
            value = text  # strings are taken verbatim, so '0' or 'true' stay strings
        _set(cfg, key, value, f"--set {item}")
        layers[key] = 2
    source = str(path) if path is not None else "defaults"
    check_partners(cfg, f"{source} with --set" if overrides else source, layers)
    return cfg


def resolve_path(cfg: EasyDict, key: str) -> Path:
    """The path held by config `key`, resolved against project_home() when relative."""
    p = Path(_value(cfg, key)).expanduser()
    return p if p.is_absolute() else project_home() / p


def require_path(cfg: EasyDict, key: str, what: str = "path") -> Path:
    """Resolve `key` and fail with one line naming key, value and config file when it is missing."""
    p = resolve_path(cfg, key)
    if not p.exists():
        raise ConfigError(f"{cfg.get('_source', 'config')}: {key} = {str(p)!r}: {what} does not exist")
    return p


def to_yaml(cfg: EasyDict) -> str:
    plain = {k: v for k, v in to_plain(cfg).items() if not k.startswith("_")}
    return yaml.safe_dump(plain, sort_keys=False)


def to_plain(tree):
    return {k: to_plain(v) if isinstance(v, dict) else v for k, v in tree.items()}


def config_changes(saved: dict, cfg) -> list[str]:
    """'KEY: old -> new' for every key whose value differs between a checkpoint's stored config and `cfg` (keys
    only one of them has count too; private keys do not)."""
    old, new = _flatten(saved), _flatten(to_plain({k: v for k, v in cfg.items() if not k.startswith("_")}))
    missing = object()
    return [f"{key}: {old.get(key, missing)!r} -> {new.get(key, missing)!r}".replace(repr(missing), "(none)")
            for key in sorted(set(old) | set(new))
            if not key.startswith("_") and old.get(key, missing) != new.get(key, missing)]


# Keys removed from the schema, with the value that builds today's networks: a checkpoint that stored that
# value loads as before; one that stored another cannot be rebuilt and is refused, naming the key.
RETIRED_KEYS = {"MODEL.POSFOLD_WIDTH": 0}


def from_plain(tree: dict) -> EasyDict:
    """Rebuild a config from a checkpoint's stored dict, checked against the schema."""
    cfg = default_config()
    for key, value in _flatten(tree).items():
        if key in RETIRED_KEYS:
            if value != RETIRED_KEYS[key]:
                raise ConfigError(f"checkpoint config: {key} = {value!r} was a switch of an earlier version that "
                                  f"this code no longer has (only {RETIRED_KEYS[key]!r} can be rebuilt)")
            continue
        if not key.startswith("_"):
            _set(cfg, key, value, "checkpoint config")
    return cfg
