"""Train PixelFace+.

    torchrun --nproc_per_node N -m pixelface.commands.train --cfg synthface [--set KEY.SUB=VALUE ...]
    torchrun --nproc_per_node N code/main.py --cfg cfg/X.yml [--resume auto|PATH]   # the same, in a checkout
    pixelface-train --nproc N --cfg cfg/X.yml   # N processes on this machine, sockets on loopback only
    pixelface-train --cfg cfg/X.yml       # one process, no launcher needed (in a checkout: python code/main.py)

--cfg takes a YAML file or a bare config name (synthface, smoke, ...). The heavy lifting is in
pixelface.training.trainer; this command parses options, prepares missing data and weights (rank 0 only), picks the
run folder (default <project home>/runs) and hands over.
"""
import os
import sys
import warnings

import torch

from pixelface.commands.launch import launch
from pixelface.core import cli
from pixelface.core import distributed as dist
from pixelface.core.config import describe, load_config
from pixelface.core.local_launcher import run_workers
from pixelface.core.runtime import cores_available, cpu_threads_per_rank, tune_glibc_malloc
from pixelface.training.prepare import prepare_inputs
from pixelface.training.runs import RunLock, new_run_dir, plan_resume, remove_stale_temporaries
from pixelface.training.trainer import NonFiniteLossError, Trainer, check_eval_settings, load_resume, write_config


def execute(args) -> int:
    """Exit codes as every CLI here (pixelface.core.cli): 0 done, or stopped by SIGTERM/SIGINT after a
    checkpoint; 2 bad input, one line naming it; 3 non-finite losses (after a checkpoint)."""
    if args.help_config:
        print("\n".join(describe()))
        return 0
    if args.nproc < 1 or (args.nproc > 1 and "RANK" in os.environ):
        why = "must be at least 1" if args.nproc < 1 else "under a launcher (RANK is set): use one or the other"
        print(f"pixelface-train: --nproc {args.nproc} {why}", file=sys.stderr)
        return cli.EXIT_BAD_INPUT
    if args.nproc > 1:
        return run_workers(args.nproc, worker_command(args))
    return cli.run(train, args, extra_errors={NonFiniteLossError: cli.EXIT_NONFINITE})


def worker_command(args) -> list[str]:
    """The command line each --nproc worker runs: these arguments, as one process of the job."""
    command = [sys.executable, "-m", "pixelface.commands.launch", "train", "--out", str(args.out),
               "--device", args.device]
    for flag, value in (("--cfg", args.cfg), ("--resume", args.resume)):
        if value is not None:
            command += [flag, str(value)]
    for item in args.set:
        command += ["--set", item]
    return command + (["--no-progress"] if args.no_progress else [])


def main(argv=None) -> int:
    return launch("train", argv)


def configure_process(cfg, device_type: str) -> None:
    """The process-wide settings a training process runs with (the entry point's job, not the Trainer's)."""
    if device_type == "cpu":
        tune_glibc_malloc()
    else:
        torch.backends.cuda.matmul.allow_tf32 = cfg.TRAIN.TF32
        torch.backends.cudnn.allow_tf32 = cfg.TRAIN.TF32
    # D's last 1-row linear layer gets a transposed-stride gradient; DDP copies it into its bucket, which
    # costs nothing measurable, but it warns about it on every run.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")


def train(args) -> None:
    cfg = load_config(args.cfg, args.set)
    check_eval_settings(cfg)
    cli.check_output_folder(args.out, create=False)   # a run folder is made only when training starts
    device_type = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    configure_process(cfg, device_type)
    rank, world, device = dist.init(device_type)
    lock = None
    try:
        if rank == 0:
            if device_type == "cpu":
                torch.set_num_threads(cores_available())  # the other ranks only wait meanwhile
            prepare_inputs(cfg, log=print)
        dist.barrier()
        if device_type == "cpu":
            # N processes on the machine's cores: a share of the threads each, or they fight over the cores.
            torch.set_num_threads(cpu_threads_per_rank())
        # Rank 0 decides where the run goes. Nothing in a run folder is written, and no new one is made,
        # before the data are found and the checkpoint to resume from fits the networks this config builds.
        plan = dist.broadcast_object(plan_resume(args.out, cfg.CONFIG_NAME, args.resume) if rank == 0 else None)
        trainer = Trainer(cfg, plan.run_dir, device, progress_bar=not args.no_progress)
        changes = load_resume(trainer, plan.checkpoint) if plan.checkpoint is not None else []
        run_dir = plan.run_dir
        if rank == 0:
            if plan.note:
                print(plan.note, flush=True)
            run_dir = run_dir or new_run_dir(args.out, cfg.CONFIG_NAME)
            lock = RunLock(run_dir).acquire()
            stale = remove_stale_temporaries(run_dir)
            if stale:
                print(f"removed {len(stale)} temporary file(s) left by a killed save", flush=True)
            write_config(run_dir, cfg)   # after the Trainer, which records the CLIP file's hash in cfg
            print(f"run folder: {run_dir}", flush=True)
        trainer.run_dir = dist.broadcast_object(run_dir)
        if plan.checkpoint is not None:
            trainer.log(f"resumed from {plan.checkpoint} at {trainer.progress.nimg} images")
            for change in changes:        # config.yaml now holds the new values; the log keeps the old ones
                trainer.log(f"config changed on resume: {change}")
            for note in trainer.resume_notes:
                trainer.log(note)
        trainer.run()
    finally:
        if lock is not None:
            lock.release()
        dist.shutdown()


if __name__ == "__main__":
    sys.exit(main())
