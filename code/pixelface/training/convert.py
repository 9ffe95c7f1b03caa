"""The official PixelFace+ checkpoint, converted into this project's checkpoint format.

The reference trainer saves `torch.save({"g", "d", "g_ema", "g_optim", "d_optim"})`, the module state
dicts without any DDP prefix (PixelFace+/code/trainer.py, `save_model`). Our networks compute the same
functions under other names and layouts, so conversion is a renaming plus reshapes, checked key by key:

* the 1×1 posfolder ConvLayers (`posfolders.N.convX.0.weight` (out,in,1,1) + the activation's
  `.1.bias`) become our PointwiseMix (out,in), whose input groups follow the concatenation order of
  PixelFacePlus.forward (PixelFace+/code/model.py), so the columns need no reordering;
* modulated convs drop the leading 1 of (1,out,in,k,k); noise and activation names change;
* GCMF projections keep their values: our query/value folding happens at run time (gcmf.py);
* Fold/Unfold use the reference's channel order (pixel_models/blocks.py:18-87), so nothing is permuted;
* the spectral norm's `weight_bar`/`weight_u`/`weight_v` become the parametrization's original/_u/_v,
  verbatim: a Discriminator built with spectral_norm="reference" then continues exactly as the
  reference would, while the default torch norm evaluates with σ = uᵀWv of the stored vectors (the σ of
  the reference's last training step before saving; the reference would step once more first);
* the dead parameters are dropped: fc1, stage-0 conv_merge, GCMF modulation and positional maps, and
  G's unused factor-4 `upsample` buffer (model.py:391-393, blocks.py:69-73, GateCrossModelFusion.py:409-418,
  model.py:473); the blur kernels are constants we rebuild: checked, not copied.

A missing, unknown or mis-shaped key stops the conversion with one error naming them. The file is read
with weights_only, so a pickle that carries code is refused, never run.
"""
from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from pixelface.core.config import to_plain
from pixelface.core.files import file_hash
from pixelface.networks.checkpoint import FORMAT, atomic_save, check_weights
from pixelface.networks.discriminator import Discriminator
from pixelface.networks.generator import FOLDS_PER_STAGE, Generator
from pixelface.networks.layers import blur_kernel
from pixelface.networks.text_encoder import pin_weights_hash
from pixelface.training.trainer import Progress, adam_optimizer

NETWORKS = {"g": "G", "d": "D", "g_ema": "G_ema"}         # reference part -> our checkpoint key
OPTIMIZERS = {"g_optim": ("g", "opt_G"), "d_optim": ("d", "opt_D")}
SHOWN = 3                                                   # keys named per problem, then a count
KERNEL_TAPS = 4                                             # the [1,3,3,1] blur


class ConversionError(ValueError):
    """The file is not an official PixelFace+ checkpoint that fits the configuration."""


@dataclass(frozen=True)
class Rule:
    """What one reference key becomes: `target` (our key; None when dropped) from a tensor of `shape`."""
    target: str | None
    shape: tuple
    kind: str = "param"          # "param", "dead" (a parameter nothing uses) or "constant" (a buffer)
    value: torch.Tensor | None = None   # a constant's expected value


class _Rules(dict):
    """reference key -> Rule, filled against our network's state-dict shapes."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}

    def same(self, ref: str, ours: str) -> None:
        self[ref] = Rule(ours, self.ours[ours])

    def reshaped(self, ref: str, ours: str, shape: tuple) -> None:
        self[ref] = Rule(ours, tuple(shape))

    def dead(self, ref: str, shape: tuple) -> None:
        self[ref] = Rule(None, tuple(shape), "dead")

    def constant(self, ref: str, value: torch.Tensor) -> None:
        self[ref] = Rule(None, tuple(value.shape), "constant", value)

    def linear(self, ref: str, ours: str) -> None:
        self.same(f"{ref}.weight", f"{ours}.weight")
        self.same(f"{ref}.bias", f"{ours}.bias")

    def conv_layer(self, ref: str, ours: str, pointwise: bool = False) -> None:
        """A reference ConvLayer Sequential: conv weight at .0 (bias-free), activation bias at .1."""
        weight = f"{ours}.weight"
        shape = (*self.ours[weight], 1, 1) if pointwise else self.ours[weight]
        self.reshaped(f"{ref}.0.weight", weight, shape)
        self.same(f"{ref}.1.bias", f"{ours}.bias")


def _blur(gain: float) -> torch.Tensor:
    """The reference's make_kernel([1,3,3,1]) times gain (make_kernel in pixel_models/blocks.py)."""
    return blur_kernel(torch.device("cpu"), torch.float64) * gain


def generator_rules(g: Generator) -> dict[str, Rule]:
    """Every key of the reference PixelFacePlus state dict (PixelFace+/code/model.py)."""
    rules = _Rules(g)
    for i in range(1, len(g.style)):                           # style.0 is the PixelNorm
        rules.linear(f"style.{i}", f"style.{i}")
    for i in (1, 2):                                           # linears.0 is the PixelNorm
        rules.linear(f"linears.{i}", f"text_mlp.{i}")
    rules.dead("fc1.weight", (g.text_dim // 2, g.text_dim))
    rules.dead("fc1.bias", (g.text_dim // 2,))
    rules.linear("mask_cov", "mask_encoder")
    rules.same("input.input", "input.input")
    rules.dead("upsample.kernel", (KERNEL_TAPS, KERNEL_TAPS))   # Upsample(factor=4), never called
    for s, stage in enumerate(g.stages):
        _stage_rules(rules, s, stage)
    return dict(rules)


def _stage_rules(rules: _Rules, s: int, stage) -> None:
    ours = f"stages.{s}"
    rules.linear(f"lffs.{s}.ffm.conv", f"{ours}.lff.conv")
    fold = f"posfolders.{s}"
    if s == 0:
        rules.conv_layer(f"{fold}.conv0", f"{ours}.conv0", pointwise=True)
        hidden = rules.ours[f"{ours}.conv0.weight"][0]
        rules.dead(f"{fold}.conv_merge.0.weight", (hidden, 2 * hidden, 1, 1))   # built, never called
        rules.dead(f"{fold}.conv_merge.1.bias", (hidden,))
    else:
        rules.conv_layer(f"{fold}.conv_merge", f"{ours}.conv_merge", pointwise=True)
    rules.conv_layer(f"{fold}.conv1", f"{ours}.conv1", pointwise=True)

    gcmf, dim = f"gcmf{s + 1}", stage.gcmf.dim
    for name in ("to_queries", "to_keys", "to_values", *(f"{mlp}.{layer}" for mlp in ("c_mlp", "ffn")
                                                          for layer in ("l0", "l1", "out_layer"))):
        rules.linear(f"{gcmf}.{name}", f"{ours}.gcmf.{name}")
    rules.dead(f"{gcmf}.modulation.weight", (2 * dim, dim))          # the disabled "integrate" path
    rules.dead(f"{gcmf}.modulation.bias", (2 * dim,))
    for pos in ("from_pos_map", "to_pos_map"):                       # pos_dim = 0: fan-in 0
        rules.dead(f"{gcmf}.{pos}.weight", (dim, 0))
        rules.dead(f"{gcmf}.{pos}.bias", (dim,))

    for f in range(FOLDS_PER_STAGE):
        step = f"{ours}.folds.{f}"
        conv = 2 * (FOLDS_PER_STAGE * s + f)                          # convs index of conv_low
        for i, name in ((conv, "conv_low"), (conv + 1, "conv_high")):
            _modulated(rules, f"convs.{i}.conv", f"{step}.{name}.conv")
            rules.same(f"convs.{i}.noise.weight", f"{step}.{name}.noise_weight")
            rules.same(f"convs.{i}.activate.bias", f"{step}.{name}.bias")
        rgb = f"to_rgbs.{FOLDS_PER_STAGE * s + f}"
        _modulated(rules, f"{rgb}.conv", f"{step}.to_rgb.conv")
        rules.same(f"{rgb}.bias", f"{step}.to_rgb.bias")
        rules.constant(f"{rgb}.upsample.kernel", _blur(4))           # Upsample(factor=2) of the skip


def _modulated(rules: _Rules, ref: str, ours: str) -> None:
    """ModulatedConv2d: the reference weight has a leading batch axis of 1."""
    weight = f"{ours}.weight"
    rules.reshaped(f"{ref}.weight", weight, (1, *rules.ours[weight]))
    rules.linear(f"{ref}.modulation", f"{ours}.modulation")


def discriminator_rules(d: Discriminator) -> dict[str, Rule]:
    """Every key of the reference Pixel_Discriminator state dict (PixelFace+/code/model.py:194-311)."""
    rules = _Rules(d)
    rules.conv_layer("convs.0", "from_input")
    for i in range(len(d.blocks)):
        ref, ours = f"convs.{i + 1}", f"blocks.{i}"                   # n_first_layers = 0
        rules.conv_layer(f"{ref}.conv1", f"{ours}.conv1")
        rules.constant(f"{ref}.conv2.0.kernel", _blur(1))
        rules.same(f"{ref}.conv2.1.weight", f"{ours}.conv2.weight")
        rules.same(f"{ref}.conv2.2.bias", f"{ours}.conv2.bias")
        rules.constant(f"{ref}.skip.0.kernel", _blur(1))
        rules.same(f"{ref}.skip.1.weight", f"{ours}.skip.weight")
    rules.conv_layer("final_conv", "final_conv")
    rules.linear("final_linear.0", "final_linear.0")
    rules.linear("final_linear.1", "final_linear.1")
    sn, joint = "COND_DNET.jointConv.0.module", "cond_head.joint_conv"
    rules.same(f"{sn}.weight_bar", f"{joint}.parametrizations.weight.original")
    rules.same(f"{sn}.weight_u", f"{joint}.parametrizations.weight.0._u")
    rules.same(f"{sn}.weight_v", f"{joint}.parametrizations.weight.0._v")
    rules.same(f"{sn}.bias", f"{joint}.bias")
    rules.linear("COND_DNET.outlogits.0", "cond_head.out")
    return dict(rules)


# ------------------------------------------------------------------------------------------------
# Mapping state dicts


def strip_ddp(state: dict) -> dict:
    """Drop a leading `module.` (a DDP wrapper's prefix); inner `.module.` names are the reference's own."""
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def _problems(state: dict, rules: dict[str, Rule]) -> list[str]:
    """Missing, unknown, mis-shaped and altered-constant keys, each kind as one phrase."""
    missing = [k for k in rules if k not in state]
    unknown = [k for k in state if k not in rules]
    shapes, constants = [], []
    for key, rule in rules.items():
        if key not in state:
            continue
        value = state[key]
        if not torch.is_tensor(value) or tuple(value.shape) != rule.shape:
            got = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
            shapes.append(f"{key} {got} where {rule.shape} was expected")
        elif rule.value is not None and not torch.allclose(value.double(), rule.value, atol=1e-6):
            constants.append(key)
    found = [(missing, "missing"), (unknown, "unknown"), (shapes, "mis-shaped"),
             (constants, "blur kernels unlike [1,3,3,1]")]
    return [f"{len(keys)} {what} ({_listed(keys)})" for keys, what in found if keys]


def map_state(state: dict, rules: dict[str, Rule], net: torch.nn.Module, part: str) -> dict:
    """Our state dict for `net` from one reference state dict; ConversionError lists every bad key."""
    state = strip_ddp(state)
    problems = _problems(state, rules)
    if problems:
        raise ConversionError(f"{part}: " + "; ".join(problems))
    ours = dict(net.state_dict())
    for key, rule in rules.items():
        if rule.target is not None:
            ours[rule.target] = state[key].reshape(ours[rule.target].shape)
    return ours


def load_reference(net: torch.nn.Module, state: dict, part: str = "state dict") -> dict[str, int]:
    """Load one reference state dict into our `net` (G or D) in place; returns counts by kind of key."""
    rules = generator_rules(net) if isinstance(net, Generator) else discriminator_rules(net)
    _check_covered(net, rules)
    mapped = map_state(state, rules, net, part)
    try:
        check_weights(mapped, part, net.state_dict())     # dtypes: a complex or integer file would be cast silently
    except ValueError as e:
        raise ConversionError(str(e)) from None
    net.load_state_dict(mapped)
    kinds = [rule.kind for rule in rules.values()]
    return {kind: kinds.count(kind) for kind in ("param", "dead", "constant")}


def _check_covered(net: torch.nn.Module, rules: dict[str, Rule]) -> None:
    """Every parameter of ours must come from the file: the config must build the reference's networks."""
    filled = {rule.target for rule in rules.values()}
    own = [name for name, _ in net.named_parameters() if name not in filled]
    if own:
        raise ConversionError(f"the configuration builds parameters the reference has no values for "
                              f"({_listed(own)}); convert with the reference architecture "
                              f"(e.g. MODEL.GCMF_GATE=false)")


# ------------------------------------------------------------------------------------------------
# Optimisers


def _parameter_names(state: dict, rules: dict[str, Rule]) -> list[str]:
    """The reference's parameters() order: its state-dict order without buffers (blur kernels)."""
    return [k for k in strip_ddp(state) if k in rules and not k.endswith("kernel")]


def convert_optimizer(saved, names: list[str], rules: dict[str, Rule], net, optimizer) -> tuple[dict, str]:
    """Our Adam state dict from the reference's, moment by moment, or a fresh one and the reason why.

    The reference's Adam indexes states by position in `parameters()`; `names` gives those positions.
    Hyper-parameters come from our config (the reference's equal ours at the default settings).
    """
    fresh = optimizer.state_dict()
    try:
        positions = [i for group in saved["param_groups"] for i in group["params"]]
        states = saved["state"]
    except (TypeError, KeyError):
        return fresh, "not an optimizer state dict"
    if len(positions) != len(names):
        return fresh, f"it covers {len(positions)} parameters, the network has {len(names)}"
    owner = dict(zip(positions, names))
    params = dict(net.named_parameters())
    index = {name: i for i, name in enumerate(params)}
    converted = {}
    for position, state in states.items():
        rule = rules.get(owner.get(position))
        if rule is None or not isinstance(state, dict):
            return fresh, f"state {position} belongs to no parameter"
        if rule.target is None or rule.target not in params:
            continue    # a dead parameter's moments, or a spectral-norm vector's (a buffer here: no Adam moments)
        moved = _adam_state(state, rule, params[rule.target].shape)
        if moved is None:
            return fresh, f"the moments of {owner[position]} do not have its shape {rule.shape}"
        converted[index[rule.target]] = moved
    return {"state": converted, "param_groups": fresh["param_groups"]}, ""


def _adam_state(state: dict, rule: Rule, shape: torch.Size) -> dict | None:
    moments = ("exp_avg", "exp_avg_sq")
    if "step" not in state or any(not torch.is_tensor(state.get(m)) or tuple(state[m].shape) != rule.shape
                                  for m in moments):
        return None
    step = torch.as_tensor(float(state["step"]), dtype=torch.float32)   # old torch saved an int
    return {"step": step, **{m: state[m].float().reshape(shape).clone() for m in moments}}


# ------------------------------------------------------------------------------------------------
# Files


def read_reference(path: str | Path) -> dict:
    """The reference checkpoint dict, read weights-only; ConversionError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ConversionError(f"{path}: refused, it holds more than tensors and containers (loading it "
                              f"would run pickled code: {str(e).splitlines()[0][:200]})") from None
    except Exception as e:  # truncated, not a torch file, ...
        reason = (str(e).strip().splitlines() or ["empty or truncated file"])[0]
        raise ConversionError(f"{path} cannot be read ({type(e).__name__}: {reason})") from None
    if isinstance(data, dict) and data.get("format") == FORMAT:
        raise ConversionError(f"{path} is already a checkpoint of this project; nothing to convert")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), dict) for k in NETWORKS):
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise ConversionError(f"{path} is not a PixelFace+ training checkpoint: expected the dicts "
                              f"{sorted(NETWORKS)} (+ g_optim, d_optim), found {keys}")
    extra = sorted(set(map(str, data)) - set(NETWORKS) - set(OPTIMIZERS))
    if extra:
        raise ConversionError(f"{path}: unknown top-level keys {_listed(extra)}")
    return data


@dataclass
class Summary:
    mapped: dict[str, int]       # per reference part: keys copied into our networks
    dead: dict[str, int]         # per part: dead parameters dropped
    constants: dict[str, int]    # per part: blur kernels checked and dropped
    params_g: int
    params_d: int
    notices: list[str]

    def lines(self) -> list[str]:
        out = [f"{part}: {self.mapped[part]} keys mapped, {self.dead[part]} dropped as dead, "
               f"{self.constants[part]} constant blur kernels checked" for part in NETWORKS]
        out.append(f"parameters: G {self.params_g:,}, D {self.params_d:,}")
        return out + self.notices


def convert(data: dict, cfg, source: str = "reference checkpoint") -> tuple[dict, Summary]:
    """(our training checkpoint, summary) from a read reference checkpoint and the config to build."""
    nets = {"g": Generator.from_config(cfg), "d": Discriminator.from_config(cfg),
            "g_ema": Generator.from_config(cfg)}
    for part in nets:       # damaged weights are named as such, not as a layout mismatch
        try:
            check_weights(strip_ddp(data.get(part) or {}), f"{source}: {part}")
        except ValueError as e:
            raise ConversionError(str(e)) from None
    counts, errors = {}, []
    for part, net in nets.items():
        try:
            counts[part] = load_reference(net, data[part], part)
        except ConversionError as e:
            errors.append(str(e))
    if errors:
        raise ConversionError(f"{source} does not fit the reference layout that {cfg.get('_source', 'the config')} "
                              f"builds: " + " | ".join(errors))
    optimizers, notices = _optimizers(data, nets, cfg)
    count = lambda net: sum(p.numel() for p in net.parameters())   # noqa: E731
    summary = Summary({p: c["param"] for p, c in counts.items()}, {p: c["dead"] for p, c in counts.items()},
                      {p: c["constant"] for p, c in counts.items()}, count(nets["g"]), count(nets["d"]), notices)
    ckpt = {"format": FORMAT, "config": to_plain({k: v for k, v in cfg.items() if not k.startswith("_")}),
            **{ours: nets[part].state_dict() for part, ours in NETWORKS.items()}, **optimizers,
            # a fresh run's scaler (an enabled scaler's defaults load into a disabled one as a no-op)
            "scaler": torch.amp.GradScaler("cpu").state_dict(), "progress": asdict(Progress()),
            "rng": [], "world_size": 1}
    return ckpt, summary


def _optimizers(data: dict, nets: dict, cfg) -> tuple[dict, list[str]]:
    train = cfg.TRAIN
    fresh = {"g": adam_optimizer(nets["g"], train.LR_G, train.BETA2, train.PL_INTERVAL),
             "d": adam_optimizer(nets["d"], train.LR_D, train.BETA2, train.R1_INTERVAL)}
    out, notices = {}, []
    for saved, (part, ours) in OPTIMIZERS.items():
        net = nets[part]
        rules = generator_rules(net) if part == "g" else discriminator_rules(net)
        if saved not in data:
            state, why = fresh[part].state_dict(), "absent from the file"
        else:
            names = _parameter_names(data[part], rules)
            state, why = convert_optimizer(data[saved], names, rules, net, fresh[part])
        out[ours] = state
        notices.append(f"{saved}: Adam starts fresh ({why})" if why else
                       f"{saved}: {len(state['state'])} Adam states converted")
    return out, notices


def convert_file(src: str | Path, dst: str | Path, cfg, before_writing: Callable[[Path], None] | None = None) -> Summary:
    """Convert the reference checkpoint `src` into our checkpoint `dst`, written atomically; before_writing(dst)
    runs once `src` is read and converted, before anything is written (the command claims the folder there)."""
    pin_weights_hash(cfg)   # a local CLIP file is named by hash, as in a trained checkpoint
    cfg.MODEL.D_SPECTRAL_NORM = "reference"   # the stored u, v continue as the reference's would
    ckpt, summary = convert(read_reference(src), cfg, source=str(src))
    ckpt["converted_from"] = {"file": Path(src).name, "sha256": file_hash(src, length=64)}
    if before_writing is not None:
        before_writing(Path(dst))
    atomic_save(ckpt, dst)
    return summary
