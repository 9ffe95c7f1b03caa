"""Finding faces and their five landmarks in a photo, behind one small interface.

A detector is anything with `detect(rgb) -> list[Face]` (rgb: (H,W,3) uint8). The default is dlib's HOG
frontal-face detector (built into dlib) with its 68-point shape predictor, whose weights ship inside the
`face_recognition_models` package: nothing is downloaded at run time. Install both with the `align` extra
(`pip install -e ".[align]"`, or `pip install dlib-bin face_recognition_models`).

`load_detector(spec)` plugs in what a user already has, without code changes:
* "dlib" (the default above);
* a dlib file: a shape predictor (.dat, 68 points, e.g. shape_predictor_68_face_landmarks.dat) replaces the
  landmark model, dlib's CNN face detector (mmod_human_face_detector.dat) replaces the HOG detector;
* "package.module:name": a callable returning a detector (e.g. a RetinaFace wrapper of your own whose
  detect() returns Face objects with the five points below).
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from pixelface.core.errors import InputError

# The five points, in this order: the centres of the left and right eye (left = smaller x in an upright face),
# the nose tip, the left and right mouth corners.
FIVE_POINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
INSTALL_HINT = ("pip install dlib-bin face_recognition_models (the 'align' extra), or pass --align off to "
                "centre-crop instead")
DETECTION_SIDE = 1024      # photos are searched at most this large (landmarks are then fitted at full size)
UPRIGHT_REFITS = 2         # landmark fits on the face turned level by the previous fit's eyes
CANDIDATE_SCORE = 0.0      # HOG detections looked at
MIN_SCORE = 0.6            # kept when the detection, or the face turned level, scores this (false alarms: < 0.4)


@dataclass
class Face:
    """One face found in a photo: box (x0, y0, x1, y1) in pixels, the detector's score, the five landmarks
    (5,2) (x, y) in FIVE_POINTS order, and every point the landmark model gave."""
    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray
    points: np.ndarray = field(default=None, repr=False)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    def to_json(self) -> dict:
        return {"box": [round(float(v), 2) for v in self.box], "score": round(float(self.score), 4),
                "landmarks": {name: [round(float(x), 2), round(float(y), 2)]
                              for name, (x, y) in zip(FIVE_POINTS, self.landmarks)}}


class FaceDetector(Protocol):
    def detect(self, rgb: np.ndarray) -> list[Face]: ...


def five_from_68(points: np.ndarray) -> np.ndarray:
    """The five landmarks from the 68-point iBUG layout: eye centres (mean of each eye's six points), the nose
    tip (30) and the mouth corners (48, 54)."""
    return np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])


def _require_dlib():
    try:
        import dlib
    except ImportError:
        raise InputError(f"face alignment needs dlib: {INSTALL_HINT}") from None
    return dlib


def default_landmark_file() -> Path:
    """shape_predictor_68_face_landmarks.dat inside the installed face_recognition_models package (found
    without importing it: its __init__ needs setuptools' pkg_resources, which recent setuptools lacks)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise InputError(f"face alignment needs the landmark model of face_recognition_models: {INSTALL_HINT}")
    return Path(spec.origin).parent / "models" / "shape_predictor_68_face_landmarks.dat"


class DlibDetector:
    """dlib's face detector (HOG, or the CNN one from a .dat file) and a 68-point shape predictor."""

    def __init__(self, landmark_file: str | Path | None = None, cnn_file: str | Path | None = None,
                 upsample: int = 1, min_score: float = MIN_SCORE):
        dlib = _require_dlib()
        self.landmark_file = Path(landmark_file) if landmark_file else default_landmark_file()
        self.predictor = dlib.shape_predictor(str(self.landmark_file))
        self.cnn = dlib.cnn_face_detection_model_v1(str(cnn_file)) if cnn_file else None
        self.hog = None if cnn_file else dlib.get_frontal_face_detector()
        self.upsample, self.min_score = upsample, min_score
        self._dlib = dlib

    def _boxes(self, rgb: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        scale = min(1.0, DETECTION_SIDE / max(rgb.shape[:2]))
        small = rgb if scale == 1.0 else _shrink(rgb, scale)
        if self.cnn is not None:
            found = [(d.rect, d.confidence) for d in self.cnn(small, self.upsample)]
        else:
            rects, scores, _ = self.hog.run(small, self.upsample, 0.0)
            found = list(zip(rects, scores))
        return [((r.left() / scale, r.top() / scale, r.right() / scale, r.bottom() / scale), float(s))
                for r, s in found if s >= CANDIDATE_SCORE]

    def _points(self, rgb: np.ndarray, box) -> np.ndarray:
        rect = self._dlib.rectangle(*(int(round(v)) for v in box))
        # dlib numbers pixel centres 0, 1, ...; here they sit at 0.5, 1.5, ...
        points = np.array([(p.x, p.y) for p in self.predictor(rgb, rect).parts()], dtype=np.float64) + 0.5
        if len(points) != 68:
            raise InputError(f"landmark model {self.landmark_file} gives {len(points)} points; expected a "
                             f"68-point dlib shape predictor (shape_predictor_68_face_landmarks.dat)")
        return points

    def _upright(self, rgb: np.ndarray, box, points: np.ndarray) -> tuple[np.ndarray, float]:
        """The landmarks fitted again on the face turned level (by the eyes of `points`), and the HOG score of the
        levelled face: the shape model starts from a level face, and on a tilted head its first fit lands between
        the two; a real face scores higher level, a false alarm does not."""
        eyes = five_from_68(points)[:2]
        angle = np.arctan2(*(eyes[1] - eyes[0])[::-1])
        width = box[2] - box[0]
        centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
        side = int(round(3 * width))
        cos, sin = np.cos(angle), np.sin(angle)
        # patch pixel (u, v) -> photo: centre + R(angle) · ((u, v) - side/2)
        to_photo = np.array([[cos, -sin, centre[0] - cos * side / 2 + sin * side / 2],
                             [sin, cos, centre[1] - sin * side / 2 - cos * side / 2]])
        patch = np.asarray(Image.fromarray(rgb).transform((side, side), Image.AFFINE, to_photo.reshape(-1),
                                                          Image.BILINEAR))
        half = side / 2
        local = self._points(patch, (half - width / 2, half - width / 2, half + width / 2, half + width / 2))
        return local @ to_photo[:, :2].T + to_photo[:, 2], self._level_score(patch, half)

    def _level_score(self, patch: np.ndarray, half: float) -> float:
        """The best HOG score of a detection covering the patch's centre (-inf without the HOG detector)."""
        if self.hog is None:
            return -np.inf
        rects, scores, _ = self.hog.run(patch, self.upsample, 0.0)
        return max((s for r, s in zip(rects, scores) if r.left() <= half <= r.right() and r.top() <= half <= r.bottom()),
                   default=-np.inf)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        faces = []
        for box, score in self._boxes(rgb):
            points = self._points(rgb, box)
            for _ in range(UPRIGHT_REFITS):
                points, level_score = self._upright(rgb, box, points)
            score = max(score, level_score)
            if score >= self.min_score:
                faces.append(Face(box, score, five_from_68(points), points))
        return faces


def _shrink(rgb: np.ndarray, scale: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BOX))


def _from_dlib_file(path: Path) -> FaceDetector:
    dlib = _require_dlib()
    try:
        dlib.shape_predictor(str(path))
        return DlibDetector(landmark_file=path)
    except RuntimeError:
        pass
    try:
        return DlibDetector(cnn_file=path)
    except RuntimeError:
        raise InputError(f"--detector {path}: neither a dlib shape predictor (68 points) nor dlib's CNN face "
                         f"detector (mmod_human_face_detector.dat)") from None


def _from_callable(spec: str) -> FaceDetector:
    module_name, _, name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise InputError(f"--detector {spec}: cannot load {name!r} from module {module_name!r} ({error})") from None
    detector = factory()
    if not callable(getattr(detector, "detect", None)):
        raise InputError(f"--detector {spec}: {name}() returned {type(detector).__name__}, which has no "
                         f"detect(rgb) -> list[Face] method")
    return detector


def load_detector(spec: str | FaceDetector | None = "dlib") -> FaceDetector:
    """A detector from "dlib" (or None), a dlib .dat file, "package.module:name", or a detector object as is."""
    if spec is None or spec == "dlib":
        return DlibDetector()
    if not isinstance(spec, str):
        if not callable(getattr(spec, "detect", None)):
            raise InputError(f"detector {type(spec).__name__} has no detect(rgb) -> list[Face] method")
        return spec
    path = Path(spec)
    if path.suffix == ".dat" or path.exists():
        if not path.is_file():
            raise InputError(f"--detector {spec}: no such file")
        return _from_dlib_file(path)
    if ":" in spec:
        return _from_callable(spec)
    raise InputError(f"--detector {spec!r}: expected 'dlib', a dlib .dat file or 'package.module:name'")
