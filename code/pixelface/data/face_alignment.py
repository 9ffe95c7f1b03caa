"""The CelebA-HQ / FFHQ face crop, from five landmarks, at any size, and its inverse.

Those datasets cut every face the same way: from the eye centres and the mouth corners, a square whose side
is twice max(2 × eye distance, 1.8 × eye-to-mouth distance), centred a tenth of the way from the eyes' midpoint
to the mouth's, turned so the eyes sit level (Karras et al. 2018, appendix C; the FFHQ alignment). Where the
square leaves the photo, the photo is mirrored at its edge, and the further out, the more it is blurred and
drawn toward the photo's median colour, as they did. `Alignment.matrix` maps crop pixels to photo pixels, so
an edited crop can be put back (pixelface.editing.paste_back).

Coordinates are continuous: pixel (i, j) covers [i, i+1) × [j, j+1), its centre is (i + 0.5, j + 0.5).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# A frontal face's five points in eye-distance units, eyes' midpoint at the origin (x right, y down); the
# residual of a similarity fit to it says whether a landmark set is a face at all.
FRONTAL_TEMPLATE = np.array([(-0.5, 0.0), (0.5, 0.0), (0.0, 0.55), (-0.45, 0.9), (0.45, 0.9)])
MAX_LANDMARK_RESIDUAL = 0.3      # rms distance to the template, in eye distances, accepted
BLUR_SIGMA = 0.02                # blur of the mirrored border, as a share of the crop side
FILL_REACH = 0.3                 # how far out (share of the crop side) the border reaches the median colour


def _rot90(v: np.ndarray) -> np.ndarray:
    """v turned a quarter clockwise on screen (y down): the direction from the eyes to the mouth for level eyes."""
    return np.array([-v[1], v[0]])


def crop_frame(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre, x, y) of the crop square: corners at centre ± x ± y, x along the eye line, |x| = |y| = half side."""
    left_eye, right_eye, _, mouth_left, mouth_right = np.asarray(landmarks, dtype=np.float64)
    eye_mid, mouth_mid = (left_eye + right_eye) / 2, (mouth_left + mouth_right) / 2
    eye_to_eye, eye_to_mouth = right_eye - left_eye, mouth_mid - eye_mid
    x = eye_to_eye - _rot90(eye_to_mouth)
    x = x / np.hypot(*x) * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    return eye_mid + 0.1 * eye_to_mouth, x, _rot90(x)


@dataclass
class Alignment:
    """matrix (2,3): crop pixel (u, v, 1) -> photo pixel (x, y); size: the crop side; photo_size (w, h)."""
    matrix: np.ndarray
    size: int
    photo_size: tuple[int, int]

    @classmethod
    def from_landmarks(cls, landmarks: np.ndarray, size: int, photo_size: tuple[int, int]) -> Alignment:
        centre, x, y = crop_frame(landmarks)
        columns = [2 * x / size, 2 * y / size, centre - x - y]
        return cls(np.stack(columns, axis=1), size, tuple(photo_size))

    @classmethod
    def from_json(cls, data: dict) -> Alignment:
        return cls(np.array(data["crop_to_photo"], dtype=np.float64), int(data["size"]), tuple(data["photo_size"]))

    def to_json(self) -> dict:
        return {"size": self.size, "photo_size": list(self.photo_size),
                "crop_to_photo": self.matrix.round(6).tolist(), "photo_to_crop": self.inverse().round(6).tolist()}

    def inverse(self) -> np.ndarray:
        """(2,3) photo pixel -> crop pixel."""
        full = np.vstack([self.matrix, [0, 0, 1]])
        return np.linalg.inv(full)[:2]

    @property
    def scale(self) -> float:
        """Photo pixels per crop pixel."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    @property
    def angle(self) -> float:
        """Rotation of the crop's x axis in the photo, degrees."""
        return float(np.degrees(np.arctan2(self.matrix[1, 0], self.matrix[0, 0])))

    def crop_to_photo(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=np.float64) @ self.matrix[:, :2].T + self.matrix[:, 2]

    def photo_to_crop(self, points: np.ndarray) -> np.ndarray:
        inverse = self.inverse()
        return np.asarray(points, dtype=np.float64) @ inverse[:, :2].T + inverse[:, 2]

    def corners(self) -> np.ndarray:
        """(4,2) photo positions of the crop's corners, clockwise from the top left."""
        s = self.size
        return self.crop_to_photo(np.array([(0, 0), (s, 0), (s, s), (0, s)], dtype=np.float64))

    def covers_whole_photo(self, tolerance: float = 0.08) -> bool:
        """Whether the crop is (nearly) the photo itself: the photo is already an aligned crop."""
        w, h = self.photo_size
        expected = np.array([(0, 0), (w, 0), (w, h), (0, h)], dtype=np.float64)
        return bool(np.abs(self.corners() - expected).max() <= tolerance * max(w, h))


def landmark_residual(landmarks: np.ndarray) -> float:
    """RMS distance, in eye distances, between the landmarks and the frontal template after the best
    similarity fit: ~0.1 for a frontal face, large for points that are not a face's layout."""
    points = np.asarray(landmarks, dtype=np.float64)
    eye_distance = np.hypot(*(points[1] - points[0]))
    if eye_distance < 1e-6:
        return float("inf")
    p = points - points.mean(0)
    t = FRONTAL_TEMPLATE - FRONTAL_TEMPLATE.mean(0)
    # complex least squares: p ≈ a·t with a = scale·e^{iθ}
    pc, tc = p[:, 0] + 1j * p[:, 1], t[:, 0] + 1j * t[:, 1]
    a = np.vdot(tc, pc) / np.vdot(tc, tc)
    residual = np.sqrt(np.mean(np.abs(pc - a * tc) ** 2))
    return float(residual / abs(a))


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N,C,H,W), mirrored at the edges."""
    radius = max(1, int(3 * sigma + 0.5))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype) / sigma) ** 2)
    taps = taps / taps.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect" if min(x.shape[2:]) > radius else "replicate")
    x = F.conv2d(x, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _prefiltered(photo: np.ndarray, alignment: Alignment) -> tuple[torch.Tensor, float]:
    """The photo as (1,3,H,W) float, first shrunk by an integer factor when the crop samples it more than
    twice coarser than its pixels (no aliasing), and that factor."""
    shrink = int(np.floor(alignment.scale / 2))
    image = Image.fromarray(photo)
    if shrink > 1:
        image = image.reduce(shrink)
    tensor = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    return tensor, max(shrink, 1)


def _crop_grid(alignment: Alignment, shrink: float, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """grid_sample's grid for the crop's pixel centres, and each pixel's distance outside the photo in crop pixels."""
    s = alignment.size
    v, u = np.meshgrid(np.arange(s) + 0.5, np.arange(s) + 0.5, indexing="ij")
    photo = alignment.crop_to_photo(np.stack([u, v], -1).reshape(-1, 2)).reshape(s, s, 2) / shrink
    outside = np.maximum.reduce([-photo[..., 0], photo[..., 0] - width, -photo[..., 1], photo[..., 1] - height,
                                 np.zeros((s, s))])
    grid = np.stack([photo[..., 0] / width * 2 - 1, photo[..., 1] / height * 2 - 1], -1)
    per_crop_pixel = alignment.scale / shrink
    return (torch.from_numpy(grid).float()[None], torch.from_numpy(outside / per_crop_pixel).float()[None, None])


def warp_to_crop(photo: np.ndarray, alignment: Alignment) -> np.ndarray:
    """(H,W,3) uint8 photo -> (size,size,3) uint8 aligned crop; outside the photo mirrored, blurred and faded
    toward the photo's median colour."""
    image, shrink = _prefiltered(photo, alignment)
    grid, outside = _crop_grid(alignment, shrink, image.shape[3], image.shape[2])
    crop = F.grid_sample(image, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if outside.max() > 0:
        size = alignment.size
        reach = (outside / (FILL_REACH * size)).clamp(0, 1)
        crop = torch.lerp(crop, gaussian_blur(crop, max(BLUR_SIGMA * size, 0.5)), (3 * reach).clamp(0, 1))
        median = image.flatten(2).median(dim=2).values[..., None, None]
        crop = torch.lerp(crop, median.expand_as(crop), reach)
    return crop[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()


def align_face(photo: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, Alignment]:
    """The aligned (size,size,3) uint8 crop of the face with these five landmarks, and its Alignment."""
    alignment = Alignment.from_landmarks(landmarks, size, (photo.shape[1], photo.shape[0]))
    return warp_to_crop(photo, alignment), alignment
