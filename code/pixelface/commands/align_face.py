"""Find the face in a photo and write its aligned crop, with the transform and landmarks beside it.

    pixelface-align --image photo.jpg --out crop.png [--size 256] [--face K]

(in a checkout also `python scripts/align_face.py ...`, the same command).

The crop is cut as CelebA-HQ and FFHQ were (pixelface.data.face_alignment); crop.json holds every face found
(box, score, five landmarks), which one was used, and the crop->photo matrix with its inverse, so an edit of the
crop can be put back into the photo. Existing files are kept unless --force.
"""
import sys
from pathlib import Path

from PIL import Image

from pixelface.commands.launch import launch
from pixelface.core import cli, errors
from pixelface.core.files import atomic_write, write_json_atomic
from pixelface.data.images import MAX_PIXELS
from pixelface.data.face_detection import load_detector
from pixelface.editing.face_crop import read_face
from pixelface.editing.inputs import image_shape

MAX_SIZE = int(MAX_PIXELS ** 0.5)


def run(args) -> None:
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise errors.InputError(f"--out {out}: expected a .png file")
    if not 1 <= args.size <= MAX_SIZE:
        raise errors.InputError(f"--size {args.size}: expected a side between 1 and {MAX_SIZE} pixels")
    report = out.with_suffix(".json")
    image_shape(args.image)                    # a bad photo or detector is named before any folder is made
    detector = load_detector(args.detector) if args.align == "on" else args.detector
    cli.check_free([out, report], args.force)
    face = read_face(args.image, args.size, args.align, args.face, detector)
    crop = Image.fromarray(face.crop)
    atomic_write(out, lambda tmp: crop.save(tmp, format="PNG"))
    write_json_atomic(report, {"image": str(args.image), "size": args.size, **face.to_json()})
    found = len(face.faces)
    print(f"wrote {out} ({face.how}; {found} face{'s' * (found != 1)} found"
          f"{'' if face.index is None else f', used face {face.index}'}) and {report}")


def execute(args) -> int:
    """Run the command on parsed arguments (pixelface.commands.parsers.align_face) -> exit code."""
    return cli.run(run, args)


def main(argv=None) -> int:
    return launch("align_face", argv)


if __name__ == "__main__":
    sys.exit(main())
