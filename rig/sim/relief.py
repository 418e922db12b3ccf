"""Per-coin surfaces: height field, albedo, gloss, normals and the identity mask, cached.

A coin's surface is assembled from its die's design relief (designs.py), struck off-centre and
rotated onto an irregular flan, then worn (high relief flattened and smoothed), damaged
(scratches, nicks, edge bites), pitted (porosity) and toned (patina, dirt in the recesses).

Coordinates: a square grid of `size` pixels spanning [-EXTENT, EXTENT]² in units of the nominal
flan radius, x right and y down, the flan centred. The reverse is seen after turning the coin
over about its vertical axis, so its outline is the obverse's mirrored left-to-right.

Surfaces are cached (least recently used, bounded in bytes): generating one costs tens of
milliseconds, shading it under a new light costs a few.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

from rig.sim.coins import Coin, CoinCatalog, Side, stable_rng
from rig.sim.designs import Canvas, beaded_border, dome, legend, portrait, reverse_figure

EXTENT = 1.25  # half-width of the surface grid, in flan radii (room for a wide, bulging flan)
RELIEF = 0.035  # highest design relief in flan radii (0.35 mm on a 20 mm coin)
FLAN_DOME = 0.012  # flans are slightly convex
BEVEL = 0.05  # width of the rounded rim, flan radii
FLAN_LIMIT = 1.2  # no flan reaches further from its centre (the renderer crops to this)
_CACHE_BYTES = 384 * 2**20


@dataclass(frozen=True)
class Surface:
    """Everything the shader needs about one side of one coin, on the coin's own grid."""

    height: np.ndarray  # float32 (S, S), flan radii
    normals: tuple[np.ndarray, np.ndarray, np.ndarray]  # float32 unit normal x, y, z
    albedo: np.ndarray  # float32 (S, S, 3), linear RGB diffuse colour
    specular: np.ndarray  # float32 (S, S, 3), metal reflectance (coloured, as metals are)
    occlusion: np.ndarray  # float32 (S, S), 1 open field … 0 deep recess
    alpha: np.ndarray  # float32 (S, S), flan coverage 0..1 (antialiased)
    identity: np.ndarray  # float32 (S, S), where this coin's identifying marks lie, 0..1

    @property
    def size(self) -> int:
        """Grid side in pixels."""
        return int(self.height.shape[0])

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays."""
        arrays = [self.height, *self.normals, self.albedo, self.specular, self.occlusion]
        return sum(a.nbytes for a in (*arrays, self.alpha, self.identity))


class _LruCache:
    """A thread-safe least-recently-used cache bounded by the bytes of its values."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[object, ...], Surface | np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...]) -> Surface | np.ndarray | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[object, ...], value: Surface | np.ndarray) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self._bytes += value.nbytes
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


_cache = _LruCache(_CACHE_BYTES)


def clear_cache() -> None:
    """Forget every cached die and surface (benchmarks time generation with it)."""
    _cache.clear()


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y) of a surface grid, in flan radii."""
    c = (np.arange(size, dtype=np.float32) + 0.5) * (2 * EXTENT / size) - EXTENT
    x, y = np.meshgrid(c, c)
    return x, y


def die_relief(
    catalog: CoinCatalog, side: Side, design: int, die_index: int, size: int
) -> np.ndarray:
    """The design relief of one die (0 field … ~1 highest point), centred, die radius = 1."""
    key = ("die", catalog.key, side, design, die_index, size)
    cached = _cache.get(key)
    if isinstance(cached, np.ndarray):
        return cached
    die = catalog.die(side, design, die_index)
    canvas = Canvas(size, EXTENT, die)
    if side == "obverse":
        ruler = catalog.rulers[design]
        portrait(canvas, ruler, die)
        legend(canvas, ruler.legend, die, gap_deg=70.0)
    else:
        ctype = catalog.types[design]
        mirrored = Canvas(size, EXTENT, die, mirror=ctype.params["facing"] < 0)
        reverse_figure(mirrored, ctype)
        canvas.height = mirrored.height
        legend(canvas, ctype.legend, die, gap_deg=70.0 if ctype.params["exergue"] > 0.5 else 20.0)
    beaded_border(canvas, die)
    relief: np.ndarray = np.clip(canvas.height, -0.3, 1.2)
    # one pixel of blur: the die was cut by hand, and it keeps the relief from aliasing
    relief = cv2.GaussianBlur(relief, (0, 0), 0.7)
    _cache.put(key, relief)
    return relief


def flan_radius_map(coin: Coin, side: Side, theta: np.ndarray) -> np.ndarray:
    """The flan outline r(θ) in flan radii, with edge bites; mirrored on the reverse."""
    if side == "reverse":
        theta = math.pi - theta
    r = np.full_like(theta, coin.flan_radius)
    for k, (amp, phase) in enumerate(coin.flan_harmonics, start=2):
        r += coin.flan_radius * amp * np.cos(k * theta + phase)
    for bite in coin.edge_bites:
        centre = math.radians(bite.points[0][0])
        width = math.radians(bite.size)
        d = np.angle(np.exp(1j * (theta - centre)))  # wrapped angular distance
        r -= bite.depth * np.exp(-0.5 * (d / (0.4 * width)) ** 2)
    return r


def coin_surface(catalog: CoinCatalog, coin_id: str, side: Side, size: int) -> Surface:
    """The cached surface of one side of one coin on a `size`×`size` grid."""
    key = ("surface", catalog.key, coin_id, side, size)
    cached = _cache.get(key)
    if isinstance(cached, Surface):
        return cached
    surface = _build_surface(catalog, catalog.coin(coin_id), side, size)
    _cache.put(key, surface)
    return surface


def _build_surface(catalog: CoinCatalog, coin: Coin, side: Side, size: int) -> Surface:
    px = size / (2 * EXTENT)  # pixels per flan radius
    # reverse dies are keyed by the coin's own type, also where it shares another ruler's
    # design (CoinType.design): each mint cut its own dies of it
    design_index = coin.ruler if side == "obverse" else coin.type_index
    relief = die_relief(catalog, side, design_index, coin.dies[side], size)
    # strike: the die lands off-centre and turned on the flan
    dx, dy = coin.strike_offset[side]
    rot = cv2.getRotationMatrix2D(
        (size / 2 - 0.5, size / 2 - 0.5), -coin.design_rotation_deg[side], 1.0
    )
    rot[0, 2] += dx * px
    rot[1, 2] += dy * px
    design = cv2.warpAffine(relief, rot, (size, size), flags=cv2.INTER_LINEAR)
    x, y = grid(size)
    rho = np.hypot(x, y)
    theta = np.arctan2(y, x)
    weak_dir, weak = coin.weak_strike[side]
    if weak > 0:  # one side of the die struck softly: relief there never filled the die
        wd = math.radians(weak_dir)
        ramp = np.clip(0.5 + 0.6 * (x * math.cos(wd) - y * math.sin(wd)), 0, 1)
        design *= (1 - weak * ramp).astype(np.float32)
    # flan: irregular outline, antialiased, rounded rim, slightly domed field
    outline = np.minimum(flan_radius_map(coin, side, theta), FLAN_LIMIT - 0.02)
    alpha = np.clip((outline - rho) * px + 0.5, 0, 1).astype(np.float32)
    inside = (alpha > 0.5).astype(np.uint8) * 255
    bevel_px = px * BEVEL * (1 + coin.wear)
    rim = dome(inside, bevel_px).astype(np.float32)
    base = FLAN_DOME * (1 - np.minimum(rho, 1.2) ** 2) + 0.02 * rim - 0.02
    # wear flattens the high relief first, then softens everything
    cap = 1.0 - 0.7 * coin.wear
    worn: np.ndarray = np.where(design > cap, cap + 0.25 * (design - cap), design).astype(
        np.float32
    )
    worn = cv2.GaussianBlur(worn, (0, 0), max(0.3, px * 0.012 * coin.wear))
    height = (base + RELIEF * worn * rim).astype(np.float32)
    polish = np.clip((design - cap) / max(1e-3, 1 - cap), 0, 1) * rim  # rubbed-bright high points
    marks, ident = _damage(coin, side, size, px)
    height -= marks
    rng = stable_rng("texture", coin.texture_seed, side)
    height += _pits(coin, rng, size, px)
    height += _noise(rng, size, 48, RELIEF * 0.025)
    height *= alpha > 0
    ident += _outline_identity(coin, side, rho, outline, dx, dy, px)
    occlusion = _occlusion(height, px)
    albedo, specular = _colours(coin, rng, size, polish, occlusion, marks)
    # premultiplied by coverage: off the flan the grid carries no light of its own
    albedo *= alpha[..., None]
    specular *= alpha[..., None]
    return Surface(
        height=height,
        normals=_normals(height, px),
        albedo=albedo,
        specular=specular,
        occlusion=occlusion,
        alpha=alpha,
        identity=np.clip(ident, 0, 1).astype(np.float32),
    )


def _damage(coin: Coin, side: Side, size: int, px: float) -> tuple[np.ndarray, np.ndarray]:
    """Depth of scratches and nicks (to subtract) and their identity mask."""
    depth = np.zeros((size, size), np.float32)
    ident = np.zeros((size, size), np.float32)
    for mark in coin.marks[side]:
        mask = np.zeros((size, size), np.uint8)
        pts = np.array(
            [[(p[0] + EXTENT) * px * 16, (p[1] + EXTENT) * px * 16] for p in mark.points]
        )
        if mark.kind == "scratch":
            width = max(1, round(mark.size * px))
            cv2.polylines(mask, [pts.astype(np.int32)], False, 255, width, cv2.LINE_AA, 4)
            profile = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), 0.5)
            depth += mark.depth * RELIEF * 0.35 * profile
        else:
            centre = (int(pts[0][0]), int(pts[0][1]))
            radius = max(16, round(mark.size * px * 16))
            cv2.circle(mask, centre, radius, 255, -1, cv2.LINE_AA, 4)
            depth += mark.depth * RELIEF * 0.45 * dome(mask, max(1.0, mark.size * px * 0.8))
        grown = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=max(1, round(px * 0.01)))
        ident = np.maximum(ident, grown.astype(np.float32) / 255)
    return depth, ident


def _outline_identity(
    coin: Coin, side: Side, rho: np.ndarray, outline: np.ndarray, dx: float, dy: float, px: float
) -> np.ndarray:
    """Where the flan departs from a circle, where edge bites are, and the off-strike crescent."""
    band = 0.03 + 1.5 / px
    departs = (np.abs(outline - coin.flan_radius) > 0.015) & (np.abs(rho - outline) < band)
    on_flan = rho < outline
    # the part of the flan the die missed, and the part of the die that missed the flan
    x, y = grid(rho.shape[0])
    die_r = np.hypot(x - dx, y - dy)
    off = math.hypot(dx, dy) > 0.02
    crescent = on_flan & (die_r > 0.93) & (rho > outline - 0.12) if off else np.zeros_like(on_flan)
    return np.maximum(departs.astype(np.float32), 0.6 * crescent.astype(np.float32))


def _pits(coin: Coin, rng: np.random.Generator, size: int, px: float) -> np.ndarray:
    """Porosity: small corrosion pits scattered over the flan."""
    count = int(coin.porosity * 500)
    if count == 0:
        return np.zeros((size, size), np.float32)
    mask = np.zeros((size, size), np.uint8)
    pts = rng.uniform(-1.0, 1.0, (count, 2))
    radii = rng.uniform(0.004, 0.012, count)
    for (x, y), r in zip(pts, radii, strict=True):
        centre = (round((x + EXTENT) * px * 16), round((y + EXTENT) * px * 16))
        cv2.circle(mask, centre, max(8, round(r * px * 16)), 255, -1, cv2.LINE_AA, 4)
    blurred = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), 0.6)
    return -RELIEF * 0.08 * blurred


def _noise(rng: np.random.Generator, size: int, cells: int, amplitude: float) -> np.ndarray:
    """Smooth noise drawn on a fixed coarse grid and resized, so it is resolution independent."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return amplitude * cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _normals(height: np.ndarray, px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # slopes in flan radii per flan radius; Sobel's 3x3 kernel sums to 8x the central difference
    gx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3) * (px / 8)
    gy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3) * (px / 8)
    inv = 1.0 / np.sqrt(gx * gx + gy * gy + 1.0)
    return (-gx * inv).astype(np.float32), (-gy * inv).astype(np.float32), inv.astype(np.float32)


def _occlusion(height: np.ndarray, px: float) -> np.ndarray:
    """How open each point is: recesses below their surroundings collect less light."""
    around = cv2.GaussianBlur(height, (0, 0), max(1.0, px * 0.04))
    return np.clip(1.0 - (around - height) / (RELIEF * 0.35), 0.35, 1.0).astype(np.float32)


def _colours(
    coin: Coin,
    rng: np.random.Generator,
    size: int,
    polish: np.ndarray,
    occlusion: np.ndarray,
    marks: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Albedo and specular colour: metal toned by patina, dirt in recesses, bright scratches."""
    metal = np.array(coin.patina[0], np.float32)
    tone = np.array(coin.patina[1], np.float32)
    cloud = _noise(rng, size, 6, 1.0) * 0.6 + _noise(rng, size, 20, 1.0) * 0.25
    mix = np.clip(coin.patina_strength * (0.8 + 0.6 * cloud), 0, 1)
    mix = np.clip(mix * (1 - 0.7 * polish) + 0.5 * (1 - occlusion), 0, 1)
    fresh = np.clip(marks / (RELIEF * 0.1), 0, 1)  # a scratch cuts through the patina
    mix = (mix * (1 - fresh)).astype(np.float32)
    colour = metal[None, None, :] * (1 - mix[..., None]) + tone[None, None, :] * mix[..., None]
    albedo = (0.35 * colour * occlusion[..., None]).astype(np.float32)
    specular = (colour * (1 - 0.75 * mix)[..., None]).astype(np.float32)
    return albedo, specular
