"""Train PixelFace+.

    torchrun --nproc_per_node N code/main.py --cfg cfg/X.yml [--set KEY.SUB=VALUE ...] [--resume auto|PATH]
    python code/main.py --cfg cfg/X.yml          # one process, no launcher needed

The heavy lifting is in pixelface.trainer; this script parses options, prepares missing data and
weights (rank 0 only), picks the run folder and hands over.
"""
import argparse
import sys
from pathlib import Path

import torch

from pixelface import distributed as dist
from pixelface.config import REPO_ROOT, ConfigError, describe, load_config
from pixelface.prepare import prepare_inputs
from pixelface.runtime import cores_available, cpu_threads_per_rank, tune_glibc_malloc
from pixelface.trainer import (NonFiniteLossError, Trainer, find_resume, load_resume, new_run_dir,
                               write_config)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", help="YAML config overriding the defaults in pixelface/config.py")
    p.add_argument("--set", action="append", default=[], metavar="KEY.SUB=VALUE",
                   help="override one config key (repeatable)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "runs", help="parent folder of run folders")
    p.add_argument("--resume", default=None, metavar="auto|PATH",
                   help="'auto': continue the newest run of this config; or a checkpoint / run folder")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    p.add_argument("--help-config", action="store_true", help="list every config key and exit")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.help_config:
        print("\n".join(describe()))
        return 0
    cfg = load_config(args.cfg, args.set)
    device_type = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    if device_type == "cpu":
        tune_glibc_malloc()
    rank, world, device = dist.init(device_type)
    try:
        if rank == 0:
            if device_type == "cpu":
                torch.set_num_threads(cores_available())  # the other ranks only wait meanwhile
            prepare_inputs(cfg, log=print)
        dist.barrier()
        if device_type == "cpu":
            # N processes on the machine's cores: a share of the threads each, or they fight over the cores.
            torch.set_num_threads(cpu_threads_per_rank())
        run_dir, ckpt = find_resume(args.out, cfg.CONFIG_NAME, args.resume) if args.resume else (None, None)
        if rank == 0 and run_dir is None:
            run_dir = new_run_dir(args.out, cfg.CONFIG_NAME)
        run_dir = dist.broadcast_object(run_dir)
        trainer = Trainer(cfg, run_dir, device, progress_bar=not args.no_progress)
        if rank == 0:  # after the Trainer, which records the CLIP file's hash in cfg
            write_config(run_dir, cfg)
            print(f"run folder: {run_dir}", flush=True)
        if ckpt is not None:
            load_resume(trainer, ckpt)
        trainer.run()
    finally:
        dist.shutdown()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(3)
