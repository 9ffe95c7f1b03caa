"""One way to read images and masks from disk, used by every reader in the package, and one way to write
the networks' images as 8-bit pictures (to_uint8, picture_grid, save_png).

Whatever is wrong with a file (missing, empty, not an image, truncated, too large, a mode we cannot
interpret) comes out as one ImageReadError whose one-line message starts with the file's path, also inside
DataLoader workers and DDP ranks. Images are fully decoded before they are returned (the file is closed),
and their EXIF orientation is applied, so a phone photo and the mask drawn on it line up.

Colour: read_rgb turns every supported mode into 8-bit RGB. 16-bit samples (modes I;16*, and I, which
holds the 16-bit greyscale of PNG and TIFF) are scaled by 255/65535 rather than clipped at 255 as PIL's
own convert("RGB") does (which turns a 16-bit image white). Alpha is dropped: the colour under a
transparent pixel is kept as stored, not composited on any background (as PIL's convert("RGB") does).
"""
from __future__ import annotations

import re
import struct
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image, ImageOps, UnidentifiedImageError

from pixelface.core.errors import InputError
from pixelface.core.files import atomic_write

MAX_PIXELS = 8192 * 8192  # larger images are refused before they are decoded (decompression bombs)

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_CONVERTIBLE = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")
RGB_MODES = _CONVERTIBLE + _SIXTEEN_BIT + ("F",)  # the modes read_rgb accepts
_SINGLE_CHANNEL = ("L", "P") + _SIXTEEN_BIT  # the modes read_mask_array returns as (H,W) integers
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)


class ImageReadError(ValueError):
    """An image or mask file cannot be used; the one-line message starts with its path and says why."""


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _bomb_reason(error: BaseException) -> str:
    """'N pixels, more than the limit M' from PIL's decompression-bomb error or warning. Its warning is an
    error here, so the limit is PIL.Image.MAX_IMAGE_PIXELS itself (PIL's error names twice that)."""
    pixels = re.search(r"\d+", str(error))
    if pixels and Image.MAX_IMAGE_PIXELS:
        return f"{pixels[0]} pixels, more than the limit {Image.MAX_IMAGE_PIXELS} (PIL.Image.MAX_IMAGE_PIXELS)"
    return _one_line(error)


def open_image(path: str | Path, what: str = "image") -> Image.Image:
    """The fully decoded image at `path` with its EXIF orientation applied, file closed; the mode is the
    file's own. ImageReadError (a ValueError) naming the file when it is missing, empty, not an image,
    truncated or corrupt, or larger than MAX_PIXELS. `what` names the file's role in messages."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: {what} does not exist")
    if not path.is_file():
        raise ImageReadError(f"{path}: {what} is not a file")
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(f"{path}: {what} cannot be read as an image: the file is empty (0 bytes)")
    except OSError as e:
        raise ImageReadError(f"{path}: {what} cannot be opened ({_one_line(e)})") from None
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageReadError(f"{path}: {what} is too large: {_bomb_reason(e)}") from None
        except UnidentifiedImageError:
            raise ImageReadError(f"{path}: {what} cannot be read as an image: not an image "
                                 f"(or a format PIL cannot read)") from None
        except PermissionError as e:
            raise ImageReadError(f"{path}: {what} cannot be opened ({_one_line(e)})") from None
        except _DECODE_ERRORS as e:  # the header itself is cut short or damaged
            raise ImageReadError(f"{path}: {what} cannot be read as an image: truncated or corrupt "
                                 f"({_one_line(e)})") from None
        with image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageReadError(f"{path}: {what} is too large: {width}x{height} = {width * height} pixels, "
                                     f"more than the limit {MAX_PIXELS} (pixelface.data.images.MAX_PIXELS)")
            try:
                image.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
                raise ImageReadError(f"{path}: {what} is too large: {_bomb_reason(e)}") from None
            except _DECODE_ERRORS as e:
                raise ImageReadError(f"{path}: {what} cannot be read as an image: truncated or corrupt "
                                     f"({_one_line(e)})") from None
            _transpose(image, path, what, in_place=True)
    return image


def _transpose(image: Image.Image, name, what: str, in_place: bool) -> Image.Image | None:
    """Apply the EXIF orientation (a no-op without an Orientation tag), or ImageReadError naming `name`."""
    try:
        return ImageOps.exif_transpose(image, in_place=in_place)
    except (*_DECODE_ERRORS, KeyError, TypeError) as e:
        raise ImageReadError(f"{name}: {what} has EXIF data that cannot be read, so its orientation is "
                             f"unknown ({_one_line(e)})") from None


def upright(image: Image.Image, name: str = "image", what: str = "image") -> Image.Image:
    """A copy of an in-memory image with its EXIF orientation applied, as open_image applies a file's (errors
    name `name`), so an image from Image.open reads as its path does."""
    return _transpose(image, name, what, in_place=False)


def _sixteen_to_eight(image: Image.Image, path: Path, what: str) -> np.ndarray:
    """(H,W) uint8 from 16-bit samples: round(value / 257), so 65535 -> 255 and the ramp stays a ramp."""
    values = np.asarray(image)
    if values.size and (int(values.min()) < 0 or int(values.max()) > 65535):
        raise ImageReadError(f"{path}: {what} has mode {image.mode} with values {int(values.min())}.."
                             f"{int(values.max())}, outside the 16-bit range 0..65535 it is read as")
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _float_to_eight(image: Image.Image, path: Path, what: str) -> np.ndarray:
    """(H,W) uint8 from mode F: values in 0..1 are scaled by 255, values in 0..255 taken as they are."""
    values = np.asarray(image, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ImageReadError(f"{path}: {what} has mode F with NaN or infinite values")
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if low < 0 or high > 255:
        raise ImageReadError(f"{path}: {what} has mode F with values {low:g}..{high:g}, outside 0..1 and 0..255")
    scale = 255.0 if high <= 1 else 1.0
    return np.round(values * scale).astype(np.uint8)


def _to_rgb(image: Image.Image, path: Path, what: str) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in _CONVERTIBLE:
        return image.convert("RGB")  # alpha dropped; palette looked up; CMYK/YCbCr converted
    if image.mode in _SIXTEEN_BIT:
        return Image.fromarray(_sixteen_to_eight(image, path, what)).convert("RGB")
    if image.mode == "F":
        return Image.fromarray(_float_to_eight(image, path, what)).convert("RGB")
    raise ImageReadError(f"{path}: {what} has mode {image.mode}, which cannot be read as RGB "
                         f"(supported: {', '.join(RGB_MODES)})")


def rgb_of(image: Image.Image, name: str = "image", what: str = "image") -> Image.Image:
    """An in-memory image as 8-bit RGB, converted as read_rgb converts a file (errors name `name`)."""
    return _to_rgb(image, name, what)


def read_rgb(path: str | Path, what: str = "image") -> Image.Image:
    """The image at `path` as a decoded 8-bit RGB PIL image, EXIF orientation applied (see open_image).

    Modes 1, L, LA, P, PA, RGB, RGBA, RGBX, CMYK and YCbCr go through PIL's convert("RGB"): alpha is dropped
    (the stored colour is kept, nothing is composited). 16-bit modes (I;16, I;16L, I;16B, I;16N and I) are
    scaled to 8 bits as round(value / 257); mode I values outside 0..65535 are refused. Mode F is read as
    0..1 when its values lie there, else as 0..255 (values outside both are refused). Any other mode is an
    ImageReadError naming it.
    """
    path = Path(path)
    return _to_rgb(open_image(path, what), path, what)


def read_mask_array(path: str | Path, what: str = "mask", *, rgb: bool = False,
                    max_index: int | None = None) -> np.ndarray:
    """The pixels of a mask file as numbers, EXIF orientation applied (see open_image); the caller decides
    what they mean (label ids or palette colours).

    Single-channel images (modes L, P, I, I;16*) give an (H,W) integer array of the stored values (uint8
    for L and P, whose values are the palette indices; int32 for I; uint16 for I;16*). Every other
    supported mode gives the (H,W,3) uint8 colours read_rgb would return. rgb=True: always the colours. A
    palette image whose largest index exceeds `max_index` (when given) gives its colours too: its indices
    are then not label ids, but the colours it shows may be.
    """
    path = Path(path)
    return mask_values_of(open_image(path, what), path, what, rgb=rgb, max_index=max_index)


def mask_values_of(image: Image.Image, name, what: str = "mask", *, rgb: bool = False,
                   max_index: int | None = None) -> np.ndarray:
    """read_mask_array for an image already in memory (errors name `name`)."""
    if not rgb and image.mode in _SINGLE_CHANNEL:
        values = np.asarray(image)
        if image.mode.startswith("I;16"):
            return values.astype(np.uint16)  # native byte order
        if not (image.mode == "P" and max_index is not None and values.size and int(values.max()) > max_index):
            return values
    return np.asarray(_to_rgb(image, name, what))


# ---------------------------------------------------------------------------------------------------------------
# Writing: images in [-1,1] as 8-bit pictures


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1,1] -> uint8 in [0,255], rounded to nearest: the pixels every PNG of the package holds."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def picture_grid(rows: list[list[torch.Tensor]], gap: int = 2, background: float = 1.0) -> torch.Tensor:
    """Rows of (3,S,S) images in [-1,1] -> one (3,H,W) picture, `gap` pixels of `background` between cells
    (no outer border); short rows end in background cells."""
    columns = max(len(r) for r in rows)
    blank = torch.full_like(rows[0][0], background, dtype=torch.float32)
    cells = [image.detach().float().cpu() for row in rows for image in row + [blank] * (columns - len(row))]
    grid = torchvision.utils.make_grid(cells, nrow=columns, padding=gap, pad_value=background)
    return grid[:, gap:grid.shape[1] - gap, gap:grid.shape[2] - gap] if gap else grid


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3,H,W) image in [-1,1] -> 8-bit RGB PIL image: the pixels save_png writes."""
    return Image.fromarray(to_uint8(image).permute(1, 2, 0).numpy())


def save_png(image: torch.Tensor, path: str | Path) -> None:
    """(3,H,W) image in [-1,1] -> 8-bit PNG, written atomically."""
    picture = to_pil(image)
    atomic_write(Path(path), lambda tmp: picture.save(tmp, format="PNG"))


PHOTO_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF",
                 ".tiff": "TIFF"}


def photo_suffix(source) -> str:
    """The suffix a whole-photo output keeps: the source file's, when it names an image format, else .png."""
    suffix = Path(source).suffix.lower() if isinstance(source, (str, Path)) else ""
    return suffix if suffix in PHOTO_FORMATS else ".png"


def save_photo(array: np.ndarray, path: str | Path) -> None:
    """(H,W,3) uint8 in the format the suffix names (JPEG at quality 95), upright (no EXIF orientation), atomically."""
    path = Path(path)
    form = PHOTO_FORMATS.get(path.suffix.lower())
    if form is None:
        raise InputError(f"{path}: expected one of the suffixes {', '.join(PHOTO_FORMATS)}")
    options = {"quality": 95} if form in ("JPEG", "WEBP") else {}
    picture = Image.fromarray(array)
    atomic_write(path, lambda tmp: picture.save(tmp, format=form, **options))


def resize_and_crop(image: Image.Image, size: int, resample: int) -> Image.Image:
    """Resize the shorter side to `size` with `resample`, then cut the centred size x size square."""
    w, h = image.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), resample)
    if (new_w, new_h) == (size, size):
        return image
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def signed_tensor(image: Image.Image) -> torch.Tensor:
    """(H,W,3) uint8 PIL image -> float (3,H,W) in [-1, 1]."""
    array = np.asarray(image, dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous() / 127.5 - 1.0


# ---------------------------------------------------------------------------------------------------------------
# Sources a user hands over: a path, a PIL image or an array

Source = str | Path | Image.Image | np.ndarray


def source_name(source) -> str:
    """How messages name an input: its path, or the kind, mode and size of an in-memory one."""
    if isinstance(source, Image.Image):
        return f"<PIL image, mode {source.mode}, {source.width}x{source.height}>"
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return f"<{type(source).__name__} of {str(source.dtype)}, shape {tuple(source.shape)}>"
    return str(source)


def source_path(source, what: str) -> Path:
    """A path source as a Path; InputError for what is neither a path nor an in-memory picture."""
    if not isinstance(source, (str, Path)):
        raise InputError(f"{what}: expected a file path, a PIL image or a numpy array, got {type(source).__name__}")
    return Path(source)
