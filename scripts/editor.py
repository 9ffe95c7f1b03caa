"""Serve the web editor (Gradio) for a checkpoint: paint a mask and write a caption to generate faces, or
invert a photo and edit its caption and mask.

    pip install -r requirements-editor.txt
    python scripts/editor.py --ckpt runs/synthface-00000/checkpoints/ckpt-000018000.pt \\
        --parser models/parser_synthface.pt        # then open http://127.0.0.1:7860

It listens on 127.0.0.1 only unless --host says otherwise, makes no share link and sends no usage
statistics: it works without the internet.
"""
import argparse
import os
import sys
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio loads (editor_app sets it too)

from pixelface.core import cli, errors  # noqa: E402
from pixelface.core.devices import DEVICE_HELP, resolve_device
from pixelface.editing.api import PixelFace  # noqa: E402
from pixelface.evaluation.faceparsing import load_any_parser  # noqa: E402

try:  # gradio is optional (requirements-editor.txt): without it, say how to get it rather than a traceback
    from pixelface.editing import editor_app# noqa: E402
except ModuleNotFoundError as e:
    if e.name != "gradio":
        raise
    editor_app = None


def serve(args) -> None:
    """Load the model (and parser), then serve until interrupted. Bad files fail here, before the server
    starts, as one error line."""
    if args.data_root and not Path(args.data_root).is_dir():
        raise errors.InputError(f"--data-root {args.data_root} is not a folder")
    device = resolve_device(args.device)
    pf = PixelFace.load(args.ckpt, device)
    parser = load_any_parser(args.parser, device) if args.parser else None
    masks = editor_app.dataset_masks(pf.cfg, args.data_root)
    app = editor_app.build_app(pf, parser, masks)
    try:
        url = editor_app.launch(app, args.host, args.port, block=False)
    except OSError as e:  # gradio's message names its own launch() arguments: name ours instead
        raise errors.InputError(f"cannot listen on {args.host}:{args.port} ({str(e).split('. ')[0]}); "
                             f"choose another --port or --host") from None
    print(f"PixelFace+ editor for {args.ckpt} on {url} (Ctrl+C stops it)", flush=True)
    app.block_thread()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="training checkpoint or exported model folder")
    parser.add_argument("--parser", metavar="FILE", help="face parser for the photos' masks: this project's "
                        "(scripts/train_parser.py) or face-parsing.PyTorch's 79999_iter.pth")
    parser.add_argument("--data-root", help="dataset folder whose masks the Generate tab offers "
                        "(default: the checkpoint's DATA.ROOT)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 exposes it to the network)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    args = parser.parse_args(argv)
    if editor_app is None:
        print("error: the editor needs gradio: pip install -r requirements-editor.txt", file=sys.stderr)
        return cli.EXIT_BAD_INPUT
    return cli.run(serve, args)


if __name__ == "__main__":
    sys.exit(main())
