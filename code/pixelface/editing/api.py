"""The Python API: a trained generator in a notebook or a program, without the command line.

    from pixelface import PixelFace
    pf = PixelFace.load("runs/synthface-00000/checkpoints/ckpt-000024000.pt")
    faces = pf.generate("data/synthface/masks/8.png", "she has blond hair", seeds=[0, 1])
    inversion = pf.invert("face.png", "face_mask.png", "she has brown hair")
    blond = pf.edit(inversion, text="she has blond hair")
    photo = pf.invert("phone.jpg", "phone_mask.png", "he has short hair")   # found and aligned (align="auto")
    pf.edit(photo, text="he has gray short hair", whole_photo=True).save("gray.jpg")   # pasted back

Every method goes through the same functions (pixelface.networks.generation, .inputs, .editing) as scripts/sample.py
and scripts/manipulate.py, so a seed gives the same bytes here as in the PNG sample.py writes. Masks and images
may be a path, a PIL image or a numpy array (see inputs.read_mask and inputs.read_image); label-id masks
are numbered in CelebAMask-HQ order unless mask_order="faceparsing".
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pixelface.core import errors
from pixelface.core.cli import MAX_SEEDS
from pixelface.core.devices import resolve_device
from pixelface.data.images import signed_tensor, to_pil, to_uint8
from pixelface.data.mask_files import read_labels
from pixelface.data.mask_input import model_mask
from pixelface.data.masks import resize_labels
from pixelface.editing import inputs, manipulation
from pixelface.editing.face_crop import FaceCrop, read_face
from pixelface.networks import generation
from pixelface.networks.checkpoint import load_generator
from pixelface.networks.text_encoder import TextEncoder


def api_seeds(seeds) -> list[int]:
    """An int, or a list, tuple, range or 1-D numpy array of them, as a list of Python ints; at most the CLI's
    MAX_SEEDS, checked before anything is allocated (InputError)."""
    if isinstance(seeds, (int, np.integer)):
        return [int(seeds)]
    if isinstance(seeds, np.ndarray):
        if seeds.ndim != 1 or not np.issubdtype(seeds.dtype, np.integer):
            raise errors.InputError(f"seeds: expected a 1-D array of integers, got shape {seeds.shape} of {seeds.dtype}")
        seeds = seeds.tolist()
    if not isinstance(seeds, (list, tuple, range)):
        raise errors.InputError(f"seeds: expected an int or a list of ints, got {type(seeds).__name__}")
    if len(seeds) > MAX_SEEDS:
        raise errors.InputError(f"seeds: {len(seeds):,} asked for; at most {MAX_SEEDS:,} per call")
    return [int(s) if isinstance(s, np.integer) else s for s in seeds]


class PixelFace:
    """A trained generator (G_ema), its config and its text encoder, on one device."""

    def __init__(self, generator, text_encoder, cfg, source: str = "", amp: str = "auto"):
        self.generator, self.text_encoder, self.cfg, self.source = generator, text_encoder, cfg, source
        generation.autocast_dtype(amp, cfg, "cpu")          # a bad value fails here, not at the first image
        self.amp = amp          # generate()'s precision: "auto" (bf16 where measured faster), "none" or "bf16"

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto", amp: str = "auto") -> PixelFace:
        """A training checkpoint or a folder written by scripts/export_model.py, on `device`; `amp` is the
        precision generate() uses (networks/generation.py)."""
        device = resolve_device(device)
        generator, cfg = load_generator(path, device)
        return cls(generator, TextEncoder.from_config(cfg).to(device), cfg, str(path), amp)

    @property
    def size(self) -> int:
        """Side of the square images the generator makes and takes."""
        return self.cfg.MODEL.SIZE

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def __repr__(self) -> str:
        return f"PixelFace({self.source!r}, size={self.size}, device={self.device})"

    def labels(self, mask, mask_order: str = "celebamask") -> torch.Tensor:
        """(size,size) int64 CelebAMask-HQ label map of a mask, read with the checkpoint's snapping settings."""
        return resize_labels(self._full_labels(mask, mask_order), self.size)

    def _full_labels(self, mask, mask_order: str):
        data = self.cfg.DATA
        return read_labels(mask, data.MASK_SNAP_DISTANCE, data.MASK_MAX_OFF_PALETTE, mask_order)

    def caption(self, text: str) -> str:
        """`text` cleaned as training cleaned captions (InputWarning when it is cut)."""
        return inputs.prepare_captions([text], self.cfg, self.text_encoder)[0]

    def generate(self, mask, text: str, seeds=(0,), truncation: float = 1.0, mask_order: str = "celebamask",
                 batch_size: int = 1, amp: str | None = None) -> list[Image.Image]:
        """One RGB image per seed (an int or a list of them) for one mask and one caption: the pixels
        scripts/sample.py writes for them on the same device with the same --amp (it samples with batch_size 1).
        amp: "auto" (bf16 where measured faster), "none" (float32) or "bf16"; default self.amp."""
        seeds = api_seeds(seeds)
        mask_input = model_mask(self._full_labels(mask, mask_order), self.cfg)   # the rule training used
        images = generation.sample(self.generator, self.text_encoder, self.cfg,
                                   mask_input.expand(len(seeds), -1, -1, -1),
                                  [self.caption(text)] * len(seeds), seeds, truncation, batch_size,
                                   amp=amp or self.amp)
        return [to_pil(image) for image in images]

    def invert(self, image, mask, caption: str, steps: int = manipulation.InversionSettings.steps,
               perceptual: str = "auto", pti_steps: int = 0, seed: int = 0, mask_order: str = "celebamask",
               progress: bool = False, align: str = "auto", face: int | None = None,
               detector="dlib") -> manipulation.Inversion:
        """Fit the generator's latent (and with pti_steps its weights) to a face, its mask and its caption,
        as scripts/manipulate.py does; pass the result to edit(). `image` may be a whole photo: with align
        "auto" (unless it already is an aligned crop) or "on", its face (the largest, or index `face`) is found
        and cut as the training faces were (pixelface.editing.face_crop), and `mask` is that crop's mask
        (align_crop() gives the crop to draw or parse it on)."""
        if steps < 1 or pti_steps < 0:
            raise errors.InputError(f"steps {steps} must be >= 1 and pti_steps {pti_steps} >= 0")
        photo = self.align_crop(image, align, face, detector)
        inputs.check_same_aspect(image if photo.alignment is None else photo.crop, mask)
        settings = manipulation.InversionSettings(steps=steps, perceptual=perceptual, finetune_steps=pti_steps, seed=seed)
        inversion = manipulation.invert(self.generator, self.text_encoder, self.cfg,
                                        signed_tensor(Image.fromarray(photo.crop)), self.labels(mask, mask_order),
                                        self.caption(caption), settings, progress)
        inversion.photo = photo
        return inversion

    def align_crop(self, image, align: str = "auto", face: int | None = None, detector="dlib") -> FaceCrop:
        """The photo's face cut at the model's size as invert() cuts it: .crop (uint8), .alignment (None when the
        image is used as it is), .faces found."""
        return read_face(image, self.size, align, face, detector)

    def edit(self, inversion: manipulation.Inversion, text: str | None = None, mask=None,
             mask_order: str = "celebamask", whole_photo: bool = False) -> Image.Image:
        """The inverted face re-synthesised with a new caption and/or mask (None: keep the inversion's); with
        neither, its reconstruction. whole_photo: the photo it was cut from with the edited face put back over the
        face and hair of the old and the new mask (the crop itself when the photo was not aligned)."""
        caption = None if text is None else self.caption(text)
        labels = None if mask is None else self.labels(mask, mask_order)
        generator = manipulation.generator_for(self.generator, inversion)
        edited = to_uint8(manipulation.edit(generator, self.text_encoder, self.cfg, inversion, caption, labels))
        edited = edited.permute(1, 2, 0).cpu().numpy()
        if whole_photo:
            if inversion.photo is None:
                raise errors.InputError("whole_photo: this inversion was loaded from a file or made from tensors; "
                                        "invert the photo itself to put edits back into it")
            masks = [inversion.labels.cpu()] + ([] if labels is None else [labels.cpu()])
            edited = inversion.photo.paste(edited, masks)
        return Image.fromarray(edited)
