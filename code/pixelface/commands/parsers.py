"""The argument parsers of every command, kept free of torch and the networks: `--help` (and a bad option)
answers in a fraction of a second, and pixelface.commands.launch imports a command's module only after its
arguments parse. Each parser shows examples and every default.
"""
from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from pixelface.core.config import project_home

DEVICE_HELP = "torch device: auto (CUDA when present, else the CPU), cpu, cuda or cuda:N"
# The metric registry's names (pixelface.evaluation.registry, which loads torch); a test keeps them equal.
METRIC_NAMES = ("fid", "kid", "fid_clip", "clip_score", "r_precision", "mask_acc", "texture", "attr_acc",
                "fid_parser", "sharpness", "seed_spread", "diversity")
INVERSION_STEPS = 250    # manipulation.InversionSettings.steps; a test keeps them equal
MASK_ORDERS = ("celebamask", "faceparsing")   # data.masks.MASK_ORDERS; a test keeps them equal
ALIGN_MODES = ("auto", "on", "off")           # editing.face_crop.ALIGN_MODES; a test keeps them equal


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples kept as written, every default shown."""


def _parser(prog: str, description: str, examples: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=_Formatter,
                                   epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  "))


def train() -> argparse.ArgumentParser:
    p = _parser("pixelface-train", "Train PixelFace+ (prepares missing data and CLIP weights on the way).", """
        python code/main.py --nproc 2 --cfg cfg/synthface.yml      # 2 processes, loopback only (in a checkout)
        pixelface-train --nproc 2 --cfg synthface --set TRAIN.TOTAL_KIMG=50
        torchrun --nproc_per_node N --max-restarts 3 code/main.py --cfg cfg/X.yml --resume auto   # clusters
        pixelface-train --cfg cfg/smoke.yml --resume auto                          # one process
        """)
    p.add_argument("--cfg", help="YAML config overriding the defaults in pixelface/core/config.py, or a bare config name")
    p.add_argument("--set", action="append", default=[], metavar="KEY.SUB=VALUE", help="override one config key (repeatable)")
    p.add_argument("--out", type=Path, default=project_home() / "runs", help="parent folder of run folders")
    p.add_argument("--resume", default=None, metavar="auto|PATH",
                   help="'auto': continue the newest run of this config; or a checkpoint / run folder")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help=DEVICE_HELP)
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train with N processes on this machine, every socket on loopback (not under torchrun)")
    p.add_argument("--help-config", action="store_true", help="list every config key and exit")
    return p


def sample() -> argparse.ArgumentParser:
    p = _parser("pixelface-sample", "Generate faces from a checkpoint for given captions and masks, reproducibly per seed.", """
        pixelface-sample --ckpt runs/synthface-00000/checkpoints/ckpt-000024000.pt \\
            --text "she has blond hair" --text "he has black hair and a beard" --from-dataset test --ids 8 \\
            --seeds 0-3 --out samples/demo
        python scripts/sample.py --ckpt model_folder --mask mask.png --text-file captions.txt --out samples/mine
        """)
    p.add_argument("--ckpt", required=True, help="training checkpoint or exported model folder (its G_ema and config)")
    text = p.add_mutually_exclusive_group()
    text.add_argument("--text", action="append", help="a caption (repeatable)")
    text.add_argument("--text-file", help="file with one caption per line")
    layout = p.add_mutually_exclusive_group(required=True)
    layout.add_argument("--mask", action="append", help="mask image, palette colours or label ids, any size (repeatable)")
    layout.add_argument("--from-dataset", metavar="SPLIT", choices=("train", "test"),
                        help="take masks (and, without --text, captions) from the checkpoint's dataset")
    p.add_argument("--mask-order", choices=MASK_ORDERS, default="celebamask",
                   help="numbering of label-id --mask files: CelebAMask-HQ's or face-parsing.PyTorch's (BiSeNet); "
                        "colour masks always use the CelebAMask-HQ palette")
    p.add_argument("--ids", nargs="+", default=[], help="image ids for --from-dataset")
    p.add_argument("--data-root", help="dataset folder for --from-dataset (default: the checkpoint's DATA.ROOT)")
    p.add_argument("--seeds", default="0", help="seeds, e.g. 0-7 or 1,5,9-11")
    p.add_argument("--truncation", type=float, default=1.0, help="psi in [0,1]; < 1 pulls w toward the mean")
    p.add_argument("--amp", choices=("auto", "none", "bf16"), default="auto",
                   help="G's precision: bf16 autocast, float32 (none), or auto: bf16 on a CPU with bf16 units for a "
                        "model of the reference's width, where it is faster (docs/speed.md)")
    p.add_argument("--batch-size", type=int, default=1,
                   help="samples per forward pass; 1 keeps every seed's bytes independent of the batch, more is "
                        "faster on a GPU and may move a rare pixel by one 8-bit level")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    return p


def check_sample(p: argparse.ArgumentParser, args) -> None:
    if args.from_dataset and not args.ids:
        p.error("--from-dataset needs --ids")
    if args.ids and not args.from_dataset:
        p.error("--ids needs --from-dataset")


class EditAction(argparse.Action):
    """Collects --edit-text, --edit-mask and --edit into one list of (text or None, mask or None), in order."""

    def __call__(self, parser, namespace, values, option_string=None):
        edits = list(getattr(namespace, self.dest) or [])
        if option_string == "--edit-text":
            edits.append((values, None))
        elif option_string == "--edit-mask":
            edits.append((None, values))
        else:
            edits.append(tuple(values))
        setattr(namespace, self.dest, edits)


def edit() -> argparse.ArgumentParser:
    p = _parser("pixelface-edit", "Edit a given face: invert it, then change its description and/or its mask.", """
        pixelface-edit --ckpt model.pt --from-dataset test --id 8 --edit-text "she has black hair" --out edits/8
        python scripts/manipulate.py --ckpt model.pt --image face.png --mask face_mask.png \\
            --caption "she has blond hair" --edit-mask short_hair.png --out edits/mine
        pixelface-edit --ckpt model.pt --image phone_photo.jpg --parser 79999_iter.pth --caption "he has short hair" \
            --edit-text "he has blond short hair" --out edits/photo     # also writes photo_edit_1.jpg, the whole photo
        """)
    p.add_argument("--ckpt", required=True, help="training checkpoint or exported model folder (its G_ema and config)")
    face = p.add_mutually_exclusive_group(required=True)
    face.add_argument("--image", help="the face or photo to edit (any size; aligned as the training faces were, see --align)")
    face.add_argument("--from-dataset", metavar="SPLIT", choices=("train", "test"),
                      help="take image, mask and caption from the checkpoint's dataset (with --id)")
    face.add_argument("--inversion", help="inversion.pt written by an earlier run: edit it without inverting again")
    mask = p.add_mutually_exclusive_group()
    mask.add_argument("--mask", help="the image's mask: palette colours or label ids, any size")
    mask.add_argument("--parser", metavar="FILE",
                      help="face parser that predicts the mask instead: this project's (e.g. models/parser_synthface.pt, "
                           "made by scripts/train_parser.py) or face-parsing.PyTorch's BiSeNet weights 79999_iter.pth")
    p.add_argument("--mask-order", choices=MASK_ORDERS, default="celebamask",
                   help="numbering of label-id mask files (--mask, --edit-mask, --edit): CelebAMask-HQ's or "
                        "face-parsing.PyTorch's (BiSeNet); colour masks always use the CelebAMask-HQ palette")
    p.add_argument("--id", help="image id for --from-dataset")
    p.add_argument("--data-root", help="dataset folder for --from-dataset (default: the checkpoint's DATA.ROOT)")
    p.add_argument("--caption", help="what the face looks like (required with --image)")
    p.add_argument("--edit-text", action=EditAction, dest="edits", metavar="TEXT",
                   help="an edit: new description, same mask (repeatable)")
    p.add_argument("--edit-mask", action=EditAction, dest="edits", metavar="FILE",
                   help="an edit: new mask, same description (repeatable)")
    p.add_argument("--edit", action=EditAction, dest="edits", nargs=2, metavar=("TEXT", "FILE"),
                   help="an edit of both description and mask (repeatable)")
    p.add_argument("--steps", type=int, default=INVERSION_STEPS, help="inversion steps")
    p.add_argument("--pti-steps", type=int, default=0, help="generator fine-tuning steps after inversion (PTI)")
    p.add_argument("--perceptual", choices=("auto", "lpips", "clip", "none"), default="auto",
                   help="perceptual loss: LPIPS when installed with its weights, else CLIP image features")
    p.add_argument("--seed", type=int, default=0, help="seed of the inversion's initial noise maps")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    add_alignment(p)
    return p


def check_edit(p: argparse.ArgumentParser, args) -> None:
    if args.image and not (args.mask or args.parser):
        p.error("--image needs its mask: --mask FILE or --parser FILE")
    if bool(args.from_dataset) != bool(args.id):
        p.error("--from-dataset and --id go together")
    if args.from_dataset and (args.mask or args.parser):
        p.error("--from-dataset already gives the mask; drop --mask/--parser")
    if args.inversion and (args.mask or args.parser or args.caption):
        p.error("--inversion already holds the mask and caption; drop --mask/--parser/--caption")


def evaluate() -> argparse.ArgumentParser:
    p = _parser("pixelface-eval", "Evaluate generator checkpoints on a split's real masks and captions.", """
        pixelface-eval --ckpt runs/synthface-00000/checkpoints/ckpt-000024000.pt --num 1000 --out eval/run1
        pixelface-eval --ckpt a.pt b.pt --metrics fid_clip,clip_score,mask_acc      # a comparison table
        """)
    p.add_argument("--ckpt", nargs="+", required=True, help="generator checkpoint(s); several give a table")
    p.add_argument("--split", default="test", choices=("test", "train"), help="real masks, captions, images")
    p.add_argument("--num", type=int, default=1000, help="images generated per checkpoint")
    p.add_argument("--seeds", default="0-3", help="seeds, e.g. 0-3: the first drives the main set, all of them the diversity")
    p.add_argument("--metrics", help=f"comma-separated subset of {', '.join(METRIC_NAMES)} (default: all this machine allows)")
    p.add_argument("--out", help="folder for metrics.json and metrics.md (default: only print)")
    p.add_argument("--batch", type=int, default=16, help="images per generator call")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--parser", help="face parser (default models/parser_<DATA.NAME>.pt in the project home)")
    p.add_argument("--inception", help="Inception weights file for FID/KID")
    p.add_argument("--cache", help="real-statistics cache folder (default data/.cache/metrics in the project home)")
    p.add_argument("--force", action="store_true", help="overwrite metrics.json / metrics.md in --out")
    return p


def check_evaluate(p: argparse.ArgumentParser, args) -> None:
    if args.num < 2 or args.batch < 1:
        p.error("need --num >= 2 and --batch >= 1")


def add_alignment(p: argparse.ArgumentParser, default: str = "auto") -> None:
    """--align, --face and --detector: how a photo becomes the model's aligned face crop."""
    p.add_argument("--align", choices=ALIGN_MODES, default=default,
                   help="find the face and cut the CelebA-HQ/FFHQ crop: on; off (centre crop); auto: on unless the "
                        "photo already is an aligned crop (square, and no face found or its crop is the photo)")
    p.add_argument("--face", type=int, metavar="K", help="which face of the photo (0, 1, ...; default: the largest)")
    p.add_argument("--detector", default="dlib", metavar="SPEC",
                   help="face finder: 'dlib' (HOG + 68 points, from the 'align' extra), a dlib .dat file (a 68-point "
                        "shape predictor, or mmod_human_face_detector.dat), or package.module:factory")


def align_face() -> argparse.ArgumentParser:
    p = _parser("pixelface-align", "Find the face in a photo and write its aligned CelebA-HQ/FFHQ crop, plus the "
                "transform and landmarks as JSON beside it (the crop's inverse puts edits back into the photo).", """
        pip install -r requirements-align.txt      # or: pip install ".[align]"
        pixelface-align --image group.jpg --out face.png --size 256 --face 1
        python scripts/align_face.py --image photo.jpg --out crop.png     # writes crop.png and crop.json
        """)
    p.add_argument("--image", required=True, help="the photo (any size; EXIF orientation applied)")
    p.add_argument("--out", required=True, help="crop PNG to write; its .json goes beside it")
    p.add_argument("--size", type=int, default=256, help="side of the crop in pixels")
    add_alignment(p, default="on")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    return p


def make_mask() -> argparse.ArgumentParser:
    p = _parser("pixelface-make-mask", "Predict the CelebAMask-HQ mask of a photo with a face parser, plus an overlay "
                "to check it by eye.", """
        pixelface-make-mask --image face.jpg --parser 79999_iter.pth --out face_mask.png
        python scripts/make_mask.py --image face.jpg --parser models/parser_synthface.pt --size 64 --out m.png
        """)
    p.add_argument("--image", required=True, help="the photo (any size; its aligned face crop, see --align)")
    p.add_argument("--out", required=True, help="mask PNG to write, in the CelebAMask-HQ palette")
    p.add_argument("--parser", required=True, metavar="FILE",
                   help="face parser: this project's (e.g. models/parser_synthface.pt, made by scripts/train_parser.py) "
                        "or face-parsing.PyTorch's BiSeNet weights 79999_iter.pth")
    p.add_argument("--size", type=int, help="side of the mask in pixels (default: 512 for an aligned face, else the photo's shorter side)")
    p.add_argument("--overlay", help="overlay PNG to write (default: <stem of --out>_overlay.png next to it)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    add_alignment(p)
    return p


def editor() -> argparse.ArgumentParser:
    p = _parser("pixelface-editor", "Serve the web editor (Gradio) for a checkpoint: paint a mask and write a caption "
                "to generate faces, or invert a photo and edit its caption and mask. Listens on 127.0.0.1 only unless "
                "--host says otherwise; no share link, no usage statistics.", """
        pip install -r requirements-editor.txt     # or: pip install ".[editor]"
        pixelface-editor --ckpt runs/synthface-00000/checkpoints/ckpt-000024000.pt --parser models/parser_synthface.pt
        # then open http://127.0.0.1:7860
        """)
    p.add_argument("--ckpt", required=True, help="training checkpoint or exported model folder")
    p.add_argument("--parser", metavar="FILE", help="face parser for the photos' masks: this project's "
                   "(scripts/train_parser.py) or face-parsing.PyTorch's 79999_iter.pth")
    p.add_argument("--data-root", help="dataset folder whose masks the Generate tab offers (default: the checkpoint's DATA.ROOT)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--amp", choices=("auto", "none", "bf16"), default="auto", help="precision of generated faces "
                   "(as pixelface-sample --amp)")
    return p


def convert() -> argparse.ArgumentParser:
    p = _parser("pixelface-convert", "Convert the official PixelFace+ checkpoint (the reference trainer's "
                "ckpt_XXXX.pth) into a checkpoint of this project; read weights-only, every key accounted for.", """
        pixelface-convert --in ckpt_0150.pth --out models/pixelface_mmceleba256.pt
        python scripts/convert_reference.py --in ckpt_0150.pth --out models/pixelface_mmceleba256.pt
        """)
    p.add_argument("--in", dest="src", required=True, help="the reference checkpoint (ckpt_XXXX.pth)")
    p.add_argument("--out", required=True, help="the checkpoint to write (.pt)")
    p.add_argument("--cfg", default="mmceleba", help="config that builds the networks: a YAML file or a config name")
    p.add_argument("--set", action="append", default=[], metavar="KEY.SUB=VALUE", help="config override (repeatable)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    return p


def export() -> argparse.ArgumentParser:
    p = _parser("pixelface-export", "Export a trained generator for sharing: G_ema as safetensors plus its config as "
                "JSON, no pickle; every --ckpt option accepts the folder.", """
        pixelface-export --ckpt runs/synthface-00000/checkpoints/ckpt-000024000.pt --out models/synthface_g
        """)
    p.add_argument("--ckpt", required=True, help="training checkpoint (its G_ema and config are exported)")
    p.add_argument("--out", required=True, help="folder to write g_ema.safetensors and pixelface.json into")
    p.add_argument("--force", action="store_true", help="replace an earlier export in --out")
    return p


CHECKS = {"sample": check_sample, "edit": check_edit, "evaluate": check_evaluate}


def parse(name: str, argv=None):
    """The parsed and checked arguments of command `name` (argparse exits on --help and on bad options)."""
    p = globals()[name]()
    args = p.parse_args(argv)
    if name in CHECKS:
        CHECKS[name](p, args)
    return args
