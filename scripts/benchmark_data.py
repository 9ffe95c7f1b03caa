"""Time the training data pipeline (FaceDataset through a DataLoader) at the reference configuration's sizes, on
data made on the fly; print one JSON object (a table goes to stderr).

    python scripts/benchmark_data.py --workers 0,1,2 --gpu-rate 130

Three layouts of the same faces (synthface, rendered at 256 px):
  mmceleba   as downloaded: 1024-px JPEG images (quality 95, upscaled with a little noise, so they compress like
             photos) and 512-px palette-colour PNG masks; every item is decoded at full size, its mask snapped to
             the palette, both resized to DATA.IMAGE_SIZE (cfg/mmceleba.yml: 256)
  prepared   what scripts/prepare_mmceleba.py writes with --size 256: images and colour masks at training size
  prepared_label  the same with --mask-format label (label-id PNGs: no palette snapping)

For each layout and worker count: images per second over --epochs passes (the first batch, which starts the
workers, is not counted), the rate per worker, and with --gpu-rate R (images per second a GPU trains at) the
workers each GPU needs: ceil(R / rate per worker).
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pixelface.core.config import load_config, project_home
from pixelface.core.runtime import cores_available, cpu_model
from pixelface.data.datasets import FaceDataset
from pixelface.data.masks import color_to_label
from pixelface.data.synthface import write_dataset

LAYOUTS = ("mmceleba", "prepared", "prepared_label")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num", type=int, default=256, help="faces per layout, 80%% of them in the train split (default 256)")
    p.add_argument("--workers", default="0,1,2", help="comma-separated DataLoader worker counts (default 0,1,2)")
    p.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    p.add_argument("--epochs", type=int, default=2, help="passes over the faces per measurement (default 2)")
    p.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma-separated subset of {','.join(LAYOUTS)}")
    p.add_argument("--gpu-rate", type=float, default=None, help="images/s one GPU trains at: workers needed per GPU")
    p.add_argument("--cfg", default=str(project_home() / "cfg" / "mmceleba.yml"), help="config (default mmceleba)")
    return p.parse_args(argv)


def _noisy_upscale(image: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    big = np.asarray(image.resize((size, size), Image.BICUBIC), np.float32)
    big = big + rng.normal(0, 3, big.shape)          # sensor-like noise: photos do not compress like cartoons
    return Image.fromarray(np.clip(big, 0, 255).astype(np.uint8))


def make_layouts(folder: Path, num: int, names) -> dict[str, Path]:
    """{layout: dataset root} for the requested layouts, all showing the same `num` faces."""
    base = write_dataset(folder / "prepared", num, 256, seed=0, workers=1)
    roots = {"prepared": base}
    ids = [p.stem for p in sorted((base / "images").glob("*.jpg"))]
    rng = np.random.default_rng(0)
    if "mmceleba" in names:
        root = roots["mmceleba"] = folder / "mmceleba"
        for sub in ("images", "masks"):
            (root / sub).mkdir(parents=True)
        for i in ids:
            _noisy_upscale(Image.open(base / "images" / f"{i}.jpg"), 1024, rng).save(
                root / "images" / f"{i}.jpg", quality=95)
            Image.open(base / "masks" / f"{i}.png").resize((512, 512), Image.NEAREST).save(root / "masks" / f"{i}.png")
        shutil.copy(base / "dataset2.json", root / "dataset2.json")
    if "prepared_label" in names:
        root = roots["prepared_label"] = folder / "prepared_label"
        shutil.copytree(base / "images", root / "images")
        (root / "masks").mkdir()
        for i in ids:
            labels = color_to_label(np.asarray(Image.open(base / "masks" / f"{i}.png").convert("RGB")))
            Image.fromarray(labels).save(root / "masks" / f"{i}.png")
        shutil.copy(base / "dataset2.json", root / "dataset2.json")
    return {name: roots[name] for name in names}


def images_per_second(dataset, workers: int, batch: int, epochs: int) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=workers > 0,
                                         generator=torch.Generator().manual_seed(0))
    counted, started = 0, None
    for _ in range(epochs):
        for items in loader:
            if started is None:              # the first batch pays for starting the workers
                started = time.perf_counter()
                continue
            counted += items["image"].shape[0]
    if not counted:
        raise SystemExit(f"only one batch of {batch} per pass: raise --num or --epochs, or lower --batch")
    return counted / (time.perf_counter() - started)


def run(args) -> dict:
    names = [n for n in args.layouts.split(",") if n]
    unknown = sorted(set(names) - set(LAYOUTS))
    if unknown:
        raise SystemExit(f"--layouts: unknown {unknown}; choose from {', '.join(LAYOUTS)}")
    workers = [int(w) for w in args.workers.split(",")]
    torch.set_num_threads(1)
    results = {"cpu": cpu_model(), "cores": cores_available(), "batch": args.batch,
               "num": args.num, "layouts": {}}
    with tempfile.TemporaryDirectory(prefix="pixelface-data-bench-") as tmp:
        roots = make_layouts(Path(tmp), args.num, names)
        for name, root in roots.items():
            kind = "label" if name == "prepared_label" else "color"
            cfg = load_config(args.cfg, [f"DATA.ROOT={root}", f"DATA.MASK_KIND={kind}", "DATA.SYNTHESIZE=false"])
            dataset = FaceDataset(cfg, "train", train=True)
            row = {}
            for w in workers:
                rate = images_per_second(dataset, w, min(args.batch, len(dataset)), args.epochs)
                row[str(w)] = {"img_per_s": round(rate, 1), "per_worker": round(rate / max(w, 1), 1)}
            results["layouts"][name] = row
    per_worker = {name: max(v["per_worker"] for v in row.values()) for name, row in results["layouts"].items()}
    results["per_worker_img_per_s"] = per_worker
    if args.gpu_rate:
        results["gpu_rate"] = args.gpu_rate
        results["workers_per_gpu"] = {name: math.ceil(args.gpu_rate / rate) for name, rate in per_worker.items()}
    return results


def print_table(results: dict, file=sys.stderr) -> None:
    print(f"{results['cpu']}, batch {results['batch']}, {results['num']} faces", file=file)
    for name, row in results["layouts"].items():
        cells = ", ".join(f"{w} workers {v['img_per_s']} img/s" for w, v in row.items())
        need = results.get("workers_per_gpu", {}).get(name)
        print(f"  {name:15s} {cells}" + (f"; {need} workers per GPU at {results['gpu_rate']:g} img/s" if need else ""),
              file=file)


def main(argv=None) -> int:
    results = run(parse_args(argv))
    print_table(results)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
