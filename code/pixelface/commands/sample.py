"""Generate faces from a checkpoint for given captions and masks, reproducibly per seed.

    pixelface-sample --ckpt runs/synthface-00000/checkpoints/ckpt-000100000.pt \\
        --text "she has blond wavy hair" --text "he has black hair and a beard" \\
        --from-dataset test --ids 7 --seeds 0-3 --out samples/

(in a checkout also `python scripts/sample.py ...`, the same command).

Captions pair with masks one-to-one, one mask with every caption, or one caption with every mask; every pair
is generated once per seed. Writes <pair>_seed<seed>.png per sample, grid.png (one row per pair: its mask,
then one column per seed) with grid.txt naming each row's caption, and samples.json recording what made each
file. A seed's image does not depend on what else is generated with it. Existing files are kept unless --force.
"""
import sys
from pathlib import Path

import torch

from pixelface.commands.launch import launch
from pixelface.core import cli, errors
from pixelface.core.devices import resolve_device
from pixelface.core.files import write_json_atomic, write_text_atomic
from pixelface.data.images import picture_grid, save_png
from pixelface.data.mask_files import read_labels
from pixelface.data.mask_input import model_mask
from pixelface.data.masks import color_tensor, resize_labels
from pixelface.editing import inputs
from pixelface.networks import generation
from pixelface.networks.checkpoint import checkpoint_hash, load_generator
from pixelface.networks.text_encoder import TextEncoder


def read_text_file(path: str) -> list[str]:
    """One caption per non-blank line."""
    file = Path(path)
    if not file.is_file():
        raise errors.InputError(f"caption file {file} does not exist")
    try:
        captions = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as e:
        raise errors.InputError(f"caption file {file} is not UTF-8 text ({e})") from None
    if not captions:
        raise errors.InputError(f"caption file {file} holds no captions")
    return captions


def gather_conditions(args, cfg, text_encoder) -> tuple[list[tuple[str, torch.Tensor, torch.Tensor]], list[str]]:
    """([(mask name, (S,S) labels, G's (C,S,S) mask input)], cleaned captions) from the command line."""
    size = cfg.MODEL.SIZE
    if args.from_dataset:
        if args.data_root:
            cfg.DATA.ROOT = str(Path(args.data_root).resolve())  # relative to where the user stands
        items = inputs.dataset_items(cfg, args.from_dataset, args.ids)
        masks = [(f"{args.from_dataset}:{item['id']}", item["labels"], item["mask"]) for item in items]
        dataset_captions = [item["caption"] for item in items]
    else:
        masks = []
        for m in args.mask:
            labels = read_labels(m, cfg.DATA.MASK_SNAP_DISTANCE, cfg.DATA.MASK_MAX_OFF_PALETTE, args.mask_order)
            masks.append((m, resize_labels(labels, size), model_mask(labels, cfg)))
        dataset_captions = None
    if args.text_file:
        raw = read_text_file(args.text_file)
    elif args.text:
        raw = args.text
    elif dataset_captions is not None:
        raw = dataset_captions  # each dataset mask with its own caption
    else:
        raise errors.InputError("no captions: give --text or --text-file (or --from-dataset to use its captions)")
    return masks, inputs.prepare_captions(raw, cfg, text_encoder)


def output_paths(out: Path, pairs: list, seeds: list[int]) -> dict:
    samples = {(p, seed): out / f"{p:03d}_seed{seed}.png" for p in range(len(pairs)) for seed in seeds}
    return {"samples": samples, "grid": out / "grid.png", "captions": out / "grid.txt",
            "record": out / "samples.json"}


def write_outputs(paths: dict, images: torch.Tensor, masks, captions, pairs, seeds, record: dict) -> None:
    files, rows = [], []
    keys = list(paths["samples"])
    for (p, seed), image in zip(keys, images):
        save_png(image, paths["samples"][(p, seed)])
        mask_index, caption_index = pairs[p]
        files.append({"file": paths["samples"][(p, seed)].name, "caption": captions[caption_index],
                      "mask": masks[mask_index][0], "seed": seed, "truncation": record["truncation"]})
    per_pair = images.view(len(pairs), len(seeds), *images.shape[1:])
    for p, (mask_index, _) in enumerate(pairs):
        rows.append([color_tensor(masks[mask_index][1].cpu()), *per_pair[p]])
    save_png(picture_grid(rows), paths["grid"])
    lines = [f"row {p}: {captions[c]}  (mask {masks[m][0]})" for p, (m, c) in enumerate(pairs)]
    write_text_atomic(paths["captions"], "columns: mask, then seeds " + ", ".join(map(str, seeds)) + "\n"
                      + "\n".join(lines) + "\n")
    write_json_atomic(paths["record"], {**record, "grid": paths["grid"].name, "files": files})


def run(args) -> Path:
    seeds = cli.parse_seeds(args.seeds)
    if not 0.0 <= args.truncation <= 1.0:
        raise errors.InputError(f"--truncation {args.truncation}: expected a value in [0, 1]")
    if args.batch_size < 1:
        raise errors.InputError(f"--batch-size {args.batch_size}: expected at least 1")
    device = resolve_device(args.device)
    g, cfg = load_generator(args.ckpt, device)
    text_encoder = TextEncoder.from_config(cfg).to(device)
    masks, captions = gather_conditions(args, cfg, text_encoder)
    pairs = inputs.pair_conditions(len(masks), len(captions))
    out = Path(args.out)
    paths = output_paths(out, pairs, seeds)
    cli.check_free([*paths["samples"].values(), paths["grid"], paths["captions"], paths["record"]], args.force)

    order = list(paths["samples"])  # (pair, seed), pair-major: the grid's row order
    images = generation.sample(g, text_encoder, cfg, torch.stack([masks[pairs[p][0]][2] for p, _ in order]),
                              [captions[pairs[p][1]] for p, _ in order], [seed for _, seed in order],
                              truncation=args.truncation, batch_size=args.batch_size, progress=True, amp=args.amp)
    dtype = generation.autocast_dtype(args.amp, cfg, device)
    record = {"checkpoint": str(args.ckpt), "checkpoint_hash": checkpoint_hash(args.ckpt),
              "text_encoder": inputs.text_encoder_source(cfg), "truncation": args.truncation,
              "batch_size": args.batch_size, "precision": "bf16" if dtype is torch.bfloat16 else "float32"}
    write_outputs(paths, images, masks, captions, pairs, seeds, record)
    return out


def execute(args) -> int:
    """Run the command on parsed arguments (pixelface.commands.parsers.sample) -> exit code."""
    return cli.run(lambda: print(f"wrote samples, grid.png and samples.json to {run(args)}"))


def main(argv=None) -> int:
    return launch("sample", argv)


if __name__ == "__main__":
    sys.exit(main())
