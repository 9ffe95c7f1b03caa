"""Serve the web editor (Gradio) for a checkpoint: paint a mask and write a caption to generate faces, or
invert a photo and edit its caption and mask.

    pip install -r requirements-editor.txt
    pixelface-editor --ckpt runs/synthface-00000/checkpoints/ckpt-000024000.pt \\
        --parser models/parser_synthface.pt        # then open http://127.0.0.1:7860

It listens on 127.0.0.1 only unless --host says otherwise, makes no share link and sends no usage
statistics: it works without the internet.
"""
import os
import sys
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio loads (editor_app sets it too)

from pixelface.commands.launch import launch  # noqa: E402
from pixelface.core import cli, errors  # noqa: E402
from pixelface.core.devices import resolve_device  # noqa: E402
from pixelface.editing.api import PixelFace  # noqa: E402
from pixelface.evaluation.faceparsing import load_any_parser  # noqa: E402

try:  # gradio is optional (requirements-editor.txt): without it, say how to get it rather than a traceback
    from pixelface.editing import editor_app  # noqa: E402
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
    pf = PixelFace.load(args.ckpt, device, args.amp)
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


def execute(args) -> int:
    """Run the command on parsed arguments (pixelface.commands.parsers.editor) -> exit code."""
    if editor_app is None:
        print("error: the editor needs gradio: pip install -r requirements-editor.txt (or pip install \".[editor]\")",
              file=sys.stderr)
        return cli.EXIT_BAD_INPUT
    return cli.run(serve, args)


def main(argv=None) -> int:
    return launch("editor", argv)


if __name__ == "__main__":
    sys.exit(main())
