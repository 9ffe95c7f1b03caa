"""The painter: render_face draws one face from an attribute dict, as an image and its exact
CelebAMask-HQ label map. Every drawn part carries both a colour and a class, so image and labels
come out of one painter; colour-only attributes (make-up, blush, pale skin, beard, hair colour) are
applied when colouring and leave the label map as it is.

Side convention: 'l_' parts (l_eye, l_brow, l_ear) are the person's left, i.e. the image's right.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from PIL import Image, ImageDraw

from pixelface.data.masks import LABEL_ID, NUM_CLASSES
from .attributes import HAIR_RGB, check_attributes

# ----------------------------------------------------------------------------------------------------
# Colours (RGB, 0..255)

_SKIN_TONES = np.array([(238, 202, 176), (218, 168, 134), (186, 130, 94), (146, 98, 68), (102, 68, 48)], float)
_PALE_SKIN = (250, 232, 224)
_LIPSTICKS = np.array([(192, 28, 48), (214, 56, 108), (150, 24, 60), (222, 70, 70)], float)
_EYESHADOWS = np.array([(150, 84, 168), (84, 110, 186), (136, 62, 124), (110, 90, 190)], float)
_IRISES = np.array([(96, 60, 34), (52, 36, 26), (70, 112, 164), (78, 118, 80), (128, 98, 52)], float)
_FRAMES = np.array([(24, 24, 28), (86, 52, 30), (70, 70, 70)], float)
_JEWELS = np.array([(222, 182, 62), (204, 204, 214), (240, 234, 222), (200, 40, 60), (50, 120, 200)], float)
_BLUSH = (236, 96, 112)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """HSV in [0,1] -> RGB 0..255 (for random background, cloth and hat colours)."""
    i, f = int(h * 6) % 6, h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return 255 * np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])

# ----------------------------------------------------------------------------------------------------
# Drawn parts: each has a CelebAMask-HQ class; several parts share a class but not a colour.

PARTS = ("background", "hair", "neck", "cloth", "necklace", "l_ear", "r_ear", "skin", "nose",
         "nose_shadow", "nostril", "lens", "l_eye", "r_eye", "lash_l", "lash_r", "l_brow", "r_brow", "frame",
         "mouth", "teeth", "u_lip", "l_lip", "lip_line", "hat", "hat_band", "earring")
_PART_CLASS = {"nose_shadow": "nose", "nostril": "nose", "lens": "eyeglasses",
               "lash_l": "l_eye", "lash_r": "r_eye", "frame": "eyeglasses", "teeth": "mouth",
               "lip_line": "u_lip", "hat_band": "hat"}
PART = {name: i for i, name in enumerate(PARTS)}
_PART_TO_LABEL = np.array([LABEL_ID[_PART_CLASS.get(p, p)] for p in PARTS], np.uint8)
# Parts whose colour is the skin's: they take lighting, blush, eyeshadow (the lens is transparent).
_SKINLIKE = np.array([p in ("skin", "lens") for p in PARTS])
_UNLIT_LABELS = [LABEL_ID[c] for c in ("l_eye", "r_eye", "mouth")]


def _draw_geometry(rng: np.random.Generator, size: int) -> SimpleNamespace:
    """Every random number a face needs, drawn in a fixed order whatever the attributes are, so
    that changing an attribute never shifts the random stream (same seed -> same geometry)."""
    u = rng.uniform
    g = SimpleNamespace(
        angle=u(-7, 7), scale=u(0.92, 1.05), shift_x=u(-0.03, 0.03), shift_y=u(-0.025, 0.025),
        yaw=u(-0.016, 0.016), face_w=u(0.175, 0.2), face_h=u(0.25, 0.275), jaw=u(0.18, 0.4),
        eye_y=u(-0.03, -0.012), eye_sp=u(0.074, 0.086), eye_w=u(0.034, 0.04), eye_h=u(0.016, 0.019),
        gaze=u(-0.006, 0.006), brow_gap=u(0.05, 0.058), brow_len=u(0.052, 0.062), nose_len=u(0.075, 0.09),
        nose_w=u(0.027, 0.033), mouth_y=u(0.145, 0.16), mouth_w=u(0.05, 0.058), lip_u=u(0.012, 0.015),
        lip_l=u(0.015, 0.02), hair_long=u(), hair_volume=u(1.07, 1.16), hair_end=u(0.3, 0.5),
        hairline=u(-0.2, -0.16), parting=u(-0.06, 0.06), wave_phase=u(0, 2 * np.pi), wave_freq=u(8, 12),
        fringe_phase=u(0, 1), strand_freq=u(28, 40), strand_phase=u(0, 2 * np.pi), hat_kind=u(),
        glasses_kind=u(), neckline=u(), earring_kind=u(), light_angle=u(0, 2 * np.pi), light=u(0.05, 0.12),
        skin_tone=u(), hair_shade=u(0.88, 1.1), hair_tint=u(-6, 6, 3), pale_jitter=u(-4, 4, 3),
        lipstick=int(u(0, len(_LIPSTICKS))), eyeshadow=int(u(0, len(_EYESHADOWS))),
        iris=int(u(0, len(_IRISES))), frame=int(u(0, len(_FRAMES))), jewel=int(u(0, len(_JEWELS))),
        background=_hsv(u(), u(0.1, 0.45), u(0.45, 0.95)), background_tilt=u(-0.12, 0.12),
        cloth=_hsv(u(), u(0.2, 0.8), u(0.2, 0.85)), hat_color=_hsv(u(), u(0.3, 0.9), u(0.2, 0.8)))
    ss = _supersampling(size)
    g.stipple = rng.random((size * ss, size * ss), dtype=np.float32)   # beard texture
    g.grain = rng.standard_normal((size, size, 3), dtype=np.float32)   # sensor-like noise
    return g


def _supersampling(size: int) -> int:
    """Subpixels per pixel side: small images are drawn finer so that their edges are anti-aliased."""
    return max(2, 192 // size)

# ----------------------------------------------------------------------------------------------------
# Painter: polygons in face coordinates (origin between the eyes and the mouth, y down, unit = image
# side) are posed (rotation, scale, shift) and filled with a part id on a supersampled canvas.


_FACE_ZOOM = 1.18          # face coordinates -> image units (the face fills the frame as in CelebA-HQ)


class _Canvas:
    def __init__(self, g: SimpleNamespace, res: int):
        self.res = res
        self.parts = Image.new("L", (res, res), PART["background"])
        self.draw = ImageDraw.Draw(self.parts)
        self.beard = Image.new("L", (res, res), 0)
        self.eyeshadow = Image.new("L", (res, res), 0)
        theta = np.deg2rad(g.angle)
        self.zoom = _FACE_ZOOM * g.scale
        self.rot = self.zoom * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        self.center = np.array([0.5 + g.shift_x, 0.47 + g.shift_y])

    def to_pixels(self, pts) -> list[float]:
        """Face coordinates -> flat [x0, y0, x1, y1, ...] canvas pixels (PIL's fast path)."""
        pts = np.asarray(pts, float).reshape(-1, 2)
        return ((self.center + pts @ self.rot.T) * self.res).ravel().tolist()

    def polygon(self, pts, part: str):
        self.draw.polygon(self.to_pixels(pts), fill=PART[part])

    def mark(self, pts, layer: Image.Image):
        """Mark a region on an overlay layer (make-up, beard): pixels change colour, not class."""
        ImageDraw.Draw(layer).polygon(self.to_pixels(pts), fill=255)

    def line(self, pts, width: float, part: str):
        """A polyline `width` image-units wide (at least one subpixel)."""
        w = max(1, int(round(width * self.res * np.abs(np.linalg.det(self.rot)) ** 0.5)))
        self.draw.line(self.to_pixels(pts), fill=PART[part], width=w, joint="curve")


def _ellipse(cx, cy, rx, ry, t0=0.0, t1=2 * np.pi, n=48, power=2.0) -> np.ndarray:
    """Points of a (super)ellipse arc; power > 2 gives rounded rectangles."""
    t = np.linspace(t0, t1, n, endpoint=abs(t1 - t0) < 2 * np.pi - 1e-9)
    c, s = np.cos(t), np.sin(t)
    e = 2.0 / power
    return np.stack([cx + rx * np.sign(c) * np.abs(c) ** e, cy + ry * np.sign(s) * np.abs(s) ** e], 1)


def _face_outline(g, attrs) -> np.ndarray:
    jaw = g.jaw * (0.6 if attrs["gender"] == "male" else 1.0)
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    lower = np.clip(np.sin(t), 0, None)
    x = g.face_w * np.cos(t) * (1 - jaw * lower ** 2)
    y = g.face_h * np.sin(t)
    return np.stack([x, y], 1)


def _skull_ellipse(g):
    """Centre and radii of the cranium the hair and hats sit on."""
    return 0.0, -0.04, g.face_w * 1.03, g.face_h * 1.1


def _is_long_hair(g, attrs) -> bool:
    return g.hair_long < (0.85 if attrs["gender"] == "female" else 0.08)


def _hair_radius(g, attrs, t) -> np.ndarray:
    """Outer hair radius factor along angle t: wavy hair has a rippled outline."""
    ripple = 0.035 * np.sin(g.wave_freq * t + g.wave_phase) if attrs["hair_style"] == "wavy" else 0.0
    return g.hair_volume * (1 + ripple)


def _paint_back_hair(cv: _Canvas, g, attrs):
    cx, cy, rx, ry = _skull_ellipse(g)
    if _is_long_hair(g, attrs):
        t = np.linspace(np.pi, 2 * np.pi, 40)
        r = _hair_radius(g, attrs, t)
        top = np.stack([cx + rx * r * np.cos(t), cy + ry * r * np.sin(t)], 1)
        ys = np.linspace(cy, g.hair_end, 20)
        flare = rx * g.hair_volume + 0.07 * (ys - cy) / (g.hair_end - cy)
        wave = 0.018 * np.sin(ys * 70 + g.wave_phase) if attrs["hair_style"] == "wavy" else 0.0
        right = np.stack([flare + wave, ys], 1)
        left = np.stack([-flare - wave, ys], 1)[::-1]
        cv.polygon(np.concatenate([top, right, left]), "hair")
    else:
        t = np.linspace(np.pi - 0.35, 2 * np.pi + 0.35, 48)
        r = _hair_radius(g, attrs, t) * 0.97
        cv.polygon(np.stack([cx + rx * r * np.cos(t), cy + ry * r * np.sin(t)], 1), "hair")


def _hairline(g, attrs, x_temple: float, y_temple: float) -> np.ndarray:
    """Lower edge of the front hair, from the right temple to the left one."""
    xs = np.linspace(x_temple, -x_temple, 41)
    if attrs["hair_style"] == "bangs":
        fringe_y = g.eye_y - g.brow_gap - 0.018
        teeth = 0.012 * np.abs(np.sin((xs / 0.024 + g.fringe_phase) * np.pi))
        side = np.clip((np.abs(xs) - 0.75 * x_temple) / (0.25 * x_temple), 0, 1)
        ys = fringe_y + teeth * (1 - side) + side ** 2 * (y_temple - fringe_y)
    else:
        off = np.abs(xs - g.parting) / (x_temple + abs(g.parting))
        ys = g.hairline + (y_temple - g.hairline) * off ** 2.2
    return np.stack([xs, ys], 1)


def _paint_front_hair(cv: _Canvas, g, attrs):
    cx, cy, rx, ry = _skull_ellipse(g)
    y_temple = g.eye_y - 0.035
    t0 = np.pi + np.arcsin(np.clip((cy - y_temple) / ry, -1, 1))
    t = np.linspace(t0, 3 * np.pi - t0, 48)
    r = _hair_radius(g, attrs, t)
    outer = np.stack([cx + rx * r * np.cos(t), cy + ry * r * np.sin(t)], 1)
    cv.polygon(np.concatenate([outer, _hairline(g, attrs, g.face_w * 0.93, y_temple)]), "hair")


def _paint_body(cv: _Canvas, g, attrs):
    nw, y = g.face_w * 0.55, 0.33                              # neck half-width, shoulder line
    cv.polygon([(-nw, 0.1), (nw, 0.1), (nw * 1.08, 0.56), (-nw * 1.08, 0.56)], "neck")
    if g.neckline < 0.5:                                      # round neckline
        neckline = [(nw * 1.1, y), (nw * 0.55, y + 0.06), (0, y + 0.075), (-nw * 0.55, y + 0.06), (-nw * 1.1, y)]
    else:                                                     # V neckline
        neckline = [(nw * 1.1, y), (0, y + 0.13), (-nw * 1.1, y)]
    shoulders = [(-nw * 1.1, y), (-0.3, y + 0.05), (-0.46, y + 0.17), (-0.6, 0.8), (0.6, 0.8), (0.46, y + 0.17),
                 (0.3, y + 0.05)]
    cv.polygon(shoulders + neckline, "cloth")
    if attrs["necklace"]:
        chain = [(-nw * 0.95, y - 0.05), (-nw * 0.55, y + 0.015), (0, y + 0.04), (nw * 0.55, y + 0.015),
                 (nw * 0.95, y - 0.05)]
        cv.line(chain, 0.011, "necklace")
        cv.polygon(_ellipse(0, y + 0.055, 0.013, 0.016), "necklace")


def _ear(g, side: int):
    return side * g.face_w * 0.97, g.eye_y + 0.035, 0.028, 0.052


def _paint_ears(cv: _Canvas, g):
    for side, part in ((-1, "r_ear"), (1, "l_ear")):
        x, y, rx, ry = _ear(g, side)
        cv.polygon(_ellipse(x, y, rx, ry), part)


def _paint_face(cv: _Canvas, g, attrs):
    cx, cy, rx, ry = _skull_ellipse(g)
    cv.polygon(_ellipse(cx, cy, rx, ry, np.pi, 2 * np.pi), "skin")
    cv.polygon(_face_outline(g, attrs), "skin")


def _paint_nose(cv: _Canvas, g, attrs):
    big = 1.35 if attrs["big_nose"] else 1.0
    x0, top, w = g.yaw * 1.2, g.eye_y + 0.006, g.nose_w * big
    tip = g.eye_y + g.nose_len * (1.15 if attrs["big_nose"] else 1.0)
    half = np.array([(0.011 * big, top), (0.014 * big, tip - 0.035), (w * 0.7, tip - 0.008), (w, tip + 0.004),
                     (w * 0.6, tip + 0.015), (0, tip + 0.017)])
    outline = np.concatenate([half, half[::-1][1:] * (-1, 1)]) + (x0, 0)
    cv.polygon(outline, "nose")
    shade = -1 if np.cos(g.light_angle) > 0 else 1           # the half facing away from the light
    cv.polygon(np.concatenate([half[:-1] * (shade, 1), [(0.003 * shade, tip + 0.01), (0.003 * shade, top)]])
               + (x0, 0), "nose_shadow")
    for side in (-1, 1):
        cv.polygon(_ellipse(x0 + side * w * 0.45, tip + 0.007, w * 0.28, 0.0055), "nostril")


def _eye_outline(g, attrs, side: int):
    ex, ey = side * g.eye_sp + g.yaw, g.eye_y
    h = g.eye_h * (0.55 if attrs["narrow_eyes"] else 1.0)
    xs = np.linspace(-1, 1, 17)
    upper = np.stack([ex + g.eye_w * xs, ey - h * (1 - xs ** 2) ** 0.8], 1)
    lower = np.stack([ex + g.eye_w * xs, ey + 0.7 * h * (1 - xs ** 2)], 1)[::-1]
    return upper, lower


def _paint_eyes(cv: _Canvas, g, attrs):
    for side, eye, lash in ((-1, "r_eye", "lash_r"), (1, "l_eye", "lash_l")):
        upper, lower = _eye_outline(g, attrs, side)
        cv.polygon(np.concatenate([upper, lower]), eye)
        cv.line(upper, 0.007, lash)
        shadow_top = upper - (0, 0.028) * (1 - np.linspace(-1, 1, len(upper)) ** 2)[:, None] ** 0.3
        cv.mark(np.concatenate([upper, shadow_top[::-1]]), cv.eyeshadow)


def _paint_brows(cv: _Canvas, g, attrs):
    arch = 0.02 if attrs["arched_eyebrows"] else 0.007
    thick = 0.02 if attrs["bushy_eyebrows"] else 0.011
    length = g.brow_len * (1.12 if attrs["bushy_eyebrows"] else 1.0)
    s = np.linspace(0, 1, 16)
    for side, part in ((-1, "r_brow"), (1, "l_brow")):
        x = side * (g.eye_sp - g.eye_w * 0.85 + s * length) + g.yaw
        y = g.eye_y - g.brow_gap - arch * np.sin(np.pi * s ** 0.75)
        t = thick * (1 - 0.55 * s) + 0.003
        cv.polygon(np.concatenate([np.stack([x, y - t / 2], 1), np.stack([x, y + t / 2], 1)[::-1]]), part)


def _lens(g, side: int) -> np.ndarray:
    power = 2.0 if g.glasses_kind < 0.5 else 3.5               # round or rectangular lenses
    return _ellipse(side * g.eye_sp + g.yaw, g.eye_y + 0.004, g.eye_w * 1.45, 0.042, power=power)


def _paint_lenses(cv: _Canvas, g):
    for side in (-1, 1):
        cv.polygon(_lens(g, side), "lens")


def _paint_frames(cv: _Canvas, g):
    for side in (-1, 1):
        lens = _lens(g, side)
        cv.line(np.concatenate([lens, lens[:1]]), 0.009, "frame")
        outer = side * (g.eye_sp + g.eye_w * 1.45) + g.yaw
        cv.line([(outer, g.eye_y - 0.006), (side * g.face_w * 1.0, g.eye_y + 0.004)], 0.008, "frame")
    inner = g.eye_sp - g.eye_w * 1.45
    cv.line([(-inner + g.yaw, g.eye_y - 0.008), (g.yaw, g.eye_y - 0.012), (inner + g.yaw, g.eye_y - 0.008)],
            0.008, "frame")


def _paint_mouth(cv: _Canvas, g, attrs):
    big = 1.45 if attrs["big_lips"] else 1.0
    w = g.mouth_w * (1.1 if attrs["big_lips"] else 1.0) * (1.1 if attrs["smiling"] else 1.0)
    lift = 0.016 if attrs["smiling"] else 0.0
    gap = 0.017 if attrs["mouth_open"] else 0.0
    xs = np.linspace(-1, 1, 25)
    x = g.yaw * 1.3 + w * xs
    line = g.mouth_y - lift * xs ** 2 + lift * 0.3
    body = np.sqrt(1 - xs ** 2)
    top = line - g.lip_u * big * body * (1 - 0.3 * np.exp(-(xs / 0.18) ** 2)) - 0.002 * body
    opening = line + gap * (1 - xs ** 2)
    bottom = opening + g.lip_l * big * body
    pts = lambda ys: np.stack([x, ys], 1)
    cv.polygon(np.concatenate([pts(top), pts(line)[::-1]]), "u_lip")
    cv.polygon(np.concatenate([pts(opening), pts(bottom)[::-1]]), "l_lip")
    if attrs["mouth_open"]:
        cv.polygon(np.concatenate([pts(line), pts(opening)[::-1]]), "mouth")
        inner = np.abs(xs) < 0.7
        cv.polygon(np.concatenate([pts(line)[inner], pts(line + 0.5 * gap * (1 - xs ** 2))[inner][::-1]]), "teeth")
    else:
        cv.line(pts(line)[2:-2], 0.004, "lip_line")


def _paint_hat(cv: _Canvas, g):
    cx, cy, rx, ry = _skull_ellipse(g)
    y_hat = g.hairline - 0.005
    if g.hat_kind < 0.5:                                      # beanie with a folded cuff
        r = g.hair_volume * 1.04
        t0 = np.pi + np.arcsin(np.clip((cy - y_hat) / (ry * r), -1, 1))
        cv.polygon(_ellipse(cx, cy, rx * r, ry * r, t0, 3 * np.pi - t0), "hat")
        cv.polygon([(-rx * r * 1.02, y_hat - 0.04), (rx * r * 1.02, y_hat - 0.04), (rx * r * 1.02, y_hat + 0.004),
                    (-rx * r * 1.02, y_hat + 0.004)], "hat_band")
    else:                                                     # brimmed hat
        top = y_hat - 0.17
        cv.polygon([(-rx * 0.95, y_hat), (-rx * 0.8, top), (rx * 0.8, top), (rx * 0.95, y_hat)], "hat")
        cv.polygon([(-rx * 0.95, y_hat - 0.008), (-rx * 0.93, y_hat - 0.04), (rx * 0.93, y_hat - 0.04),
                    (rx * 0.95, y_hat - 0.008)], "hat_band")
        cv.polygon(_ellipse(cx, y_hat, rx * 1.85, 0.03), "hat")


def _paint_earrings(cv: _Canvas, g):
    for side in (-1, 1):
        x, y, rx, ry = _ear(g, side)
        drop = 0.018 if g.earring_kind < 0.5 else 0.013       # drop or stud
        cv.polygon(_ellipse(x + side * 0.004, y + ry + 0.01, 0.012, drop), "earring")


def _paint_beard(cv: _Canvas, g):
    """Beard region on a separate layer: it recolours skin pixels and never changes the label map."""
    w, y0 = g.face_w * 1.05, g.eye_y + g.nose_len + 0.012
    cv.mark([(-w, y0 - 0.01), (-0.1, y0 + 0.005), (-0.055, y0 + 0.02), (0, y0 + 0.016), (0.055, y0 + 0.02),
                (0.1, y0 + 0.005), (w, y0 - 0.01), (w, 0.4), (-w, 0.4)], cv.beard)


def _paint(g, attrs, res: int) -> _Canvas:
    """Paint every part back to front; later parts cover earlier ones in image and labels alike."""
    cv = _Canvas(g, res)
    if attrs["hair_style"] != "bald":
        _paint_back_hair(cv, g, attrs)
    _paint_body(cv, g, attrs)
    _paint_ears(cv, g)
    _paint_face(cv, g, attrs)
    _paint_nose(cv, g, attrs)
    if attrs["eyeglasses"]:
        _paint_lenses(cv, g)
    _paint_eyes(cv, g, attrs)
    _paint_brows(cv, g, attrs)
    if attrs["eyeglasses"]:
        _paint_frames(cv, g)
    _paint_mouth(cv, g, attrs)
    if attrs["hair_style"] != "bald":
        _paint_front_hair(cv, g, attrs)
    if attrs["hat"]:
        _paint_hat(cv, g)
    if attrs["earrings"]:
        _paint_earrings(cv, g)
    _paint_beard(cv, g)
    return cv

# ----------------------------------------------------------------------------------------------------
# Colouring


def _skin_rgb(g, attrs) -> np.ndarray:
    if attrs["pale_skin"]:
        return np.array(_PALE_SKIN, float) + g.pale_jitter
    pos = g.skin_tone * (len(_SKIN_TONES) - 1)
    i = min(int(pos), len(_SKIN_TONES) - 2)
    return _SKIN_TONES[i] + (pos - i) * (_SKIN_TONES[i + 1] - _SKIN_TONES[i])


def _hair_rgb(g, attrs) -> np.ndarray:
    return np.clip(np.array(HAIR_RGB[attrs["hair_color"]], float) * g.hair_shade + g.hair_tint, 0, 255)


def _part_colors(g, attrs) -> np.ndarray:
    skin, hair = _skin_rgb(g, attrs), _hair_rgb(g, attrs)
    lips = _LIPSTICKS[g.lipstick] if attrs["lipstick"] else skin * (0.88, 0.66, 0.66)
    colors = {"background": g.background, "hair": hair, "neck": skin * 0.86, "cloth": g.cloth,
              "necklace": _JEWELS[g.jewel], "l_ear": skin * 0.94, "r_ear": skin * 0.94,
              "skin": skin, "nose": skin * 0.97, "nose_shadow": skin * 0.82, "nostril": skin * 0.45, "lens": skin,
              "l_eye": (240, 238, 232), "r_eye": (240, 238, 232), "lash_l": (36, 26, 26), "lash_r": (36, 26, 26),
              "l_brow": hair * 0.72, "r_brow": hair * 0.72, "frame": _FRAMES[g.frame], "mouth": (88, 24, 30),
              "teeth": (236, 232, 220), "u_lip": lips * 0.93, "l_lip": lips, "lip_line": lips * 0.55,
              "hat": g.hat_color, "hat_band": g.hat_color * 0.7, "earring": _JEWELS[g.jewel]}
    return np.array([colors[p] for p in PARTS], np.float32)


def _pixel_grid(res: int):
    c = (np.arange(res, dtype=np.float32) + 0.5) / res
    return c[None, :], c[:, None]


def _image_point(cv: _Canvas, point=(0.0, 0.0)) -> np.ndarray:
    """Face coordinates of one point -> image units (0..1)."""
    return np.array(cv.to_pixels([point])) / cv.res


def _colorize(cv: _Canvas, g, attrs) -> np.ndarray:
    """Supersampled part map -> float RGB image, with hair texture and make-up overlays."""
    parts = np.asarray(cv.parts)
    img = np.take(_part_colors(g, attrs), parts, axis=0)
    skinlike = _SKINLIKE[parts]
    if attrs["heavy_makeup"]:
        shadow = (np.asarray(cv.eyeshadow) > 0) & skinlike
        img[shadow] = 0.2 * img[shadow] + 0.8 * _EYESHADOWS[g.eyeshadow]
    if attrs["rosy_cheeks"]:
        _blend_blush(img, cv, g, skinlike)
    if attrs["beard"]:
        beard = (np.asarray(cv.beard) > 0) & (parts == PART["skin"])
        tone = _hair_rgb(g, attrs) * 0.6                      # beards read darker than scalp hair
        stipple = g.stipple[beard][:, None]
        img[beard] = 0.12 * img[beard] + 0.88 * tone * (0.85 + 0.3 * stipple)
    hair_y, hair_x = np.nonzero(parts == PART["hair"])
    x, y = (hair_x + 0.5) / cv.res, (hair_y + 0.5) / cv.res
    wave = 2.5 * np.sin(y * 60 + g.wave_phase) if attrs["hair_style"] == "wavy" else 0.0
    strands = np.sin(2 * np.pi * g.strand_freq * x + g.strand_phase + wave)
    img[hair_y, hair_x] *= (0.93 + 0.07 * strands)[:, None]
    _paint_irises(img, cv, g, parts)
    return img


def _blend_blush(img, cv, g, skinlike):
    xs, ys = _pixel_grid(cv.res)
    sigma = 0.024 * cv.zoom
    weight = np.zeros(skinlike.shape, np.float32)
    for side in (-1, 1):
        cx, cy = _image_point(cv, (side * (g.eye_sp + 0.012) + g.yaw, g.eye_y + 0.055))
        weight += np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma ** 2))
    alpha = (0.6 * np.clip(weight, 0, 1) * skinlike)[..., None]
    img[:] = (1 - alpha) * img + alpha * np.array(_BLUSH, np.float32)


def _shade(image: np.ndarray, labels: np.ndarray, cv: _Canvas, g) -> np.ndarray:
    """Soft light from one side and darker face borders, a gradient on the background. Lighting is
    smooth, so it is applied at output resolution."""
    xs, ys = _pixel_grid(labels.shape[0])
    cx, cy = _image_point(cv)
    dx, dy = (xs - cx) / (0.22 * cv.zoom), (ys - cy) / (0.26 * cv.zoom)
    lit = 1 + g.light * (dx * np.cos(g.light_angle) + dy * np.sin(g.light_angle)) - 0.1 * (dx ** 2 + dy ** 2)
    factor = np.where(np.isin(labels, _UNLIT_LABELS), 1.0, np.clip(lit, 0.7, 1.15))
    background = 1 + g.background_tilt * (2 * ys - 1)
    factor = np.where(labels == LABEL_ID["background"], background, factor)
    return image * factor[..., None]


def _paint_irises(img, cv, g, parts):
    radius = 0.8 * g.eye_h * cv.zoom
    for side, eye in ((-1, "r_eye"), (1, "l_eye")):
        cx, cy = _image_point(cv, (side * g.eye_sp + g.yaw + g.gaze, g.eye_y + 0.002))
        x0, x1 = int((cx - 2 * radius) * cv.res), int((cx + 2 * radius) * cv.res) + 1
        y0, y1 = int((cy - 2 * radius) * cv.res), int((cy + 2 * radius) * cv.res) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, cv.res), min(y1, cv.res)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        d = np.hypot((xx + 0.5) / cv.res - cx, (yy + 0.5) / cv.res - cy) / radius
        inside = parts[y0:y1, x0:x1] == PART[eye]
        patch = img[y0:y1, x0:x1]
        patch[inside & (d < 1)] = _IRISES[g.iris]
        patch[inside & (d < 0.45)] = (18, 14, 14)


def _downsample(img: np.ndarray, parts: np.ndarray, ss: int) -> tuple[np.ndarray, np.ndarray]:
    """Box-filter the image; each pixel's label is the class covering most of its subpixels."""
    h = img.shape[0] // ss
    # Sum subpixel rows, then subpixel columns (several times faster than a 5-D mean).
    image = img.reshape(h, ss, h * ss * 3).sum(1).reshape(h, h, ss, 3).sum(2) / (ss * ss)
    labels = _PART_TO_LABEL[parts].reshape(h, ss, h, ss).transpose(0, 2, 1, 3).reshape(h * h, ss * ss)
    votes = np.bincount((np.arange(h * h)[:, None] * NUM_CLASSES + labels).ravel(), minlength=h * h * NUM_CLASSES)
    return image, votes.reshape(h, h, NUM_CLASSES).argmax(-1).astype(np.uint8)


def render_face(attrs: dict, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one face: (image uint8 (size,size,3), labels uint8 (size,size) of CelebAMask-HQ classes).

    `rng` drives geometry, pose, non-attribute colours and noise, drawn the same way whatever the
    attributes; so re-rendering with the same rng state and only a COLOR_ONLY attribute changed
    gives an identical label map.
    """
    check_attributes(attrs)
    if size < 16:
        raise ValueError(f"size = {size}: synthetic faces need at least 16 pixels")
    g = _draw_geometry(rng, size)
    ss = _supersampling(size)
    cv = _paint(g, attrs, size * ss)
    image, labels = _downsample(_colorize(cv, g, attrs), np.asarray(cv.parts), ss)
    image = _shade(image, labels, cv, g) + 2.5 * g.grain
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), labels
