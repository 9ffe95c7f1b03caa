"""From a person's own photo to the aligned face crop the models were trained on, and back.

`face_crop(photo, size, align)` finds the faces (pixelface.data.face_detection), picks one (by index, else the
largest), checks it is large and face-like enough, and cuts the CelebA-HQ / FFHQ crop
(pixelface.data.face_alignment). `FaceCrop.paste(edited, labels)` puts an edited crop back into the whole
photo (pixelface.editing.paste_back).

align: "on" always aligns (no face is an error); "off" centre-crops the photo as it is; "auto" (the default)
aligns unless the photo already is an aligned crop: square, and either no face is found in it (faces smaller
than about 40 px are not), or the crop the face asks for is the photo itself, within ALIGNED_TOLERANCE of its
side, or its face is too small or unclear to align (with a warning). Without dlib, "auto" centre-crops (with a
warning for a photo that is not square).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from pixelface.core.errors import InputError, InputWarning
from pixelface.data.face_alignment import MAX_LANDMARK_RESIDUAL, Alignment, landmark_residual, warp_to_crop
from pixelface.data.face_detection import INSTALL_HINT, Face, load_detector
from pixelface.data.images import Source, resize_and_crop, source_name
from pixelface.editing.inputs import source_rgb
from pixelface.editing.paste_back import paste_back

ALIGN_MODES = ("auto", "on", "off")
MIN_FACE_PX = 48            # narrowest face box accepted: below it the crop is mostly upsampled blur
TINY_PHOTO_SIDE = 32        # photos whose shorter side is smaller get a warning (nothing can be found in them)
# A square photo whose face crop lies this close to its own frame (share of its side) is a crop already: CelebA-HQ
# crops lie within 0.02, this project's synthetic faces (a looser frame) within 0.25 (300 faces measured).
ALIGNED_TOLERANCE = 0.3


@dataclass
class FaceCrop:
    """The model-sized crop of a photo's face and how it was made. alignment is None when the photo was used as
    it is (centre-cropped: already an aligned crop, or align off)."""
    crop: np.ndarray
    photo: np.ndarray
    how: str
    alignment: Alignment | None = None
    faces: list[Face] = field(default_factory=list)
    index: int | None = None

    def paste(self, edited: np.ndarray, labels) -> np.ndarray:
        """The whole photo with the edited (S,S,3) uint8 crop put back over the face and hair of `labels`; for a
        photo used as it is, the edited crop itself."""
        if self.alignment is None:
            return edited
        return paste_back(self.photo, edited, labels, self.alignment)

    def at_size(self, size: int) -> FaceCrop:
        """The same face cut at another size (an aligned crop is cut again from the photo, not resampled)."""
        if self.alignment is None:
            return _as_is(self.photo, size, self.how, self.faces, self.index)
        alignment = Alignment.from_landmarks(self.faces[self.index].landmarks, size, self.alignment.photo_size)
        return FaceCrop(warp_to_crop(self.photo, alignment), self.photo, self.how, alignment, self.faces, self.index)

    def to_json(self) -> dict:
        return {"how": self.how, "face": self.index, "faces": [f.to_json() for f in self.faces],
                "alignment": None if self.alignment is None else self.alignment.to_json()}


def choose_face(faces: list[Face], index: int | None, name: str) -> int:
    """The index of the face to use: `index` (checked), else the largest box."""
    if index is None:
        return int(np.argmax([f.width for f in faces]))
    if not 0 <= index < len(faces):
        listed = "; ".join(f"{k}: box {[round(v) for v in f.box]}" for k, f in enumerate(faces))
        raise InputError(f"{name}: face {index} asked for, but {len(faces)} found ({listed})")
    return index


def check_face(face: Face, name: str) -> None:
    """Refuse a face too small to crop well, or landmarks that are not a face's layout."""
    if face.width < MIN_FACE_PX:
        raise InputError(f"{name}: the face found is {face.width:.0f} px wide; the minimum is {MIN_FACE_PX} px "
                         f"(use a larger photo of the face)")
    residual = landmark_residual(face.landmarks)
    if residual > MAX_LANDMARK_RESIDUAL:
        raise InputError(f"{name}: landmark confidence too low: the five points are {residual:.2f} eye distances "
                         f"from a frontal face's layout (at most {MAX_LANDMARK_RESIDUAL}); use a more frontal photo")


def _as_is(photo: np.ndarray, size: int, how: str, faces=(), index=None) -> FaceCrop:
    crop = np.asarray(resize_and_crop(Image.fromarray(photo), size, Image.LANCZOS))
    return FaceCrop(crop, photo, how, None, list(faces), index)


def face_crop(rgb: Image.Image, size: int, align: str = "auto", face: int | None = None, detector="dlib",
              name: str | None = None) -> FaceCrop:
    """The (size,size,3) crop of an upright RGB photo's face (see the module's docstring for `align`)."""
    if align not in ALIGN_MODES:
        raise InputError(f"align {align!r}: expected one of {', '.join(ALIGN_MODES)}")
    name = name or source_name(rgb)
    photo = np.asarray(rgb)
    square = photo.shape[0] == photo.shape[1]
    if min(photo.shape[:2]) < TINY_PHOTO_SIDE:
        warnings.warn(f"{name} is only {photo.shape[1]}x{photo.shape[0]} pixels: what is made from it is mostly "
                      f"interpolation (a face photo of at least {MIN_FACE_PX} px is expected)", InputWarning, stacklevel=2)
    if align == "off":
        return _as_is(photo, size, "centre crop")
    try:
        found = load_detector(detector).detect(photo)
    except InputError as error:
        if align == "on" or INSTALL_HINT not in str(error):
            raise
        if not square:
            warnings.warn(f"{name} is not square and may not be an aligned face crop, but face alignment is not "
                          f"installed: {INSTALL_HINT}", InputWarning, stacklevel=2)
        return _as_is(photo, size, "centre crop (no face detector installed)")
    if not found:
        if align == "auto" and square:
            return _as_is(photo, size, "as is (square, no face found: taken for an aligned crop)")
        raise InputError(f"{name}: no face found (faces narrower than about 40 px are not found; pass --align off "
                         f"to centre-crop the photo as it is)")
    index = choose_face(found, face, name)
    chosen = found[index]
    alignment = Alignment.from_landmarks(chosen.landmarks, size, (photo.shape[1], photo.shape[0]))
    if align == "auto" and square and face is None and alignment.covers_whole_photo(ALIGNED_TOLERANCE):
        return _as_is(photo, size, "as is (already an aligned crop)", found, index)
    try:
        check_face(chosen, name)
    except InputError as error:
        if not (align == "auto" and square and face is None):
            raise
        # a small square picture whose face is too small or too unclear to align is most likely a crop already
        warnings.warn(f"{error}; using the square photo as it is (pass --align on to require alignment)",
                      InputWarning, stacklevel=2)
        return _as_is(photo, size, "as is (square; its face could not be aligned)", found, index)
    return FaceCrop(warp_to_crop(photo, alignment), photo, "aligned", alignment, found, index)


def read_face(source: Source, size: int, align: str = "auto", face: int | None = None, detector="dlib") -> FaceCrop:
    """face_crop of an image file, PIL image or uint8 array, read as pixelface.editing.inputs reads images."""
    return face_crop(source_rgb(source), size, align, face, detector, source_name(source))
