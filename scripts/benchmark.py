"""Time the PixelFace+ networks and a whole training step on random inputs; print one JSON object.

    python scripts/benchmark.py --cfg cfg/mmceleba.yml --size 256 --batch 4 --threads 1 --tune-malloc --reference
    python scripts/benchmark.py --cfg cfg/mmceleba.yml --size 256 --batch 4 --threads 1 --tune-malloc --reference --compile
    python scripts/benchmark.py --cfg cfg/mmceleba.yml --size 256 --batch 4 --tune-malloc --reference --amp bf16
    python scripts/benchmark.py --cfg cfg/mmceleba.yml --size 256 --batch 4 --tune-malloc --reference --amp auto --reference-float32
    python scripts/benchmark.py --cfg cfg/mmceleba.yml --device cuda --batch 32 --amp bf16 --channels-last --reference

Phases (median of --repeats after a warm-up; with --reference each repeat runs ours and the
reference-style transcription (pixelface.networks.reference_ops) back to back, in alternating order, on the same
weights and inputs):
  g_forward           eval G under inference_mode: sampling (its img/s is reported)
  g_forward_backward  train-mode G forward + backward of a scalar on the image
  d_forward_backward  train-mode D forward with one sentence + backward
  d_main, d_reg, g_main, g_reg
                      the trainer's four phases, the very functions training runs (pixelface.training.phases)
                      with the config's losses: D on real and fake with the mismatched caption, R1, G with the
                      adversarial, CLIP and any optional terms, path length; each with its backward and Adam step
  train_step          d_main + d_reg / R1_INTERVAL + g_main + g_reg / PL_INTERVAL (lazy regularisation)

The reference-style D scores each caption with its own body pass, as the reference calls D.
CLIP: the configured model when its weights are available offline, else the same architecture with random
weights, else the small custom CLIP; only its cost matters here.

Time: on CPU the process CPU seconds (all threads) are the compared figure, as they stay meaningful on a
shared machine; wall seconds are reported too. On CUDA, wall seconds after synchronising.
Cleanliness (CPU, Linux): before each phase the benchmark waits, idle, for a quiet second (--settle: right after
the networks are built, or a phase freed gigabytes, the kernel can still be zeroing and compacting pages), and
during each repeat (one call per side) it reads from /proc/stat how much of the machine's cores anything else used
("foreign" load; counted in 10 ms ticks, so coarse for repeats under a second). A repeat is clean when that stayed
under 5%; medians are over the clean repeats when there are any, and each row's "clean" entry says how many repeats
were clean, the largest foreign load and the settling.
Peak memory per phase, above what was in use before it: CUDA max_memory_allocated; on CPU the resident
set's high-water mark (VmHWM), after returning freed heap pages to the OS (malloc_trim) and resetting the
mark (/proc/self/clear_refs), measured on the untimed warm-up call.

Precision: --amp autocasts both sides as TRAIN.AMP does in the trainer (auto: its default choice for this config and
device; bf16 covers R1 and path length too); --reference-float32 keeps the reference side in float32, as published.
The JSON's "precision" and the table's first line name each side's.
--compile wraps our G and D in torch.compile for the phases without double backward (R1 and path length
stay eager, as in the trainer with TRAIN.COMPILE); the reference side always runs eagerly, as published.
--tune-malloc keeps freed large blocks in the glibc heap (pixelface.core.runtime.tune_glibc_malloc), for both
sides. --linear-rows adds a side, "ours_linear_rows": our networks with F.linear for the CPU row products
instead of 1×1 convolutions (pixelface.networks.layers.row_product), interleaved with the others, to measure what
that path gains. --profile N profiles one more call of each phase per side with torch.profiler and prints
its N most expensive operators by input shape. A readable table goes to stderr.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import statistics
import sys
import time

import torch

from pixelface.core import cli
from pixelface.core.config import ConfigError, load_config
from pixelface.core.runtime import LoadWindow, cpu_model, load_window, settle_machine, tune_glibc_malloc
from pixelface.data.caption_regions import named_zone_weights
from pixelface.data.mask_input import model_mask
from pixelface.data.masks import NUM_CLASSES
from pixelface.data.synthface.dataset import make_face
from pixelface.networks import layers
from pixelface.networks.discriminator import Discriminator
from pixelface.networks.generator import Generator
from pixelface.networks.reference_ops import (literal_reference_forward, reference_discriminator_forward,
                                              reference_latents)
from pixelface.networks.text_encoder import TextEncoder
from pixelface.training import phases

PHASES = ("g_forward", "g_forward_backward", "d_forward_backward", "d_main", "d_reg", "g_main", "g_reg")
CLEAN_FOREIGN = 0.05   # a repeat is clean when other work took at most this share of the machine's cores
CAPTIONS = ("she has blond hair and a smile", "a man with black hair", "the woman wears lipstick",
            "he has a beard and brown hair")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default=None, help="YAML config (default: built-in defaults = reference)")
    p.add_argument("--size", type=int, default=None, help="override MODEL.SIZE")
    p.add_argument("--batch", type=int, default=4, help="batch size (default 4)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per phase (default 3)")
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    p.add_argument("--reference", action="store_true", help="also time the reference-style transcription")
    p.add_argument("--compile", action="store_true", help="torch.compile our G and D (main phases)")
    p.add_argument("--amp", default="none", choices=("none", "auto", "bf16", "fp16"),
                   help="autocast as TRAIN.AMP sets it (auto: the trainer's default choice; CPU: bf16 only), both sides")
    p.add_argument("--reference-float32", action="store_true",
                   help="the reference side in float32 whatever --amp says: as published, it has no autocast")
    p.add_argument("--channels-last", action="store_true", help="channels_last networks and inputs (both sides)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-phase peak-memory call")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after timing, profile one call of each phase per side (torch.profiler) and print "
                        "its N most expensive operators by input shape to stderr")
    p.add_argument("--settle", type=float, default=30, metavar="S",
                   help="CPU: before each phase wait, idle, until a second in which other work kept the machine's "
                        "cores under 5%% busy (at most S seconds; 0 = do not wait) (default 30)")
    p.add_argument("--tune-malloc", action="store_true", help="CPU: keep freed large blocks in the glibc heap")
    p.add_argument("--masks", default="faces", choices=("faces", "random"),
                   help="faces: synthetic face layouts at the model size (regions, as every real mask has; "
                        "default); random: an independent class per pixel (every mask feature distinct)")
    p.add_argument("--linear-rows", action="store_true",
                   help="CPU: also time ours with F.linear for row products instead of 1x1 convolutions")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable")
    args = p.parse_args(argv)
    args.phases = [x for x in args.phases.split(",") if x]
    if args.batch < 1 or args.repeats < 1:
        p.error("--batch and --repeats must be positive")
    if unknown := set(args.phases) - set(PHASES):
        p.error(f"unknown phases {sorted(unknown)}; choose from {', '.join(PHASES)}")
    if args.device == "cpu" and args.amp == "fp16":
        p.error("--amp fp16 is a CUDA option (on CPU use bf16)")
    if args.linear_rows and (args.device != "cpu" or args.compile):
        p.error("--linear-rows compares eager CPU paths (row products always use F.linear on GPU)")
    return args


# ------------------------------------------------------------------------------------------------
# Inputs and networks


def mask_labels(cfg, batch: int, kind: str) -> torch.Tensor:
    """(B,S,S) label maps: rendered synthetic face layouts ("faces") or an independent class per pixel
    ("random"). G's cost depends on the mask: in sampling, GCMF attends once per distinct mask feature."""
    size = cfg.MODEL.SIZE
    if kind == "random":
        return torch.randint(0, NUM_CLASSES, (batch, size, size), generator=torch.Generator().manual_seed(0))
    return torch.stack([torch.from_numpy(make_face(0, i, size)[2]).long() for i in range(batch)])


def text_encoder(cfg, cfg_file, overrides, device):
    """(TextEncoder, which CLIP): the configured one, its architecture with random weights, or custom."""
    attempts = [("configured", []), ("configured architecture, random weights", ["TEXT.PRETRAINED="]),
                ("custom, random weights", ["TEXT.MODEL=custom", "TEXT.PRETRAINED=",
                                            f"TEXT.CUSTOM.TEXT_WIDTH={cfg.TEXT.EMBEDDING_DIM}",
                                            f"TEXT.CUSTOM.EMBED_DIM={cfg.TEXT.SENTENCE_DIM}"])]
    base = overrides
    for label, extra in attempts:
        try:
            return TextEncoder.from_config(load_config(cfg_file, base + extra)).to(device), label
        except ConfigError as e:
            last = e
    raise last


def build(args):
    overrides = list(args.overrides) + ([f"MODEL.SIZE={args.size}"] if args.size else [])
    cfg = load_config(args.cfg, overrides)
    device = torch.device(args.device)
    if device.type == "cuda":     # as the trainer sets it, for both sides
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.TRAIN.TF32
    torch.manual_seed(0)
    g = Generator.from_config(cfg).to(device)
    d = Discriminator.from_config(cfg).to(device)
    text, clip_label = text_encoder(cfg, args.cfg, overrides, device)
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(args.batch)]
    feats = text.encode(captions)
    labels = mask_labels(cfg, args.batch, args.masks)
    images = torch.rand(args.batch, 3, cfg.MODEL.SIZE, cfg.MODEL.SIZE, device=device) * 2 - 1
    masks = torch.stack([model_mask(one, cfg) for one in labels]).to(device)
    if args.channels_last:
        for net in (g, d):
            net.to(memory_format=torch.channels_last)
        images, masks = (x.contiguous(memory_format=torch.channels_last) for x in (images, masks))
    share = cfg.TRAIN.RECON_ZONE_NAMED_SHARE   # the benchmark's captions stand in for the training split's
    data = phases.PhaseBatch.build(cfg.TRAIN, images, masks, feats, captions, labels,
                                   named_zone_weight=named_zone_weights(captions, share) if share > 0 else None)
    return cfg, overrides, device, g, d, text, clip_label, data


@contextlib.contextmanager
def row_products(linear: bool):
    """With `linear`, our row products use F.linear on CPU too, inside the block (restored after)."""
    saved = layers.CONV_ROWS_MIN
    layers.CONV_ROWS_MIN = sys.maxsize if linear else saved
    try:
        yield
    finally:
        layers.CONV_ROWS_MIN = saved


class Ours:
    """Our networks as the trainer calls them (compiled for the main phases with --compile)."""

    name = "ours"

    def __init__(self, g, d, compiled: bool):
        self.g, self.d = g, d
        self.g_main = torch.compile(g, dynamic=False) if compiled else g     # as TRAIN.COMPILE does
        self.d_main = torch.compile(d, dynamic=False) if compiled else d

    def generate(self, masks, feats, z, *, synced=True, main=True, return_latents=False):
        g = self.g_main if main else self.g      # one process: nothing to sync
        out = g(masks, feats.words, z, word_padding=feats.padding, return_latents=return_latents)
        return (out[0], out[1]["latents"]) if return_latents else out

    def discriminate(self, image, masks, sentences, *, synced=True, main=True):
        return (self.d_main if main else self.d)(image, masks, sentences)

    def accumulating_d(self):
        return contextlib.nullcontext()


class OursLinearRows(Ours):
    """Ours with F.linear for row products on CPU (--linear-rows), to measure the 1×1-convolution path."""

    name = "ours_linear_rows"

    def generate(self, *args, **kwargs):
        with row_products(linear=True):      # the graph built here decides the backward too
            return super().generate(*args, **kwargs)

    def discriminate(self, *args, **kwargs):
        with row_products(linear=True):
            return super().discriminate(*args, **kwargs)


class Reference:
    """The reference-style transcription on the same modules (always eager)."""

    name = "reference"

    def __init__(self, g, d):
        self.g, self.d = g, d

    def generate(self, masks, feats, z, *, synced=True, main=True, return_latents=False):
        latents = reference_latents(self.g, z[0])
        image = literal_reference_forward(self.g, masks, feats.words, latents, None, feats.padding)
        return (image, latents) if return_latents else image

    def discriminate(self, image, masks, sentences, *, synced=True, main=True):
        outs = [reference_discriminator_forward(self.d, image, masks, s) for s in sentences]
        return outs[0][0], torch.stack([cond for _, cond in outs])

    def accumulating_d(self):
        return contextlib.nullcontext()


# ------------------------------------------------------------------------------------------------
# Phases: each returns a callable that runs one instance of the phase


class Phases:
    """Each phase as one callable of a side (ours / reference). The four trainer phases are
    pixelface.training.phases' own functions, the ones the training loop calls, with the loaded config's
    losses; each is followed by its Adam step, as in training (without the finite check and DDP)."""

    def __init__(self, cfg, args, g, d, text, data: phases.PhaseBatch):
        self.cfg, self.g, self.d, self.text, self.data = cfg, g, d, text, data
        self.batch, self.device = args.batch, torch.device(args.device)
        amp = phases.amp_dtype(args.amp, cfg, self.device)
        self.precision = {"ours": amp, "ours_linear_rows": amp, "reference": None if args.reference_float32 else amp}
        # lr 0: the Adam step is timed but the weights both sides share never move
        self.opt_g = torch.optim.Adam(g.parameters(), lr=0.0, betas=(0.0, 0.99))
        self.opt_d = torch.optim.Adam(d.parameters(), lr=0.0, betas=(0.0, 0.99))
        self.pl_mean = 0.0

    def autocasts(self, net):
        """(main, regularisation) autocast factories of `net`'s side, as the trainer makes them."""
        return phases.autocasts(self.device.type, self.precision[net.name])

    def z(self, n):
        return [torch.randn(n, self.cfg.MODEL.STYLE_DIM, device=self.device)]

    def context(self, net) -> phases.StepContext:
        main, reg = self.autocasts(net)
        return phases.StepContext(self.cfg, net, self.text, self.z, main, lambda loss: loss, lambda **values: None,
                                  reg_autocast=reg)

    def train(self, g_grad: bool, d_grad: bool):
        self.g.train().requires_grad_(g_grad)
        self.d.train().requires_grad_(d_grad)

    def step(self, opt):
        opt.step()
        opt.zero_grad(set_to_none=True)

    def g_forward(self, net):
        self.g.eval()
        with torch.inference_mode(), self.autocasts(net)[0]():
            net.generate(self.data.masks, self.data.feats, self.z(self.batch))

    def g_forward_backward(self, net):
        self.train(True, False)
        with self.autocasts(net)[0]():
            image = net.generate(self.data.masks, self.data.feats, self.z(self.batch))
        (image.float() * image.detach().float()).mean().backward()
        self.g.zero_grad(set_to_none=True)

    def d_forward_backward(self, net):
        self.train(False, True)
        with self.autocasts(net)[0]():
            logit, cond = net.discriminate(self.data.images, self.data.masks, [self.data.feats.sentence])
        (logit.float().mean() + cond.float().mean()).backward()
        self.d.zero_grad(set_to_none=True)

    def d_main(self, net):
        self.train(False, True)
        phases.d_main(self.context(net), self.data)
        self.step(self.opt_d)

    def d_reg(self, net):
        self.train(False, True)
        phases.d_reg(self.context(net), self.data)
        self.step(self.opt_d)

    def g_main(self, net):
        self.train(True, False)
        phases.g_main(self.context(net), self.data)
        self.step(self.opt_g)

    def g_reg(self, net):
        self.train(True, False)
        phases.g_reg(self.context(net), self.data, self.pl_mean)
        self.step(self.opt_g)


# ------------------------------------------------------------------------------------------------
# Measurement


def _rss_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_cpu_peak() -> bool:
    """Return freed heap pages to the OS and reset VmHWM to the current RSS (Linux)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory_mb(fn, device) -> float | None:
    """Extra memory one call of fn needs at its peak, above what was in use before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    if not _reset_cpu_peak():
        return None
    before = _rss_mb("VmRSS")
    fn()
    peak = _rss_mb("VmHWM")
    return None if before is None or peak is None else peak - before


def timed(fn, device) -> LoadWindow:
    """Wall s and process CPU s of one call (and the foreign load, too coarse for a short call to judge by)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    with load_window() as window:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return window.result


def measure_phase(phase_fn, nets, args, device) -> dict:
    """Warm-up, which measures the peak memory (a compiled side first compiles in an extra call), then
    interleaved timed repeats, each one call per side. A repeat is clean when other work took at most
    CLEAN_FOREIGN of the machine's cores over the whole repeat (unknown: clean); medians are over the clean
    repeats when there are any, else over all, and the row's "clean" entry says which."""
    calls = {net.name: (lambda net=net: phase_fn(net)) for net in nets}
    memory = {}
    for net in nets:
        if args.compile and net.name == "ours":
            calls[net.name]()
        call = calls[net.name]
        memory[net.name] = call() if args.no_memory else peak_memory_mb(call, device)
    repeats, loads = [], []
    order = list(calls)
    for r in range(args.repeats):
        with load_window() as whole:
            times = {name: timed(calls[name], device) for name in (order if r % 2 == 0 else order[::-1])}
        repeats.append(times)
        loads.append(whole.result.foreign)
    clean = [times for times, load in zip(repeats, loads) if load is None or load <= CLEAN_FOREIGN]
    used = clean or repeats
    out = {}
    for name in calls:
        out[name] = {"wall_s": round(statistics.median(t[name].wall_s for t in used), 4),
                     "cpu_s": round(statistics.median(t[name].cpu_s for t in used), 4),
                     "peak_mb": None if memory[name] is None else round(memory[name])}
    known = [load for load in loads if load is not None]
    out["clean"] = {"repeats": len(repeats), "clean": len(clean), "medians_of": "clean" if clean else "all",
                    "max_foreign": round(max(known), 3) if known else None}
    return out


def profile_phase(phase_fn, net, phase: str, device, rows: int) -> None:
    """One call (after the timed ones, so warm) under torch.profiler: total time and the `rows` operators
    with the most self time, grouped by input shapes, to stderr."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as prof:
        phase_fn(net)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"benchmark: profile of {phase}, {net.name}", file=sys.stderr)
    print(prof.key_averages(group_by_input_shape=True).table(sort_by=key, row_limit=rows,
                                                             max_name_column_width=40,
                                                             max_shapes_column_width=80), file=sys.stderr)


def sides(row: dict) -> list[str]:
    """The names of the timed sides in a phase's row (ours, reference, ...)."""
    return [name for name, value in row.items() if isinstance(value, dict) and "cpu_s" in value]


def add_train_step(results: dict, cfg) -> None:
    """train_step = d_main + d_reg/R1_INTERVAL + g_main + g_reg/PL_INTERVAL, per side; peak = the largest."""
    parts = {"d_main": 1.0, "d_reg": 1.0 / cfg.TRAIN.R1_INTERVAL, "g_main": 1.0, "g_reg": 1.0 / cfg.TRAIN.PL_INTERVAL}
    if not set(parts) <= set(results):
        return
    step = {}
    for name in sides(results["d_main"]):
        step[name] = {key: round(sum(w * results[p][name][key] for p, w in parts.items()), 4)
                      for key in ("wall_s", "cpu_s")}
        peaks = [results[p][name]["peak_mb"] for p in parts]
        step[name]["peak_mb"] = None if None in peaks else max(peaks)
    results["train_step"] = step


def add_ratios(results: dict, device) -> None:
    key = "cpu_s" if device.type == "cpu" else "wall_s"
    for row in results.values():
        if "ours_linear_rows" in row and row["ours_linear_rows"][key] > 0:
            row["linear_rows_ratio"] = round(row["ours"][key] / row["ours_linear_rows"][key], 3)
        if "reference" in row and row["reference"][key] > 0:
            row["time_ratio"] = round(row["ours"][key] / row["reference"][key], 3)
            peaks = row["ours"]["peak_mb"], row["reference"]["peak_mb"]
            if None not in peaks and peaks[1] > 0:
                row["peak_ratio"] = round(peaks[0] / peaks[1], 3)


def print_table(results: dict, device, precision: dict, file=sys.stderr) -> None:
    key = "cpu_s" if device.type == "cpu" else "wall_s"
    print("precision: " + ", ".join(f"{side} {name}" for side, name in precision.items()), file=file)
    print(f"{'phase':<20} {'ours ' + key:>12} {'ref ' + key:>12} {'ratio':>7} {'ours MB':>9} {'ref MB':>9} "
          f"{'ratio':>7} {'clean':>7}", file=file)
    for phase, row in results.items():
        ref = row.get("reference", {})
        clean = row.get("clean")
        cells = [row["ours"][key], ref.get(key, ""), row.get("time_ratio", ""), row["ours"]["peak_mb"],
                 ref.get("peak_mb", ""), row.get("peak_ratio", ""),
                 f"{clean['clean']}/{clean['repeats']}" if clean else ""]
        extra = f"  ours / ours with F.linear rows {row['linear_rows_ratio']}" if "linear_rows_ratio" in row else ""
        print(f"{phase:<20} " + " ".join(f"{'' if c is None else c:>{w}}" for c, w in
                                          zip(cells, (12, 12, 7, 9, 9, 7, 7))) + extra, file=file)


def run(args) -> dict:
    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    malloc_tuned = tune_glibc_malloc() if args.tune_malloc else False
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmark: --device cuda asked for, but CUDA is not available")
    cfg, overrides, device, g, d, text, clip_label, data = build(args)
    print(f"benchmark: networks built in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    nets = ([Ours(g, d, args.compile)] + ([OursLinearRows(g, d, False)] if args.linear_rows else [])
            + ([Reference(g, d)] if args.reference else []))
    timed_phases = Phases(cfg, args, g, d, text, data)
    results = {}
    start = time.perf_counter()
    for phase in args.phases:
        settle = device.type == "cpu" and args.settle > 0
        waited, busy = settle_machine(args.settle, quiet=CLEAN_FOREIGN) if settle else (0.0, None)
        results[phase] = measure_phase(getattr(timed_phases, phase), nets, args, device)
        results[phase]["clean"].update(settle_s=round(waited, 1), busy_before=None if busy is None else round(busy, 3))
        print(f"benchmark: {phase} {json.dumps(results[phase])} (after {time.perf_counter() - start:.0f} s)",
              file=sys.stderr, flush=True)
    if args.profile:
        for phase in args.phases:
            for net in nets:
                profile_phase(getattr(timed_phases, phase), net, phase, device, args.profile)
    add_train_step(results, cfg)
    add_ratios(results, device)
    if "g_forward" in results:
        for name in sides(results["g_forward"]):
            row = results["g_forward"][name]
            row["img_per_s"] = round(args.batch / row["wall_s"], 3)
    precision = {net.name: phases.precision_name(timed_phases.precision[net.name]) for net in nets}
    print_table(results, device, precision)
    return {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "size": cfg.MODEL.SIZE,
        "batch": args.batch, "masks": args.masks, "repeats": args.repeats, "overrides": overrides,
        "malloc_tuned": malloc_tuned,
        "linear_rows": args.linear_rows, "compile": args.compile, "amp": args.amp,
        "precision": precision,
        "tf32": cfg.TRAIN.TF32 if device.type == "cuda" else None, "channels_last": args.channels_last,
        "clip": clip_label,
        "intervals": {"R1": cfg.TRAIN.R1_INTERVAL, "PL": cfg.TRAIN.PL_INTERVAL},
        "g_params": sum(p.numel() for p in g.parameters()),
        "d_params": sum(p.numel() for p in d.parameters()),   # requires_grad is toggled by the phases
        "phases": results,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    return cli.run(lambda: print(json.dumps(run(args))))


if __name__ == "__main__":
    sys.exit(main())
