"""Die designs as relief: a portrait obverse, figure reverses, legend rings and beaded borders.

Everything is drawn from vector primitives in design units (die radius = 1, x right, y down) at
whatever grid size is asked, so a die looks the same at every resolution. A design height of 1
is the die's highest relief (the cheek of the portrait); the field is 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from rig.sim.coins import CoinType, Die, Ruler, stable_rng

Point = tuple[float, float]
_SHIFT = 4  # cv2 fixed-point bits: shapes are placed with 1/16 px precision
_ONE = 1 << _SHIFT


class Canvas:
    """A square grid spanning [-extent, extent]² design units, with the die's own jitter."""

    def __init__(self, size: int, extent: float, die: Die, mirror: bool = False) -> None:
        self.size = size
        self.extent = extent
        self.scale = size / (2 * extent)
        j = die.jitter
        rot = math.radians(j["rot"])
        self._a = j["scale"] * math.cos(rot)
        self._b = j["scale"] * math.sin(rot)
        self._dx, self._dy = j["dx"], j["dy"]
        self._mirror = -1.0 if mirror else 1.0
        self.height = np.zeros((size, size), np.float32)

    def units(self, value: float) -> float:
        """A length in design units as pixels."""
        return value * self.scale

    def _px(self, p: Point) -> list[int]:
        x, y = p[0] * self._mirror, p[1]
        x, y = self._a * x - self._b * y + self._dx, self._b * x + self._a * y + self._dy
        return [
            round((x + self.extent) * self.scale * _ONE - _ONE / 2),
            round((y + self.extent) * self.scale * _ONE - _ONE / 2),
        ]

    def mask(self) -> np.ndarray:
        """A blank uint8 mask to draw into."""
        return np.zeros((self.size, self.size), np.uint8)

    def poly(self, mask: np.ndarray, pts: Sequence[Point]) -> np.ndarray:
        """Fill a polygon."""
        arr = np.array([self._px(p) for p in pts], np.int32)
        cv2.fillPoly(mask, [arr], 255, cv2.LINE_AA, _SHIFT)
        return mask

    def ellipse(
        self, mask: np.ndarray, c: Point, axes: Point, angle_deg: float = 0.0
    ) -> np.ndarray:
        """Fill an ellipse (axes are semi-axes in design units)."""
        centre = tuple(self._px(c))
        ax = (max(1, round(self.units(axes[0]) * _ONE)), max(1, round(self.units(axes[1]) * _ONE)))
        angle = self._mirror * angle_deg + math.degrees(math.atan2(self._b, self._a))
        cv2.ellipse(mask, centre, ax, angle, 0, 360, 255, -1, cv2.LINE_AA, _SHIFT)
        return mask

    def line(self, mask: np.ndarray, pts: Sequence[Point], width: float) -> np.ndarray:
        """Draw a polyline of the given width (design units)."""
        arr = np.array([self._px(p) for p in pts], np.int32)
        thickness = max(1, round(self.units(width)))
        cv2.polylines(mask, [arr], False, 255, thickness, cv2.LINE_AA, _SHIFT)
        return mask

    def raise_(self, mask: np.ndarray, level: float, edge: float) -> None:
        """Raise the masked area to `level` with a rounded edge `edge` units wide."""
        np.maximum(self.height, dome(mask, self.units(edge)) * level, out=self.height)

    def add(self, mask: np.ndarray, delta: float, soften: float = 0.0) -> None:
        """Add `delta` (negative: engrave) over the mask, optionally softened."""
        m: np.ndarray = mask.astype(np.float32) / 255.0
        if soften > 0:
            m = cv2.GaussianBlur(m, (0, 0), max(0.3, self.units(soften)))
        self.height += delta * m


def dome(mask: np.ndarray, edge_px: float) -> np.ndarray:
    """A plateau over the mask whose rim rounds off over `edge_px` pixels."""
    binary = (mask > 127).astype(np.uint8)
    dist = cv2.distanceTransform(binary, cv2.DIST_L2, 3)
    t = np.clip(dist / max(edge_px, 0.5), 0.0, 1.0)
    return t * (2.0 - t)


# ---------------------------------------------------------------- legends and borders


def legend(canvas: Canvas, text: str, die: Die, gap_deg: float = 60.0) -> None:
    """Raise a legend ring reading clockwise from lower left, letters' feet toward the centre."""
    r_in, r_out = 0.73, 0.91
    size = canvas.size
    span = math.radians(360.0 - gap_deg)
    strip_w = max(8, round(span * canvas.units(0.5 * (r_in + r_out))))
    strip_h = max(4, round(canvas.units(r_out - r_in)))
    font = cv2.FONT_HERSHEY_TRIPLEX
    chars = list(text)
    _, th = cv2.getTextSize("M", font, 1.0, 2)[0]
    widths = [cv2.getTextSize(ch, font, 1.0, 2)[0][0] for ch in chars]
    # letters as tall as ~85 % of the ring, smaller only if the text would not fit the arc
    scale = min(0.85 * strip_h / th, 0.97 * strip_w / sum(widths)) * die.jitter["legend_size"]
    thick = max(1, round(scale * 2.6))
    widths = [cv2.getTextSize(ch, font, scale, thick)[0][0] for ch in chars]
    # engravers spread the letters along the whole arc rather than bunching them
    spacing = min((strip_w - sum(widths)) / max(1, len(chars) - 1), 0.9 * max(widths))
    total = sum(widths) + spacing * (len(chars) - 1)
    strip = np.zeros((strip_h, strip_w), np.uint8)
    x = (strip_w - total) / 2
    baseline = min(strip_h - 1, round((strip_h + scale * th) / 2))
    for char, w in zip(chars, widths, strict=True):
        if char != " ":
            cv2.putText(strip, char, (round(x), baseline), font, scale, 255, thick, cv2.LINE_AA)
        x += w + spacing
    # polar remap: canvas (x, y) → strip (arc length, depth below the outer radius)
    c = (np.arange(size, dtype=np.float32) + 0.5) / canvas.scale - canvas.extent
    gx, gy = np.meshgrid(c, c)
    gx, gy = gx - die.jitter["dx"], gy - die.jitter["dy"]
    r = np.hypot(gx, gy)
    start = math.radians(90.0 + gap_deg / 2.0 + die.jitter["legend_phase"] + die.jitter["rot"])
    theta = np.mod(np.arctan2(gy, gx) - start, 2 * math.pi)
    map_x = (theta / span * strip_w).astype(np.float32)
    map_y = ((r_out - r) / (r_out - r_in) * strip_h).astype(np.float32)
    ring = cv2.remap(strip, map_x, map_y, cv2.INTER_LINEAR, borderValue=0)
    canvas.raise_(ring, 0.6, 0.006)


def beaded_border(canvas: Canvas, die: Die) -> None:
    """A ring of raised pellets just inside the die's edge."""
    mask = canvas.mask()
    count = int(die.jitter["beads"])
    for k in range(count):
        a = 2 * math.pi * k / count
        canvas.ellipse(mask, (0.955 * math.cos(a), 0.955 * math.sin(a)), (0.017, 0.017))
    canvas.raise_(mask, 0.45, 0.012)


# ---------------------------------------------------------------- obverse: a portrait


def portrait(canvas: Canvas, ruler: Ruler, die: Die) -> None:
    """A laureate/radiate/diademed bust in profile facing right."""
    p = ruler.portrait
    h, nose, jaw = p["head"], p["nose"], p["jaw"]
    cx, cy = -0.04, -0.16
    bust = canvas.mask()
    canvas.ellipse(bust, (cx - 0.04, cy + 1.5 * h + 0.26), (p["bust"], 0.30))
    clip = canvas.mask()
    canvas.poly(clip, [(-1, -1), (1, -1), (1, 0.70), (-1, 0.70)])
    bust = cv2.bitwise_and(bust, clip)
    canvas.raise_(bust, 0.5, 0.08)
    folds = canvas.mask()
    for k in range(4):
        x0 = cx - 0.22 + 0.12 * k
        canvas.line(
            folds, [(x0, cy + 1.6 * h), (x0 + 0.05, cy + 2.1 * h), (x0 + 0.02, 0.68)], 0.012
        )
    canvas.add(folds, -0.12, 0.006)
    neck = canvas.mask()
    nw = p["neck"]
    canvas.poly(
        neck,
        [
            (cx - nw, cy + 0.5 * h),
            (cx + 0.6 * h, cy + 0.7 * h),
            (cx + 0.75 * h, cy + 1.55 * h),
            (cx - 1.4 * nw, cy + 1.6 * h),
        ],
    )
    canvas.raise_(neck, 0.68, 0.07)
    head = canvas.mask()
    canvas.ellipse(head, (cx - 0.05 * h, cy), (1.05 * h, h))
    brow = p["brow"]
    face = [
        (cx + 0.2 * h, cy - 0.95 * h),
        (cx + 0.8 * h, cy - 0.55 * h),
        (cx + 0.98 * h, cy - 0.15 * h + brow),
        (cx + 0.96 * h, cy - 0.05 * h),
        (cx + 1.0 * h + nose, cy + 0.3 * h),
        (cx + 0.98 * h, cy + 0.4 * h),
        (cx + 1.04 * h, cy + 0.5 * h),
        (cx + 0.97 * h, cy + 0.58 * h),
        (cx + 1.02 * h, cy + 0.66 * h),
        (cx + 0.98 * h, cy + 0.85 * h * jaw),
        (cx + 0.75 * h, cy + 1.0 * h * jaw),
        (cx + 0.1 * h, cy + 0.95 * h * jaw),
        (cx, cy),
    ]
    canvas.poly(head, face)
    canvas.raise_(head, 0.82, 0.09)
    # the cheek bulges: the highest point of the coin, where wear shows first
    cheek = canvas.mask()
    canvas.ellipse(cheek, (cx + 0.35 * h, cy + 0.2 * h), (0.45 * h, 0.5 * h))
    canvas.add(cheek, 0.18, 0.12 * h)
    eye = canvas.mask()
    canvas.ellipse(eye, (cx + 0.7 * h, cy - 0.02 * h), (0.1 * h, 0.05 * h), -10)
    canvas.add(eye, -0.3, 0.008)
    ear = canvas.mask()
    canvas.ellipse(ear, (cx + 0.02 * h, cy + 0.12 * h), (0.12 * h, 0.18 * h))
    canvas.add(ear, 0.2, 0.01)
    lines = canvas.mask()  # brow ridge and mouth: small grooves that catch raking light
    canvas.line(lines, [(cx + 0.55 * h, cy - 0.2 * h), (cx + 0.92 * h, cy - 0.14 * h)], 0.012)
    canvas.line(lines, [(cx + 0.84 * h, cy + 0.58 * h), (cx + 0.99 * h, cy + 0.57 * h)], 0.01)
    canvas.add(lines, -0.12, 0.004)
    _hair(canvas, ruler, die, cx, cy, h)


def _hair(canvas: Canvas, ruler: Ruler, die: Die, cx: float, cy: float, h: float) -> None:
    rng = stable_rng("hair", ruler.index, ruler.name)
    die_rng = stable_rng("hair-die", die.jitter["seed"])
    curls = canvas.mask()
    for _ in range(70):
        a = rng.uniform(math.radians(130), math.radians(330))
        r = h * math.sqrt(rng.uniform(0.2, 0.85))
        x = cx + r * math.cos(a) + die_rng.normal(0, 0.004)
        y = cy + r * math.sin(a) + die_rng.normal(0, 0.004)
        canvas.ellipse(curls, (x, y), (0.035, 0.025), float(rng.uniform(0, 180)))
    canvas.add(curls, 0.22, 0.006)
    if ruler.portrait["beard"] > 0.5:
        beard = canvas.mask()
        for _ in range(22):
            x = cx + h * rng.uniform(0.15, 0.85)
            y = cy + h * rng.uniform(0.55, 0.95)
            canvas.ellipse(beard, (x, y), (0.02, 0.015))
        canvas.add(beard, 0.18, 0.005)
    crown = canvas.mask()
    arc = [math.radians(a) for a in np.linspace(160, 305, 12)]
    if ruler.crown == "laurel":
        for k, a in enumerate(arc):
            x, y = cx + 0.78 * h * math.cos(a), cy + 0.78 * h * math.sin(a)
            tilt = math.degrees(a) + (60 if k % 2 else 120)
            canvas.ellipse(crown, (x, y), (0.06, 0.024), tilt)
        canvas.line(crown, [(cx - 0.9 * h, cy + 0.25 * h), (cx - 1.3 * h, cy + 0.75 * h)], 0.02)
        canvas.line(crown, [(cx - 0.85 * h, cy + 0.3 * h), (cx - 1.1 * h, cy + 0.9 * h)], 0.02)
        canvas.add(crown, 0.35, 0.006)
    elif ruler.crown == "radiate":
        for a in arc:
            tip = (cx + 1.45 * h * math.cos(a), cy + 1.45 * h * math.sin(a))
            left = (cx + 0.9 * h * math.cos(a - 0.09), cy + 0.9 * h * math.sin(a - 0.09))
            right = (cx + 0.9 * h * math.cos(a + 0.09), cy + 0.9 * h * math.sin(a + 0.09))
            canvas.poly(crown, [left, tip, right])
        canvas.raise_(crown, 0.5, 0.02)
    else:
        pts = [(cx + 0.8 * h * math.cos(a), cy + 0.8 * h * math.sin(a)) for a in arc]
        canvas.line(crown, pts, 0.045)
        for a in arc[::2]:  # pearls on the band
            pearl = (cx + 0.8 * h * math.cos(a), cy + 0.8 * h * math.sin(a))
            canvas.ellipse(crown, pearl, (0.03, 0.03))
        canvas.line(crown, [(cx - 0.85 * h, cy + 0.2 * h), (cx - 1.25 * h, cy + 0.8 * h)], 0.025)
        canvas.add(crown, 0.3, 0.006)


# ---------------------------------------------------------------- reverse: figures and symbols


def reverse_figure(canvas: Canvas, ctype: CoinType) -> None:
    """The type's central device: a standing deity, an eagle, an altar or standards."""
    p = ctype.params
    if p["exergue"] > 0.5:
        line = canvas.mask()
        canvas.line(line, [(-0.6, 0.52), (0.6, 0.52)], 0.02)
        canvas.raise_(line, 0.4, 0.01)
    if ctype.figure == "standing":
        _standing(canvas, p)
    elif ctype.figure == "eagle":
        _eagle(canvas, p)
    elif ctype.figure == "altar":
        _altar(canvas, p)
    else:
        _standards(canvas, p)


def _standing(canvas: Canvas, p: dict[str, float]) -> None:
    s = p["height"]
    body = canvas.mask()
    canvas.poly(
        body, [(-0.10 * s, -0.36 * s), (0.10 * s, -0.36 * s), (0.17 * s, 0.48), (-0.18 * s, 0.48)]
    )
    canvas.raise_(body, 0.75, 0.06)
    head = canvas.mask()
    canvas.ellipse(head, (0.01, -0.45 * s), (0.065 * s, 0.075 * s))
    canvas.raise_(head, 0.85, 0.04)
    folds = canvas.mask()
    for k in range(-2, 3):
        canvas.line(folds, [(0.03 * k * s, -0.2 * s), (0.05 * k * s, 0.46)], 0.012)
    canvas.add(folds, -0.15, 0.005)
    arms = canvas.mask()
    canvas.line(arms, [(0.09 * s, -0.3 * s), (0.24 * s, -0.12 * s), (0.36 * s, -0.16 * s)], 0.05)
    canvas.line(arms, [(-0.09 * s, -0.3 * s), (-0.2 * s, -0.2 * s), (-0.26 * s, -0.38 * s)], 0.045)
    canvas.raise_(arms, 0.6, 0.02)
    items = canvas.mask()
    canvas.line(items, [(-0.27 * s, -0.68 * s), (-0.27 * s, 0.5)], 0.022)  # spear or sceptre
    right = int(p["item_right"])
    if right == 0:  # patera
        canvas.ellipse(items, (0.41 * s, -0.17 * s), (0.06, 0.02))
    elif right == 1:  # globe
        canvas.ellipse(items, (0.42 * s, -0.2 * s), (0.05, 0.05))
    else:  # branch
        canvas.line(items, [(0.36 * s, -0.16 * s), (0.46 * s, -0.3 * s)], 0.015)
        for k in range(4):
            y = -0.2 * s - 0.03 * k
            canvas.ellipse(items, (0.39 * s + 0.025 * k, y), (0.025, 0.01), 40)
    if int(p["item_left"]) == 2:  # shield at the feet
        canvas.ellipse(items, (-0.3 * s, 0.35), (0.09, 0.12))
    canvas.raise_(items, 0.55, 0.015)


def _eagle(canvas: Canvas, p: dict[str, float]) -> None:
    w = p["wings"]
    body = canvas.mask()
    canvas.ellipse(body, (0.0, 0.0), (0.11, 0.25))
    canvas.poly(body, [(-0.1, 0.2), (0.1, 0.2), (0.16, 0.42), (-0.16, 0.42)])  # tail
    canvas.raise_(body, 0.8, 0.06)
    wings = canvas.mask()
    for sgn in (-1, 1):
        canvas.poly(
            wings,
            [
                (0.05 * sgn, -0.12),
                (0.5 * w * sgn, -0.42),
                (0.58 * w * sgn, -0.2),
                (0.45 * w * sgn, 0.05),
                (0.08 * sgn, 0.12),
            ],
        )
    canvas.raise_(wings, 0.6, 0.05)
    feathers = canvas.mask()
    for sgn in (-1, 1):
        for k in range(5):
            t = 0.15 + 0.17 * k
            canvas.line(
                feathers,
                [
                    (0.1 * sgn + t * 0.4 * w * sgn, -0.15 - t * 0.2),
                    (0.1 * sgn + t * 0.45 * w * sgn, 0.05 - t * 0.05),
                ],
                0.012,
            )
    canvas.add(feathers, -0.15, 0.005)
    head = canvas.mask()
    canvas.ellipse(head, (0.06, -0.3), (0.07, 0.06))
    canvas.poly(head, [(0.11, -0.32), (0.2, -0.29), (0.11, -0.26)])
    canvas.raise_(head, 0.9, 0.03)
    globe = canvas.mask()
    canvas.ellipse(globe, (0.0, 0.5), (0.1, 0.07))
    canvas.raise_(globe, 0.5, 0.04)


def _altar(canvas: Canvas, p: dict[str, float]) -> None:
    s = p["height"]
    altar = canvas.mask()
    canvas.poly(altar, [(-0.2 * s, -0.05), (0.2 * s, -0.05), (0.17 * s, 0.45), (-0.17 * s, 0.45)])
    canvas.poly(
        altar, [(-0.26 * s, -0.12), (0.26 * s, -0.12), (0.26 * s, -0.03), (-0.26 * s, -0.03)]
    )
    canvas.poly(altar, [(-0.24 * s, 0.42), (0.24 * s, 0.42), (0.24 * s, 0.5), (-0.24 * s, 0.5)])
    canvas.raise_(altar, 0.7, 0.03)
    garland = canvas.mask()
    canvas.line(garland, [(-0.17 * s, 0.08), (0.0, 0.2), (0.17 * s, 0.08)], 0.025)
    canvas.add(garland, 0.12, 0.006)
    flames = canvas.mask()
    for k, x in enumerate((-0.12, 0.0, 0.12)):
        top = -0.42 - 0.06 * (k == 1)
        canvas.poly(flames, [(x * s - 0.06, -0.13), (x * s + 0.02, top), (x * s + 0.06, -0.13)])
    canvas.raise_(flames, 0.55, 0.02)
    stars = canvas.mask()
    for sgn in (-1, 1):
        for a in range(4):
            ang = math.pi * a / 4
            c = (0.45 * sgn, -0.3)
            canvas.line(
                stars,
                [
                    (c[0] - 0.06 * math.cos(ang), c[1] - 0.06 * math.sin(ang)),
                    (c[0] + 0.06 * math.cos(ang), c[1] + 0.06 * math.sin(ang)),
                ],
                0.02,
            )
    canvas.raise_(stars, 0.45, 0.01)


def _standards(canvas: Canvas, p: dict[str, float]) -> None:
    poles = canvas.mask()
    count = 2 + int(p["item_left"] > 0)
    xs = np.linspace(-0.3, 0.3, count)
    for x in xs:
        canvas.line(poles, [(float(x), -0.6), (float(x), 0.48)], 0.025)
        for k in range(3):
            canvas.ellipse(poles, (float(x), -0.3 + 0.2 * k), (0.06, 0.045))
        canvas.line(poles, [(float(x) - 0.08, -0.45), (float(x) + 0.08, -0.45)], 0.02)
        canvas.poly(poles, [(float(x) - 0.05, -0.6), (float(x), -0.72), (float(x) + 0.05, -0.6)])
    canvas.raise_(poles, 0.7, 0.02)
