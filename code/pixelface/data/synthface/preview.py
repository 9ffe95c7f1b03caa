"""preview_grid: the README figure, varied faces of one dataset seed with their masks and a caption."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pixelface.data.masks import label_to_color
from .attributes import sample_attributes
from .dataset import face_rng, make_face


def _diverse_faces(seed: int, count: int, pool: int = 200) -> list[int]:
    """Greedily pick face indices whose attributes cover as many attribute values as possible."""
    attrs = [sample_attributes(face_rng(seed, 0, i)) for i in range(pool)]
    values = [{(k, v) for k, v in a.items() if v is not False} for a in attrs]
    chosen, seen = [], set()
    for _ in range(count):
        best = max((i for i in range(pool) if i not in chosen), key=lambda i: len(values[i] - seen))
        chosen.append(best)
        seen |= values[best]
    return chosen


def preview_grid(seed: int = 0, count: int = 8, size: int = 128, columns: int = 4) -> Image.Image:
    """A figure of `count` varied faces of dataset `seed`: image, mask and caption 0 for each."""
    font = ImageFont.load_default(size=max(10, size // 10))
    cell_w, line_h, lines = 2 * size, int(size * 0.12), 4
    cell_h = size + lines * line_h + 8
    rows = -(-count // columns)
    sheet = Image.new("RGB", (columns * cell_w + (columns - 1) * 8, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for n, index in enumerate(_diverse_faces(seed, count)):
        _, image, labels, captions = make_face(seed, index, size)
        x, y = (n % columns) * (cell_w + 8), (n // columns) * cell_h
        sheet.paste(Image.fromarray(np.concatenate([image, label_to_color(labels)], 1)), (x, y))
        for k, text in enumerate(_wrap(captions[0], font, cell_w)[:lines]):
            draw.text((x + 2, y + size + 3 + k * line_h), text, fill="black", font=font)
    return sheet


def _wrap(text: str, font, width: int) -> list[str]:
    lines = [""]
    for word in text.split():
        candidate = f"{lines[-1]} {word}".strip()
        if font.getlength(candidate) <= width - 4 or not lines[-1]:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines
