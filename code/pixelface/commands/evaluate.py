"""Evaluate one or more generator checkpoints on a split's real masks and captions.

    pixelface-eval --ckpt runs/pixelface-00001/checkpoints/best.pt --num 1000 --out eval/run1
    pixelface-eval --ckpt a.pt b.pt --metrics fid_clip,clip_score,mask_acc   # comparison table

(in a checkout also `python scripts/evaluate.py ...`, the same command).

Metrics (default: every one this machine and dataset allow; the others are listed as skipped):
fid, kid (torch-fidelity's Inception; weights from --inception, models/ or the torch hub cache, never
downloaded), fid_clip (the checkpoint's CLIP, always available), clip_score, r_precision, mask_acc (needs a
face parser from scripts/train_parser.py), fid_parser (Fréchet distance in that parser's features), attr_acc
(synthface only), sharpness (high-frequency energy against the real faces', also apart at region edges and
inside regions), seed_spread (caption-free colours across 8 seeds against the data's spread), diversity (needs
two or more seeds).
Writes <out>/metrics.json and <out>/metrics.md and prints the table.
"""
import sys


from pixelface.commands.launch import launch
from pixelface.core import cli
from pixelface.core.devices import resolve_device
from pixelface.evaluation.metrics import evaluate_generator
from pixelface.evaluation.reports import markdown_table, report_paths, write_reports
from pixelface.networks.checkpoint import load_generator
from pixelface.networks.text_encoder import TextEncoder


def execute(args) -> int:
    """Run the command on parsed arguments (pixelface.commands.parsers.evaluate) -> exit code."""
    names = [n.strip() for n in args.metrics.split(",") if n.strip()] if args.metrics else None
    return cli.run(evaluate, args, names)


def main(argv=None) -> int:
    return launch("evaluate", argv)


def evaluate(args, names) -> None:
    seeds = cli.parse_seeds(args.seeds)
    args.device = resolve_device(args.device)
    if args.out:
        report_paths(args.out, args.force)  # fail before hours of generation, not after; and hold the folder
        cli.check_free(list(report_paths(args.out, overwrite=True)), force=True)
    reports = {}
    for path in args.ckpt:
        print(f"evaluating {path}", file=sys.stderr, flush=True)
        g_ema, cfg = load_generator(path, args.device)
        text_encoder = TextEncoder.from_config(cfg).to(args.device)
        reports[path] = evaluate_generator(
            g_ema, cfg, text_encoder, split=args.split, num=args.num, metrics=names, seeds=seeds,
            batch_size=args.batch, device=args.device, parser_path=args.parser, cache_dir=args.cache,
            inception_path=args.inception, progress=True)
        for name, why in reports[path]["skipped"].items():
            print(f"{path}: skipped {name}: {why}", file=sys.stderr)
    table = write_reports(args.out, reports, args.force) if args.out else markdown_table(
        {label: report["metrics"] for label, report in reports.items()})
    print(table, end="")


if __name__ == "__main__":
    sys.exit(main())
