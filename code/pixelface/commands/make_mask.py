"""Predict the CelebAMask-HQ mask of a photo with a face parser, plus an overlay to check it by eye.

    pixelface-make-mask --image face.jpg --parser 79999_iter.pth --out face_mask.png

(in a checkout also `python scripts/make_mask.py ...`, the same command).

--parser takes this project's parser (e.g. models/parser_synthface.pt, made by scripts/train_parser.py) or
the BiSeNet weights of face-parsing.PyTorch (79999_iter.pth); nothing is downloaded. The photo is cut as
scripts/manipulate.py cuts it (--align auto: the aligned CelebA-HQ/FFHQ crop of its face, unless it already is
one, then a centre crop), and the mask is written in the CelebAMask-HQ palette at --size (default: the
photo's shorter side, ALIGNED_SIZE for an aligned crop), ready for --mask of scripts/sample.py and
scripts/manipulate.py. The photo is parsed at most MAX_PARSE_SIDE large (the overlay too) and the mask resized to
--size. An aligned crop is also written, as <stem of --out>_crop.png, to see what the mask covers.
The overlay (default: <stem of --out>_overlay.png next to it) shows the mask colours blended half over the
photo. Existing files are kept unless --force.
"""
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from pixelface.commands.launch import launch
from pixelface.core import cli, errors
from pixelface.core.devices import resolve_device
from pixelface.core.files import atomic_write
from pixelface.data.images import MAX_PIXELS, signed_tensor
from pixelface.data.masks import LABELS, NUM_CLASSES, label_to_color, resize_labels
from pixelface.editing import inputs
from pixelface.editing.face_crop import read_face
from pixelface.evaluation.faceparsing import load_any_parser

MAX_SIZE = int(MAX_PIXELS ** 0.5)   # the largest side an input image may have
ALIGNED_SIZE = 512                  # default side of the mask of an aligned face crop
MAX_PARSE_SIDE = 1024               # the photo is parsed (and the overlay drawn) at most this large; the mask is
                                    # then resized to --size, so an 8000 px photo costs what a 1024 px one does
OVERLAY_WEIGHT = 0.5                # share of the mask colour in the overlay


def output_paths(args) -> tuple[Path, Path, Path]:
    """(mask, overlay, crop) paths, refused (InputError) unless they are distinct .png files other than the photo."""
    out = Path(args.out)
    overlay = Path(args.overlay) if args.overlay else out.with_name(f"{out.stem}_overlay.png")
    crop = out.with_name(f"{out.stem}_crop.png")
    if crop.resolve() in (overlay.resolve(), Path(args.image).resolve()):
        raise errors.InputError(f"{crop} (the aligned crop beside --out) is also --overlay or the photo; choose "
                                f"another --out")
    for flag, path in (("--out", out), ("--overlay", overlay)):
        if path.suffix.lower() != ".png":
            raise errors.InputError(f"{flag} {path}: expected a .png file (JPEG noise would blur the palette colours)")
        if path.resolve() == Path(args.image).resolve():
            raise errors.InputError(f"{flag} {path} is the photo itself; choose another file")
    if out.resolve() == overlay.resolve():
        raise errors.InputError(f"--out and --overlay are both {out}; give them different names")
    return out, overlay, crop


def overlay_picture(photo: np.ndarray, colours: np.ndarray, weight: float = OVERLAY_WEIGHT) -> np.ndarray:
    """(S,S,3) uint8 photo and palette colours -> their blend, `weight` of the colour, rounded."""
    blend = (1.0 - weight) * photo.astype(np.float32) + weight * colours.astype(np.float32)
    return np.clip(np.round(blend), 0, 255).astype(np.uint8)


def save_png(array: np.ndarray, path: Path) -> None:
    picture = Image.fromarray(array)
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))


def class_shares(labels: np.ndarray, least: float = 0.01) -> str:
    """'skin 41%, hair 22%, ...': the classes covering at least `least` of the mask, largest first."""
    counts = np.bincount(labels.reshape(-1), minlength=NUM_CLASSES) / labels.size
    order = [i for i in np.argsort(-counts) if counts[i] >= least]
    return ", ".join(f"{LABELS[i]} {counts[i]:.0%}" for i in order)


def run(args) -> None:
    if args.size is not None and not 1 <= args.size <= MAX_SIZE:
        raise errors.InputError(f"--size {args.size}: expected a side between 1 and {MAX_SIZE} pixels")
    out, overlay, crop_path = output_paths(args)
    device = resolve_device(args.device)
    width, height = inputs.image_shape(args.image)          # a bad photo or parser file is named before
    face_parser = load_any_parser(args.parser, device)       # any folder is made or the network runs
    cli.check_free([out, overlay], args.force)
    size = args.size or min(width, height)
    face = read_face(args.image, min(size, MAX_PARSE_SIDE), args.align, args.face, args.detector)
    if face.alignment is not None and args.size is None:
        size = ALIGNED_SIZE
        face = face.at_size(min(size, MAX_PARSE_SIDE))
    parsed = face_parser.predict(signed_tensor(Image.fromarray(face.crop))[None])[0].cpu().numpy()
    labels = parsed if size == parsed.shape[0] else resize_labels(parsed, size).numpy()
    written = [out, overlay]
    if face.alignment is not None:
        cli.check_free([crop_path], args.force)
        save_png(face.crop, crop_path)
        written.append(crop_path)
    save_png(label_to_color(labels), out)
    save_png(overlay_picture(face.crop, label_to_color(parsed)), overlay)
    print(f"wrote {out} ({size}x{size} of the {face.how} face, CelebAMask-HQ palette; {class_shares(labels)}), "
          f"{' and '.join(str(p) for p in written[1:])}")


def execute(args) -> int:
    """Run the command on parsed arguments (pixelface.commands.parsers.make_mask) -> exit code."""
    return cli.run(run, args)


def main(argv=None) -> int:
    return launch("make_mask", argv)


if __name__ == "__main__":
    sys.exit(main())
