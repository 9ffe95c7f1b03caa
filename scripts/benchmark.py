"""Time the PixelFace+ networks on random inputs and print one JSON object.

    python scripts/benchmark.py --size 256 --batch 2 --threads 2
    python scripts/benchmark.py --cfg cfg/synthface.yml --size 64 --batch 8 --threads 2   # the default run's networks

Phases (median of --repeats after one warm-up run):
  g_forward           eval-mode G under inference_mode (what sampling and FID pay)
  g_forward_backward  train-mode G forward + backward of a scalar loss on the image
  d_forward_backward  train-mode D forward with a sentence + backward (no R1)
Peak memory: CUDA max_memory_allocated per phase; on CPU the process's peak RSS (the G step runs
first, so its peak is the first reading) next to the RSS before any phase.
No text encoder is needed: words and sentences are random features of the configured widths.

--tune-malloc raises glibc's mmap threshold so freed large tensors are reused instead of being
returned to the OS and page-faulted in again on the next allocation; on CPU this alone speeds the
256 px step up several-fold in our measurements (RSS then stays at its peak).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import torch

from pixelface import cli
from pixelface.config import load_config
from pixelface.discriminator import Discriminator
from pixelface.generator import Generator
from pixelface.masks import NUM_CLASSES
from pixelface.runtime import tune_glibc_malloc


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default=None, help="YAML config (default: built-in defaults = reference)")
    p.add_argument("--size", type=int, default=None, help="override MODEL.SIZE")
    p.add_argument("--batch", type=int, default=2, help="batch size (default 2)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per phase (default 3)")
    p.add_argument("--tune-malloc", action="store_true",
                   help="CPU: keep freed large blocks in the glibc heap (see module docstring)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable")
    args = p.parse_args(argv)
    if args.batch < 1 or args.repeats < 1:
        p.error("--batch and --repeats must be positive")
    return args


def random_inputs(cfg, batch: int, device):
    """Mask (colour in [-1,1] or one-hot), words (B,T,E), sentence (B,S), z (B,style)."""
    size = cfg.MODEL.SIZE
    if cfg.MODEL.MASK_INPUT == "onehot":
        labels = torch.randint(0, NUM_CLASSES, (batch, size, size), device=device)
        mask = torch.nn.functional.one_hot(labels, NUM_CLASSES).permute(0, 3, 1, 2).float()
    else:
        mask = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    words = torch.randn(batch, cfg.TEXT.MAX_WORDS, cfg.TEXT.EMBEDDING_DIM, device=device)
    sentence = torch.randn(batch, cfg.TEXT.SENTENCE_DIM, device=device)
    z = torch.randn(batch, cfg.MODEL.STYLE_DIM, device=device)
    return mask, words, sentence, z


def current_rss_mb() -> float | None:
    try:
        import psutil
        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        pass
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


def time_phase(fn, repeats: int, device) -> tuple[float, float, float | None]:
    """(median wall s, median process CPU s, peak CUDA MiB or None) after one warm-up call.

    CPU seconds (all threads together) are reported too: on a shared machine they stay meaningful
    when wall time does not.
    """
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        sync()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return statistics.median(wall), statistics.median(cpu), peak


def run(args) -> dict:
    overrides = list(args.overrides) + ([f"MODEL.SIZE={args.size}"] if args.size else [])
    cfg = load_config(args.cfg, overrides)
    if args.threads:
        torch.set_num_threads(args.threads)
    malloc_tuned = tune_glibc_malloc() if args.tune_malloc else False
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmark: --device cuda asked for, but CUDA is not available")
    device = torch.device(args.device)
    torch.manual_seed(0)
    g = Generator.from_config(cfg).to(device)
    d = Discriminator.from_config(cfg).to(device)
    mask, words, sentence, z = random_inputs(cfg, args.batch, device)

    def g_forward():
        g.eval()
        with torch.inference_mode():
            g(mask, words, [z])

    def g_forward_backward():
        g.train()
        image = g(mask, words, [z])
        (image * image.detach()).mean().backward()

    fake = torch.randn(args.batch, 3, cfg.MODEL.SIZE, cfg.MODEL.SIZE, device=device)

    def d_forward_backward():
        d.train()
        logit, cond = d(fake, mask, sentence)
        (logit.mean() + cond.mean()).backward()

    rss_before = current_rss_mb()
    g_fb, g_fb_cpu, g_fb_peak = time_phase(g_forward_backward, args.repeats, device)
    rss_after_g_step = peak_rss_mb()
    g_fw, g_fw_cpu, g_fw_peak = time_phase(g_forward, args.repeats, device)
    d_fb, d_fb_cpu, d_fb_peak = time_phase(d_forward_backward, args.repeats, device)

    result = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "size": cfg.MODEL.SIZE,
        "batch": args.batch,
        "repeats": args.repeats,
        "overrides": overrides,
        "malloc_tuned": malloc_tuned,
        "g_params": sum(p.numel() for p in g.parameters() if p.requires_grad),
        "d_params": sum(p.numel() for p in d.parameters() if p.requires_grad),
        "g_forward_s": round(g_fw, 4),
        "g_forward_backward_s": round(g_fb, 4),
        "d_forward_backward_s": round(d_fb, 4),
        "cpu_s": {"g_forward": round(g_fw_cpu, 3), "g_forward_backward": round(g_fb_cpu, 3),
                  "d_forward_backward": round(d_fb_cpu, 3)},
        "g_forward_img_per_s": round(args.batch / g_fw, 3),
        "g_forward_backward_img_per_s": round(args.batch / g_fb, 3),
        "d_forward_backward_img_per_s": round(args.batch / d_fb, 3),
    }
    if device.type == "cuda":
        result["peak_mem_mb"] = {"g_forward": round(g_fw_peak), "g_forward_backward": round(g_fb_peak),
                                 "d_forward_backward": round(d_fb_peak)}
    else:
        result["rss_mb"] = {"before_phases": None if rss_before is None else round(rss_before),
                            "peak_through_g_step": round(rss_after_g_step),
                            "peak_overall": round(peak_rss_mb())}
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    return cli.run(lambda: print(json.dumps(run(args))))


if __name__ == "__main__":
    sys.exit(main())
