"""The Python API: a trained generator in a notebook or a program, without the command line.

    from pixelface import PixelFace
    pf = PixelFace.load("runs/synthface-00000/checkpoints/ckpt-000018000.pt")
    faces = pf.generate("data/synthface/masks/8.png", "she has blond hair", seeds=[0, 1])
    inversion = pf.invert("face.png", "face_mask.png", "she has brown hair")
    blond = pf.edit(inversion, text="she has blond hair")

Every method goes through the same functions (pixelface.networks.generation, .inputs, .editing) as scripts/sample.py
and scripts/manipulate.py, so a seed gives the same bytes here as in the PNG sample.py writes. Masks and images
may be a path, a PIL image or a numpy array (see inputs.read_mask and inputs.read_image); label-id masks
are numbered in CelebAMask-HQ order unless mask_order="faceparsing".
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from pixelface.core import errors
from pixelface.core.devices import resolve_device
from pixelface.data.images import to_pil
from pixelface.data.mask_files import read_labels
from pixelface.data.masks import model_mask, resize_labels
from pixelface.editing import inputs, manipulation
from pixelface.networks import generation
from pixelface.networks.checkpoint import load_generator
from pixelface.networks.text_encoder import TextEncoder


class PixelFace:
    """A trained generator (G_ema), its config and its text encoder, on one device."""

    def __init__(self, generator, text_encoder, cfg, source: str = ""):
        self.generator, self.text_encoder, self.cfg, self.source = generator, text_encoder, cfg, source

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto") -> PixelFace:
        """A training checkpoint or a folder written by scripts/export_model.py, on `device`."""
        device = resolve_device(device)
        generator, cfg = load_generator(path, device)
        return cls(generator, TextEncoder.from_config(cfg).to(device), cfg, str(path))

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
                 batch_size: int = 1) -> list[Image.Image]:
        """One RGB image per seed (an int or a list of them) for one mask and one caption: the pixels
        scripts/sample.py writes for them on the same device (it samples with batch_size 1)."""
        seeds = [seeds] if isinstance(seeds, int) else list(seeds)
        mask_input = model_mask(self._full_labels(mask, mask_order), self.cfg)   # the rule training used
        images = generation.sample(self.generator, self.text_encoder, self.cfg,
                                   mask_input.expand(len(seeds), -1, -1, -1),
                                  [self.caption(text)] * len(seeds), seeds, truncation, batch_size)
        return [to_pil(image) for image in images]

    def invert(self, image, mask, caption: str, steps: int = manipulation.InversionSettings.steps,
               perceptual: str = "auto", pti_steps: int = 0, seed: int = 0, mask_order: str = "celebamask",
               progress: bool = False) -> manipulation.Inversion:
        """Fit the generator's latent (and with pti_steps its weights) to a face, its mask and its caption,
        as scripts/manipulate.py does; pass the result to edit()."""
        if steps < 1 or pti_steps < 0:
            raise errors.InputError(f"steps {steps} must be >= 1 and pti_steps {pti_steps} >= 0")
        inputs.check_same_aspect(image, mask)
        settings = manipulation.InversionSettings(steps=steps, perceptual=perceptual, finetune_steps=pti_steps, seed=seed)
        return manipulation.invert(self.generator, self.text_encoder, self.cfg, inputs.read_image(image, self.size),
                              self.labels(mask, mask_order), self.caption(caption), settings, progress)

    def edit(self, inversion: manipulation.Inversion, text: str | None = None, mask=None,
             mask_order: str = "celebamask") -> Image.Image:
        """The inverted face re-synthesised with a new caption and/or mask (None: keep the inversion's); with
        neither, its reconstruction."""
        caption = None if text is None else self.caption(text)
        labels = None if mask is None else self.labels(mask, mask_order)
        generator = manipulation.generator_for(self.generator, inversion)
        return to_pil(manipulation.edit(generator, self.text_encoder, self.cfg, inversion, caption, labels))
