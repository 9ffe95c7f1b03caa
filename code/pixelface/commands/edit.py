"""Edit a given face: invert it into the generator, then change its description and/or its mask.

    pixelface-edit --ckpt runs/synthface-00000/checkpoints/ckpt-000100000.pt \\
        --image face.png --mask face_mask.png --caption "she has brown straight hair" \\
        --edit-text "she has blond straight hair" --edit-mask short_hair.png \\
        --edit "she has black hair" short_hair.png --out edits/

(in a checkout also `python scripts/manipulate.py ...`, the same command).

A photo (--image) is first aligned as the training faces were (--align auto: unless it already is an aligned
crop; see pixelface.editing.face_crop): the face is found (the largest, or --face K), its CelebA-HQ/FFHQ crop is
inverted and edited, and every result is also written as the whole photo with the edited face put back
(photo_reconstruction.EXT, photo_edit_<k>.EXT, in the photo's own format). --mask is then the mask of that
aligned crop (scripts/make_mask.py --align writes it); --parser predicts it on the crop.

The mask comes from --mask, the dataset (--from-dataset SPLIT --id ID, which also gives the image and, without
--caption, its caption) or a face parser (--parser: this project's, or face-parsing.PyTorch's 79999_iter.pth).
Inversion fits W+ and the noise maps (optionally followed by --pti-steps of generator fine-tuning) and is saved
as inversion.pt; pass it back with --inversion to make more edits without inverting again. Writes original.png,
reconstruction.png, edit_<k>.png, strip.png (images on top, their masks below) and report.json (reconstruction
PSNR, LPIPS when available, CLIP similarity of each edit to its text). Existing files are kept unless --force.
"""
import dataclasses
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from pixelface.commands.launch import launch
from pixelface.core import cli, errors
from pixelface.core.devices import resolve_device
from pixelface.core.files import write_json_atomic
from pixelface.data.images import photo_suffix, picture_grid, save_photo, save_png, signed_tensor, to_uint8
from pixelface.data.masks import color_tensor
from pixelface.editing import inputs, manipulation
from pixelface.editing.face_crop import FaceCrop, read_face
from pixelface.evaluation import measures
from pixelface.evaluation.faceparsing import load_any_parser
from pixelface.networks.checkpoint import checkpoint_hash, load_generator
from pixelface.networks.text_encoder import TextEncoder


def source_face(args, cfg, text_encoder, device) -> tuple[torch.Tensor, torch.Tensor, str, dict, FaceCrop | None]:
    """(image (3,S,S), labels (S,S), cleaned caption, where each came from, the photo's FaceCrop or None) of the
    face to invert."""
    size = cfg.MODEL.SIZE
    if args.from_dataset:
        if args.data_root:
            cfg.DATA.ROOT = str(Path(args.data_root).resolve())  # relative to where the user stands
        item = inputs.dataset_items(cfg, args.from_dataset, [args.id])[0]
        image, labels, caption = item["image"], item["labels"], args.caption or item["caption"]
        origin = {"image": f"{args.from_dataset}:{args.id}", "mask": f"{args.from_dataset}:{args.id}"}
        photo = None
    else:
        if not args.caption:
            raise errors.InputError("--caption is required: describe the face in --image")
        photo = read_face(args.image, size, args.align, args.face, args.detector)
        image = signed_tensor(Image.fromarray(photo.crop))
        caption = args.caption
        if args.mask:
            inputs.check_same_aspect(args.image if photo.alignment is None else photo.crop, args.mask)
            labels = inputs.read_mask(args.mask, size, cfg.DATA.MASK_SNAP_DISTANCE, cfg.DATA.MASK_MAX_OFF_PALETTE,
                                       args.mask_order)
            origin = {"image": args.image, "mask": args.mask}
        else:
            labels = load_any_parser(args.parser, device).predict(image[None])[0].cpu()
            origin = {"image": args.image, "mask": f"predicted by {args.parser}"}
        origin["alignment"] = photo.to_json()
    return image, labels, inputs.prepare_captions([caption], cfg, text_encoder)[0], origin, photo


def read_edits(args, cfg, text_encoder, inversion_caption: str) -> list[dict]:
    """Each edit's cleaned caption, label map (None: keep) and description, read before any work is done."""
    edits = []
    for text, mask in args.edits or []:
        caption = inputs.prepare_captions([text], cfg, text_encoder)[0] if text is not None else None
        labels = (inputs.read_mask(mask, cfg.MODEL.SIZE, cfg.DATA.MASK_SNAP_DISTANCE, cfg.DATA.MASK_MAX_OFF_PALETTE,
                                    args.mask_order) if mask is not None else None)
        edits.append({"caption": caption, "labels": labels,
                      "text": caption if caption is not None else inversion_caption, "mask": mask or "original"})
    return edits


def settings_from(args) -> manipulation.InversionSettings:
    if args.steps < 1 or args.pti_steps < 0:
        raise errors.InputError(f"--steps {args.steps} must be >= 1 and --pti-steps {args.pti_steps} >= 0")
    return manipulation.InversionSettings(steps=args.steps, perceptual=args.perceptual, finetune_steps=args.pti_steps,
                                     seed=args.seed)


def run(args) -> Path:
    device = resolve_device(args.device)
    g, cfg = load_generator(args.ckpt, device)
    text_encoder = TextEncoder.from_config(cfg).to(device)
    ckpt_hash = checkpoint_hash(args.ckpt)
    settings = settings_from(args)
    if args.inversion:
        inversion = manipulation.load_inversion(args.inversion, ckpt_hash)
        origin = {"image": f"from {args.inversion}", "mask": f"from {args.inversion}"}
        photo = None
    else:
        image, labels, caption, origin, photo = source_face(args, cfg, text_encoder, device)
    edits = read_edits(args, cfg, text_encoder, inversion.caption if args.inversion else caption)

    out = Path(args.out)
    names = ["original.png", "reconstruction.png", *(f"edit_{k}.png" for k in range(1, len(edits) + 1)),
             "strip.png", "report.json", *([] if args.inversion else ["inversion.pt"]),
             *photo_names(photo, args.image, len(edits))]
    cli.check_free([out / n for n in names], args.force)

    started = time.time()
    if not args.inversion:
        inversion = manipulation.invert(g, text_encoder, cfg, image, labels, caption, settings, progress=True)
    inverted = time.time()
    g_edit = manipulation.generator_for(g, inversion)
    reconstruction = manipulation.edit(g_edit, text_encoder, cfg, inversion)
    results = [manipulation.edit(g_edit, text_encoder, cfg, inversion, e["caption"], e["labels"]) for e in edits]
    finished = time.time()

    if not args.inversion:
        manipulation.save_inversion(inversion, out / "inversion.pt", ckpt_hash)
    report = {"checkpoint": str(args.ckpt), "checkpoint_hash": ckpt_hash,
              "text_encoder": inputs.text_encoder_source(cfg), "caption": inversion.caption, **origin,
              "inversion": {"file": args.inversion or "inversion.pt", **dataclasses.asdict(inversion.settings),
                            "loss_start": inversion.losses[0], "loss_end": inversion.losses[-1],
                            "seconds": None if args.inversion else round(inverted - started, 2)},
              "edit_seconds": round(finished - inverted, 2),
              **measure(text_encoder, inversion, reconstruction, results, edits)}
    write_pictures(out, inversion, reconstruction, results, edits)
    write_photos(out, photo, args.image, inversion, reconstruction, results, edits)
    write_json_atomic(out / "report.json", report)
    return out


def photo_names(photo: FaceCrop | None, source, edits: int) -> list[str]:
    """The whole-photo outputs of an aligned photo, in its own format: the reconstruction, then each edit."""
    if photo is None or photo.alignment is None:
        return []
    suffix = photo_suffix(source)
    return [f"photo_reconstruction{suffix}", *(f"photo_edit_{k}{suffix}" for k in range(1, edits + 1))]


def write_photos(out: Path, photo: FaceCrop | None, source, inversion, reconstruction, results, edits) -> None:
    """Each result put back into the whole photo, over the face and hair of the original and the edited mask."""
    names = photo_names(photo, source, len(edits))
    masks = [None, *(e["labels"] for e in edits)]
    for name, image, mask in zip(names, [reconstruction, *results], masks):
        labels = [inversion.labels.cpu()] + ([] if mask is None else [mask.cpu()])
        save_photo(photo.paste(to_uint8(image).permute(1, 2, 0).cpu().numpy(), labels), out / name)


def measure(text_encoder, inversion, reconstruction, results, edits) -> dict:
    net = manipulation.lpips_network("cpu")
    recon = {"file": "reconstruction.png", "psnr": round(measures.psnr(reconstruction, inversion.target), 3),
             "lpips": None if net is None else round(measures.lpips_distance(net, reconstruction, inversion.target), 4),
             "clip_similarity": round(measures.clip_similarity(text_encoder, reconstruction[None],
                                                              [inversion.caption])[0], 4)}
    similarity = (measures.clip_similarity(text_encoder, torch.stack(results), [e["text"] for e in edits])
                  if results else [])
    return {"reconstruction": recon,
            "edits": [{"file": f"edit_{k}.png", "caption": e["text"], "mask": e["mask"], "clip_similarity": round(s, 4)}
                      for k, (e, s) in enumerate(zip(edits, similarity), 1)]}


def write_pictures(out: Path, inversion, reconstruction, results, edits) -> None:
    save_png(inversion.target, out / "original.png")
    save_png(reconstruction, out / "reconstruction.png")
    for k, image in enumerate(results, 1):
        save_png(image, out / f"edit_{k}.png")
    masks = [inversion.labels, inversion.labels, *(e["labels"] if e["labels"] is not None else inversion.labels
                                                   for e in edits)]
    strip = [[inversion.target, reconstruction, *results], [color_tensor(m.cpu()) for m in masks]]
    save_png(picture_grid(strip), out / "strip.png")


def execute(args) -> int:
    """Run the command on parsed arguments (pixelface.commands.parsers.edit) -> exit code."""
    return cli.run(lambda: print(f"wrote original, reconstruction, {len(args.edits or [])} edits, strip.png and "
                                 f"report.json to {run(args)}"))


def main(argv=None) -> int:
    return launch("edit", argv)


if __name__ == "__main__":
    sys.exit(main())
