"""synthface: cartoon faces with exact CelebAMask-HQ label maps and MMCelebA-style captions.

The project's embedded default dataset and a measurable proxy for MMCelebA, written in its layout
(write_dataset): dataset2.json (10 consecutive captions per image, 80/20 train/test), images/<id>.jpg,
masks/<id>.png (CelebAMask-HQ palette colours, lossless) and attributes.json. Every face is drawn from
a CelebA-style attribute dict; image and label map come out of one painter (each drawn part carries
both a colour and a CelebAMask-HQ class), so the label map is exact. Attributes are of two kinds:

- shape attributes (hair style, glasses, hat, mouth open, earrings, ...) change the label map;
- colour-only attributes (COLOR_ONLY: hair colour, lipstick, heavy makeup, rosy cheeks, pale skin,
  beard) change pixels only. Facial hair is painted over 'skin', as CelebAMask-HQ annotates it, so a
  beard is something only the text can ask for.

`predict_attributes` reads the colour-only attributes back from pixels inside the mask's regions, so
an evaluation can ask whether a generated face obeyed its caption.

Side convention: 'l_' parts (l_eye, l_brow, l_ear) are the person's left, i.e. the image's right.

Submodules, each importing only those above it:

- attributes: ATTRIBUTES, COLOR_ONLY, the priors behind sample_attributes, check_attributes, HAIR_RGB
- render: the painter (drawn parts, geometry, posed polygons), colouring and shading; render_face
- captions: MMCelebA-style sentences (make_captions) and what a caption states (caption_attributes)
- scorer: colour-only attributes read back from pixels (predict_attributes, score_attributes)
- dataset: make_face, split_ids, build_index and write_dataset (the MMCelebA layout on disk)
- preview: preview_grid, the README figure

The public names of all of them are importable from here (`from pixelface.data.synthface import write_dataset`).
"""
from .attributes import ATTRIBUTES, COLOR_ONLY, HAIR_RGB, check_attributes, sample_attributes
from .captions import caption_attributes, make_captions
from .dataset import (CAPTIONS_PER_IMAGE, JPEG_OPTIONS, RENDERING_MARKER, TEST_SHARE, build_index, make_face,
                      split_ids, unfinished_render, write_dataset)
from .preview import preview_grid
from .render import PART, PARTS, render_face
from .scorer import predict_attributes, score_attributes

__all__ = [
    "ATTRIBUTES", "COLOR_ONLY", "HAIR_RGB", "check_attributes", "sample_attributes",
    "PART", "PARTS", "render_face",
    "caption_attributes", "make_captions",
    "predict_attributes", "score_attributes",
    "CAPTIONS_PER_IMAGE", "JPEG_OPTIONS", "RENDERING_MARKER", "TEST_SHARE", "build_index", "make_face",
    "split_ids", "unfinished_render", "write_dataset",
    "preview_grid",
]
