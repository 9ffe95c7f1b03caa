"""Controlled short runs: the same config, seed and length, one change each, evaluated alike -> one table.

    python scripts/ablate.py --cfg cfg/synthface.yml --kimg 6 --out runs/ablate \
        --variant baseline --variant "r1-0.1:TRAIN.R1_GAMMA=0.1" --variant "onehot:MODEL.MASK_INPUT=onehot"

A variant is NAME or NAME:KEY=VALUE[,KEY=VALUE...] (config overrides on top of --cfg and --set). Each trains
with `torchrun --nproc_per_node --nproc -m pixelface.commands.train` into <out>/<NAME>-00000 for --kimg, then its final
G_ema is evaluated on the test split (mask accuracy, attribute and per-colour hair accuracy, region texture,
fid_clip) from the same masks, captions and seeds. A variant whose run folder already holds its final
checkpoint is not trained again, so an interrupted ablation continues where it stopped. Writes
<out>/ablation.json and <out>/ablation.md (one row per variant; rows of earlier calls with the same --out
are kept, a variant evaluated again replaces its row) and prints the table.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

from pixelface.core import cli
from pixelface.core.config import load_config
from pixelface.evaluation.metrics import evaluate_generator
from pixelface.evaluation.reports import markdown_table
from pixelface.networks.checkpoint import load_checkpoint, load_generator
from pixelface.networks.text_encoder import TextEncoder
from pixelface.training.runs import latest_checkpoint

METRICS = ["mask_acc", "attr_acc", "texture", "sharpness", "seed_spread", "fid_parser", "fid_clip"]
COLUMNS = ["mask_pixel_acc", "mask_miou", "attr_acc", "attr_acc/hair_color", "attr_acc/lipstick",
           "attr_acc/heavy_makeup", "attr_acc/rosy_cheeks", "attr_acc/pale_skin", "attr_acc/beard",
           "sharpness_ratio", "sharpness_ratio/edges", "seed_spread", "fid_parser", "texture_ratio", "fid_clip",
           "img_per_s"]


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, changes = text.partition(":")
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise argparse.ArgumentTypeError(f"--variant {text!r}: NAME must be letters, digits, '-', '_' or '.'")
    overrides = [c.strip() for c in changes.split(",") if c.strip()]
    if any("=" not in o for o in overrides):
        raise argparse.ArgumentTypeError(f"--variant {text!r}: changes must be KEY=VALUE")
    return name, overrides


def train(cfg_path: str, overrides: list[str], run_dir: Path, nproc: int) -> None:
    cmd = ["torchrun", "--standalone", f"--nproc_per_node={nproc}", "-m", "pixelface.commands.train",
           "--cfg", cfg_path, "--out", str(run_dir.parent), "--no-progress"]
    for item in overrides:
        cmd += ["--set", item]
    if run_dir.exists():
        cmd += ["--resume", str(run_dir)]   # an interrupted variant continues
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = run_dir.parent / f"{run_dir.name}.log"
    with open(log, "a") as f:
        if subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode:
            raise RuntimeError(f"training variant {run_dir.name} failed; see {log}")


def speed(run_dir: Path) -> float:
    """Training img/s over the whole run: every log window's images over its training seconds
    (stats.jsonl rows; sample grids, evaluations and snapshots excluded)."""
    rows = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    seconds = sum(r["train_s"] for r in rows)
    return sum(r["img_per_s"] * r["train_s"] for r in rows) / seconds if seconds else float("nan")


def table_rows(reports: dict) -> dict:
    return {name: {k: r["metrics"][k] for k in COLUMNS if k in r["metrics"]} for name, r in reports.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True, help="base config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every variant")
    parser.add_argument("--variant", action="append", type=parse_variant, required=True, help="NAME[:KEY=VALUE,...]")
    parser.add_argument("--kimg", type=float, required=True, help="training length of every variant")
    parser.add_argument("--out", type=Path, required=True, help="folder of the variants' runs and the table")
    parser.add_argument("--nproc", type=int, default=2, help="training processes per variant")
    parser.add_argument("--num", type=int, default=500, help="test images generated per evaluation")
    args = parser.parse_args(argv)
    names = [name for name, _ in args.variant]
    if len(set(names)) != len(names):
        parser.error(f"variant names repeat: {names}")
    table = args.out / "ablation.json"
    reports = json.loads(table.read_text()) if table.is_file() else {}   # earlier ablations into --out stay
    args.out.mkdir(parents=True, exist_ok=True)
    return cli.run(ablate, args, reports, table)


def ablate(args, reports: dict, table: Path) -> None:
    for name, changes in args.variant:
        overrides = args.set + changes + [f"CONFIG_NAME={name}", f"TRAIN.TOTAL_KIMG={args.kimg}"]
        load_config(args.cfg, overrides)  # a bad key fails here, before any training
        run_dir = args.out / f"{name}-00000"
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None and run_dir.exists():
            raise FileExistsError(f"{run_dir} exists without a checkpoint to resume; remove it to retrain {name}")
        if ckpt is None or load_checkpoint(ckpt)["progress"]["nimg"] < args.kimg * 1000:
            train(args.cfg, overrides, run_dir, args.nproc)
            ckpt = latest_checkpoint(run_dir)
        g_ema, cfg = load_generator(ckpt)
        report = evaluate_generator(g_ema, cfg, TextEncoder.from_config(cfg), num=args.num, metrics=METRICS)
        report["changes"], report["checkpoint"] = changes, str(ckpt)
        report["metrics"]["img_per_s"] = speed(run_dir)
        reports[name] = report
        row = table_rows({name: report})[name]
        print(f"{name}: " + " ".join(f"{k}={v:.3f}" for k, v in row.items()), flush=True)
        table.write_text(json.dumps(reports, indent=1) + "\n")   # after every variant: a kill loses none
        (args.out / "ablation.md").write_text(markdown_table(table_rows(reports)))
    print(markdown_table(table_rows(reports)), end="")


if __name__ == "__main__":
    sys.exit(main())
