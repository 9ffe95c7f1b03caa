"""A web editor (Gradio) over the Python API: paint a mask, write a caption, get faces; or invert a photo
and edit its text and mask. scripts/editor.py serves it; gradio is an optional dependency
(requirements-editor.txt), imported only here and by that script.

    app = build_app(PixelFace.load(ckpt), parser=None, dataset_masks=dataset_masks(cfg))
    launch(app, "127.0.0.1", 7860)

Every picture goes through pixelface.editing.api, so a seed gives here the bytes sample.py writes for the same
mask. Masks are painted on a canvas larger than the model (its labels upscaled with nearest neighbour) and
read back with the checkpoint's palette snapping, so an untouched canvas gives back the exact label map.
"""
from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

# The editor runs offline: no usage statistics, whatever the environment says (read before gradio loads).
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from pixelface.core.cli import parse_seeds  # noqa: E402
from pixelface.core.config import resolve_path  # noqa: E402
from pixelface.core.errors import InputError, InputWarning
from PIL import ImageDraw  # noqa: E402
from pixelface.data.images import signed_tensor  # noqa: E402
from pixelface.data.masks import LABELS, MASK_ORDERS, PALETTE, label_to_color  # noqa: E402
from pixelface.editing.api import PixelFace  # noqa: E402
from pixelface.editing.face_crop import ALIGN_MODES, FaceCrop, read_face  # noqa: E402
from pixelface.editing.inputs import check_same_aspect  # noqa: E402

CANVAS = 512          # smallest side of the painting canvas: a 64 px mask is too small to paint on
MAX_SEEDS = 16        # faces per click: each takes a forward pass, and the page shows them all
DATASET_MASKS = 12    # dataset masks offered in the dropdown
MAX_STEPS = 2000      # inversion steps one click may ask for (250 is the scripts' default)
EDITOR_HEIGHT = 480   # on-page height of a canvas with its toolbars: the canvas is zoomed to fit
PICTURE_HEIGHT = 256  # on-page height of a result picture (a 64 px face would be a thumbnail)
COLOURS = [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in PALETTE.tolist()]
MODEL_EVENTS = "model"  # one concurrency group: the generator is shared, and warnings capture is global
FACES_SIDE = 768      # the found-faces picture is shown at most this large
MAX_UPLOAD = "50mb"   # larger uploads are refused by the server before they reach the disk
CACHE_CLEANUP = (600, 3600)   # every 10 min, uploads and results older than an hour are deleted (and all at exit)


def dataset_masks(cfg, root: str | Path | None = None, count: int = DATASET_MASKS) -> list[Path]:
    """The first `count` mask files (in numeric order) of the checkpoint's dataset, or of `root`; none when
    the folder is missing (a checkpoint moved to another machine)."""
    base = Path(root) if root else resolve_path(cfg, "DATA.ROOT")
    folder = base / cfg.DATA.MASK_DIR
    files = sorted(folder.glob(f"*.{cfg.DATA.MASK_EXT}"), key=lambda p: (len(p.stem), p.stem))
    return files[:count]


def _one_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _named(message: str, args) -> str:
    """`message` with each uploaded file's path (gradio's cache folder, a hash, its name) cut to its name: the
    name is what the user chose, the rest is noise."""
    for arg in args:
        if isinstance(arg, str) and os.path.isfile(arg):
            message = message.replace(arg, Path(arg).name)
    return message


def reported(callback):
    """Wrap an event callback so that bad input reaches the page as one line (gr.Error) and each InputWarning
    as a gr.Warning toast, never as a traceback: the same split as cli.run makes for the scripts."""
    @functools.wraps(callback)  # keeps the signature: gradio finds gr.Progress parameters through it
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", InputWarning)
            try:
                result = callback(*args, **kwargs)
            except gr.Error:
                raise
            except (ValueError, OSError) as e:  # every error type of this package is a ValueError
                raise gr.Error(_named(_one_line(e), args), print_exception=False) from None
        for w in caught:
            if issubclass(w.category, InputWarning):
                gr.Warning(_named(str(w.message), args))
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return result
    return wrapper


def serial(trigger, callback, inputs, outputs, **options) -> None:
    """Attach `callback` to `trigger` (e.g. button.click) in one queue shared by every model event: one model
    call at a time, and `reported`'s capture of warnings (process-wide state) never overlaps another."""
    trigger(reported(callback), inputs, outputs, concurrency_id=MODEL_EVENTS, concurrency_limit=1, **options)


# ---------------------------------------------------------------------------------------------------------------
# Masks on the canvas


def canvas_side(size: int) -> int:
    """A whole multiple of the model's size, at least CANVAS: nearest-neighbour down-sizing then lands on
    block centres, so an unpainted canvas reads back as exactly the labels it shows."""
    return size * max(1, -(-CANVAS // size))


def mask_canvas(labels: torch.Tensor | np.ndarray, side: int) -> np.ndarray:
    """(S,S) CelebAMask-HQ labels -> (side,side,3) uint8 palette picture, upscaled with nearest neighbour."""
    picture = Image.fromarray(label_to_color(np.asarray(labels, dtype=np.int64)))
    return np.asarray(picture.resize((side, side), Image.NEAREST))


def editor_value(picture: np.ndarray | None) -> dict | None:
    """An ImageEditor value whose background is `picture` and has nothing painted on it yet."""
    return None if picture is None else {"background": picture, "layers": [], "composite": picture}


def painted_labels(pf: PixelFace, value: dict | None, what: str = "mask") -> torch.Tensor:
    """The (S,S) labels of an ImageEditor's composite (mask plus paint), snapped to the palette with the
    checkpoint's settings: a photo given as a mask is an error naming its off-palette share."""
    composite = None if value is None else value.get("composite")
    if composite is None:
        raise InputError(f"no {what}: choose a dataset mask, upload one, or predict one")
    return pf.labels(np.ascontiguousarray(composite[..., :3]))


def brush(colour: str) -> gr.Brush:
    """A brush limited to the 19 palette colours (anything else would snap to a class the painter did not
    mean), holding `colour`."""
    return gr.Brush(colors=COLOURS, default_color=colour, color_mode="fixed")


def legend_html() -> str:
    """The class names beside their colours: the brush's colour picker shows swatches only."""
    items = "".join(f'<span class="pf-swatch"><i style="background:{c}"></i>{i} {n}</span>'
                    for i, (n, c) in enumerate(zip(LABELS, COLOURS)))
    return f'<div class="pf-legend">{items}</div>'


CSS = """
.pf-legend {display:flex; flex-wrap:wrap; gap:4px 12px; font-size:12px}
.pf-swatch i {display:inline-block; width:12px; height:12px; margin-right:4px; border:1px solid #888;
              vertical-align:middle}
.pf-pixels img {image-rendering: pixelated !important}
.pf-fill img {width: 100% !important; height: 100% !important; object-fit: contain}
"""


# ---------------------------------------------------------------------------------------------------------------
# The Generate tab


def mask_editor(side: int, label: str, start: np.ndarray | None, elem_id: str) -> gr.ImageEditor:
    """A canvas holding a mask picture to paint over. PNG both ways, as JPEG or WebP noise would move colours
    off the palette; no image source, as masks come in through the file and parser widgets that read them;
    the eraser kept, as gradio hides the whole toolbar without it (it removes paint, not the mask)."""
    return gr.ImageEditor(value=editor_value(start), label=label, type="numpy", image_mode="RGB", format="png",
                          brush=brush(COLOURS[13]), layers=False, transforms=(), sources=(), interactive=True,
                          canvas_size=(side, side), fixed_canvas=True, height=EDITOR_HEIGHT, elem_id=elem_id)


def _mask_widgets(side: int, label: str, start: np.ndarray | None, elem_id: str) -> gr.ImageEditor:
    """A painting canvas for a mask, the brush class picker and the colour legend."""
    with gr.Row():
        name = gr.Dropdown([f"{i} {n}" for i, n in enumerate(LABELS)], value=f"13 {LABELS[13]}",
                           label="brush class", scale=1, elem_id=f"{elem_id}-class")
        gr.HTML(legend_html())
    canvas = mask_editor(side, label, start, elem_id)
    name.change(lambda n: gr.ImageEditor(brush=brush(COLOURS[int(n.split()[0])])), name, canvas)
    return canvas


def _generate_tab(pf: PixelFace, masks: list[Path], side: int) -> None:
    choices = [(p.name, str(p)) for p in masks]
    start = mask_canvas(pf.labels(masks[0], pf.cfg.DATA.MASK_ORDER), side) if masks else None
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                chosen = gr.Dropdown(choices, value=choices[0][1] if choices else None, label="dataset mask",
                                     info="from the checkpoint's DATA.ROOT" if choices else "none found",
                                     elem_id="gen-dataset-mask")
                upload = gr.File(label="or upload a mask (colour or label-id image)", file_types=["image"],
                                 type="filepath", elem_id="gen-mask-upload")
                order = gr.Radio(list(MASK_ORDERS), value="celebamask", label="label-id order")
            canvas = _mask_widgets(side, "mask: repaint regions with the brush", start, "gen-canvas")
        with gr.Column(scale=2):
            caption = gr.Textbox("she has blond hair", label="caption", elem_id="gen-caption")
            with gr.Row():
                seeds = gr.Textbox("0-3", label="seeds", info="e.g. 0-3,7", elem_id="gen-seeds")
                truncation = gr.Slider(0.0, 1.0, value=1.0, step=0.05, label="truncation")
            button = gr.Button("Generate", variant="primary", elem_id="gen-button")
            faces = gr.Gallery(label="faces", columns=2, format="png", elem_id="gen-faces",
                               elem_classes="pf-pixels")
            used = gr.Image(label="mask used", format="png", interactive=False, elem_id="gen-mask-used",
                            elem_classes=["pf-pixels", "pf-fill"], height=PICTURE_HEIGHT)

    def load(path, order_name):
        """A mask file onto the canvas (gr.skip: a cleared file widget leaves the canvas as it is)."""
        return editor_value(mask_canvas(pf.labels(path, order_name), side)) if path else gr.skip()

    def generate(value, text, seed_text, psi):
        wanted = parse_seeds(seed_text, MAX_SEEDS)
        labels = painted_labels(pf, value)
        images = pf.generate(labels, text, wanted, float(psi))
        return [(im, f"seed {s}") for s, im in zip(wanted, images)], mask_canvas(labels, side)

    # No progress overlay on loads: a failed one would blank the canvas with 'Error' instead of keeping it.
    serial(chosen.change, load, [chosen, gr.State(pf.cfg.DATA.MASK_ORDER)], canvas,  # the dataset's own order
           show_progress="hidden")
    serial(upload.upload, load, [upload, order], canvas, show_progress="hidden")
    serial(button.click, generate, [canvas, caption, seeds, truncation], [faces, used])


# ---------------------------------------------------------------------------------------------------------------
# The Edit-a-photo tab


def faces_picture(face: FaceCrop) -> np.ndarray:
    """The photo (at most FACES_SIDE) with every face found boxed, the one used in green with its crop's outline
    and five landmarks, the others in yellow."""
    picture = Image.fromarray(face.photo)
    scale = min(1.0, FACES_SIDE / max(picture.size))
    picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))))
    draw = ImageDraw.Draw(picture)
    for k, found in enumerate(face.faces):
        colour = (0, 220, 0) if k == face.index else (255, 210, 0)
        draw.rectangle([v * scale for v in found.box], outline=colour, width=2)
        draw.text((found.box[0] * scale + 3, found.box[1] * scale + 2), str(k), fill=colour)
    if face.alignment is not None:
        draw.polygon([tuple(p * scale) for p in face.alignment.corners()], outline=(0, 220, 0))
        for x, y in face.faces[face.index].landmarks * scale:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(0, 220, 0))
    return np.asarray(picture)


def _edit_tab(pf: PixelFace, parser, side: int) -> None:
    mask_file = gr.State(None)   # the uploaded mask file: its aspect ratio must match the face crop's
    face = gr.State(None)        # the photo's FaceCrop: the face found, aligned, at the model's size
    inversion = gr.State(None)
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                photo = gr.Image(label="photo", type="filepath", sources=["upload"], elem_id="edit-photo",
                                 height=PICTURE_HEIGHT, elem_classes="pf-fill")
                with gr.Column():
                    align = gr.Radio(list(ALIGN_MODES), value="auto", label="align the face",
                                     info="auto: unless the photo already is an aligned face crop", elem_id="edit-align")
                    index = gr.Textbox("", label="face (0, 1, ...; empty: the largest)", elem_id="edit-face-index")
                    upload = gr.File(label="its mask (colour or label-id image)", file_types=["image"],
                                     type="filepath", elem_id="edit-mask-upload")
                    order = gr.Radio(list(MASK_ORDERS), value="celebamask", label="label-id order")
                    predict = gr.Button("Predict the mask with the face parser", visible=parser is not None)
            with gr.Row(elem_classes="pf-fill"):
                found = gr.Image(label="faces found (green: the one used)", format="png", interactive=False,
                                 elem_id="edit-faces", height=PICTURE_HEIGHT)
                aligned = gr.Image(label="aligned face (what is inverted)", format="png", interactive=False,
                                   elem_id="edit-aligned", height=PICTURE_HEIGHT, elem_classes="pf-pixels")
            photo_mask = mask_editor(side, "the aligned face's mask (fix it with the brush if needed)", None,
                                     "edit-photo-mask")
            caption = gr.Textbox(label="caption of the photo", elem_id="edit-caption")
            with gr.Row():
                steps = gr.Number(100, label="inversion steps", precision=0, minimum=1, maximum=MAX_STEPS,
                                  elem_id="edit-steps")
                invert = gr.Button("Invert", variant="primary", elem_id="edit-invert")
        with gr.Column(scale=3):
            text = gr.Textbox(label="edited caption (empty: keep the photo's)", elem_id="edit-text")
            edit_mask = _mask_widgets(side, "edited mask: repaint regions (filled after inversion)", None,
                                      "edit-canvas")
            apply = gr.Button("Edit", variant="primary", elem_id="edit-button")
    with gr.Row(elem_classes=["pf-pixels", "pf-fill"]):
        original = gr.Image(label="original", format="png", interactive=False, elem_id="edit-original",
                            height=PICTURE_HEIGHT)
        recon = gr.Image(label="reconstruction", format="png", interactive=False,
                         elem_id="edit-reconstruction", height=PICTURE_HEIGHT)
        edited = gr.Image(label="edit", format="png", interactive=False, elem_id="edit-result",
                          height=PICTURE_HEIGHT)
    whole = gr.Image(label="the edit put back into the photo", format="png", interactive=False,
                     elem_id="edit-photo-result")

    def find_face(path, mode, which):
        """The photo's face, found and aligned as the inversion will use it, shown boxed and cropped."""
        if not path:
            return None, None, None
        which = (which or "").strip()
        if which and not which.isdigit():
            raise InputError(f"face {which!r}: expected 0, 1, ... (or empty: the largest)")
        cropped = read_face(path, pf.size, mode, int(which) if which else None)
        return cropped, faces_picture(cropped), cropped.crop

    def load_mask(path, order_name):
        if not path:
            return gr.skip(), None
        return editor_value(mask_canvas(pf.labels(path, order_name), side)), path

    def predict_mask(cropped):
        if cropped is None:
            raise InputError("no photo: upload one first")
        labels = parser.predict(signed_tensor(Image.fromarray(cropped.crop))[None])[0].cpu()
        return editor_value(mask_canvas(labels, side)), None

    def run_inversion(cropped, path, value, file, words, count, progress=gr.Progress(track_tqdm=True)):
        """Invert the photo's face crop (aligned, or the photo cropped to the model's square) with its mask and
        caption; the progress bar follows the inversion's tqdm bar. Fills the edit side with the result."""
        if cropped is None:
            raise InputError("no photo: upload one first")
        if file:
            check_same_aspect(path if cropped.alignment is None else cropped.crop, file)
        labels = painted_labels(pf, value, "mask for the photo")
        count = int(count or 0)
        if not 1 <= count <= MAX_STEPS:
            raise InputError(f"inversion steps {count}: expected 1..{MAX_STEPS}")
        fitted = pf.invert(cropped.crop, labels, words, steps=count, progress=True, align="off")
        fitted.photo = cropped
        return (fitted, cropped.crop, pf.edit(fitted), None, None, fitted.caption,
                editor_value(mask_canvas(fitted.labels, side)))

    def run_edit(fitted, words, value):
        if fitted is None:
            raise InputError("nothing to edit yet: invert a photo first")
        labels = painted_labels(pf, value, "edited mask") if value is not None else None
        text_asked = words.strip() or None
        result = pf.edit(fitted, text=text_asked, mask=labels)
        in_photo = (pf.edit(fitted, text=text_asked, mask=labels, whole_photo=True)
                    if fitted.photo.alignment is not None else None)
        return result, in_photo

    for trigger in (photo.upload, align.change, index.submit):
        serial(trigger, find_face, [photo, align, index], [face, found, aligned])
    serial(upload.upload, load_mask, [upload, order], [photo_mask, mask_file], show_progress="hidden")
    serial(predict.click, predict_mask, face, [photo_mask, mask_file])
    serial(invert.click, run_inversion, [face, photo, photo_mask, mask_file, caption, steps],
           [inversion, original, recon, edited, whole, text, edit_mask])
    serial(apply.click, run_edit, [inversion, text, edit_mask], [edited, whole])


# ---------------------------------------------------------------------------------------------------------------
# The app


def build_app(pf: PixelFace, parser=None, dataset_masks: list[Path] | tuple = ()) -> gr.Blocks:
    """The editor for one loaded model; `parser` (anything with .predict like parser.FaceParser) enables
    mask prediction for photos; `dataset_masks` fill the Generate tab's dropdown."""
    side = canvas_side(pf.size)
    with gr.Blocks(title="PixelFace+ editor", analytics_enabled=False, delete_cache=CACHE_CLEANUP) as app:
        gr.Markdown(f"### PixelFace+ editor &nbsp; <small>{pf.source} ({pf.size} px, {pf.device})</small>")
        with gr.Tab("Generate", elem_id="tab-generate"):
            _generate_tab(pf, list(dataset_masks), side)
        with gr.Tab("Edit a photo", elem_id="tab-edit"):
            _edit_tab(pf, parser, side)
    return app


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> str:
    """Serve `app` on host:port, offline (no share link, no server-side rendering, no MCP server); returns
    its local URL. With block=False it returns at once and serves from a background thread."""
    app.queue(default_concurrency_limit=1)
    app.launch(server_name=host, server_port=port, share=False, ssr_mode=False, mcp_server=False, quiet=True,
               prevent_thread_lock=not block, show_error=True, css=CSS, footer_links=[], max_file_size=MAX_UPLOAD)
    return app.local_url
