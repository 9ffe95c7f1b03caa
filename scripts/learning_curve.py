"""Evaluate every checkpoint of a run folder: its learning curve on measures its own periodic evaluation lacked.

    python scripts/learning_curve.py runs/synthface_faithful-00000 --num 500

Each checkpoints/ckpt-*.pt's G_ema is evaluated on the test split (caption slot DATA.EVAL_CAPTION, seed 0) and
one line per checkpoint is appended to <run>/curve.jsonl ({"kimg": ..., metric: value, ...}), in the format of
the run's own metrics.jsonl, so scripts/compare_runs.py --file curve.jsonl plots it. Checkpoints already in
curve.jsonl are skipped, so the command can be rerun while the run trains on.
"""
import argparse
import json
import sys
from pathlib import Path

from pixelface.core import cli
from pixelface.evaluation.metrics import evaluate_generator
from pixelface.evaluation.registry import METRICS
from pixelface.networks.checkpoint import load_checkpoint, load_generator
from pixelface.networks.text_encoder import TextEncoder

DEFAULT_METRICS = "mask_acc,attr_acc,sharpness,seed_spread,fid_parser"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder (holds checkpoints/)")
    parser.add_argument("--num", type=int, default=500, help="test images generated per checkpoint")
    parser.add_argument("--metrics", default=DEFAULT_METRICS, help=f"comma-separated subset of {', '.join(METRICS)}")
    parser.add_argument("--parser", help="face parser (default models/parser_<DATA.NAME>.pt in the project home)")
    parser.add_argument("--cache", help="real-statistics cache folder (default data/.cache/metrics in the project home)")
    return cli.run(curve, parser.parse_args(argv))


def curve(args) -> None:
    checkpoints = sorted((args.run / "checkpoints").glob("ckpt-*.pt"))
    if not checkpoints:
        raise FileNotFoundError(f"{args.run / 'checkpoints'} holds no ckpt-*.pt")
    out = args.run / "curve.jsonl"
    done = {json.loads(line)["kimg"] for line in out.read_text().splitlines()} if out.is_file() else set()
    names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    text = None
    for path in checkpoints:
        kimg = load_checkpoint(path)["progress"]["nimg"] / 1000
        if kimg in done:
            continue
        g_ema, cfg = load_generator(path)
        text = text or TextEncoder.from_config(cfg)
        report = evaluate_generator(g_ema, cfg, text, num=args.num, metrics=names, parser_path=args.parser,
                                    cache_dir=args.cache)
        row = {"kimg": kimg, **report["metrics"]}
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{path.name}: " + " ".join(f"{k}={v:.3f}" for k, v in row.items() if "/" not in k), flush=True)


if __name__ == "__main__":
    sys.exit(main())
