"""Shading and the sensor: a coin surface under the lightbox, seen through a tilted camera.

Geometry convention (shared by the twin, the lightbox config and `identity_mask`):
- image x to the right, y down; the camera looks straight down at the turntable when the tilt
  is 0, with `field_of_view_mm` across the image width;
- a light's azimuth 0° comes from the image's right (+x), 90° from the top of the image
  (north), counter-clockwise positive; elevation 0° is grazing, 90° straight down;
- a positive turntable angle turns the coin counter-clockwise in the image;
- the camera tilts about the image's x axis, towards the bottom of the image (a perspective warp).

The coin is shaded on its own grid with the lights turned by minus the coin's angle (the light
relative to the relief is what matters) and the shaded grid is then warped into the image once,
together with the camera's perspective. Materials: a Lambert term for the patina and two
Blinn-Phong lobes, tinted by the metal, for the bare metal; `diffuse` channels act as a soft
dome (ambient light plus a broad reflection of the dome in the metal).

Sensor: radiance → electrons (∝ exposure) → shot and read noise (Gaussian approximation of
Poisson) → full-well clipping → gain → gamma 1/2.2 (the camera's gamma setting) → 8 or 16 bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from rig.sim.coins import CoinCatalog, Side
from rig.sim.relief import EXTENT, FLAN_LIMIT, Surface, coin_surface
from rig.sim.world import LightState

E_PER_US = 0.5  # electrons per µs per unit radiance: 20 ms of a white diffuser fills 10 ke⁻
WORKING_DISTANCE_MM = 250.0
COIN_THICKNESS_MM = 2.0
LED_WHITE = (1.0, 0.98, 0.94)  # rig LEDs are close to neutral
SENSOR_RESPONSE = (0.92, 1.0, 0.88)  # raw colour response (no white balance applied)
MONO_WEIGHTS = (0.30, 0.59, 0.11)


@dataclass(frozen=True)
class Optics:
    """Where the coin lies in the picture and what the picture looks like around it."""

    field_of_view_mm: float = 40.0
    coin_diameter_mm: float = 20.0
    tilt_deg: float = 0.0
    background: tuple[float, float, float] = (0.05, 0.05, 0.055)  # dark matte turntable
    light_colour: tuple[float, float, float] = LED_WHITE
    shadows: bool = True
    vignetting: float = 0.25  # relative fall-off at the image corners
    defocus: float = 0.0012  # blur sigma as a fraction of the image width
    # where the turntable's rotation axis (and the coin centred on it) lies on the plane,
    # in mm from the optical axis (x right, y down): the coin turns about it
    axis_offset_mm: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class Sensor:
    """Exposure, gain and the sensor's noise and range."""

    exposure_us: float = 20000.0
    gain_db: float = 0.0
    read_noise_e: float = 3.0
    full_well_e: float = 10000.0
    bit_depth: int = 8
    color: bool = True
    response: tuple[float, float, float] = SENSOR_RESPONSE
    gamma: float = 1 / 2.2


def light_vector(azimuth_deg: float, elevation_deg: float) -> tuple[float, float, float]:
    """Unit vector towards a light, in image axes (x right, y down, z towards the camera)."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return (math.cos(el) * math.cos(az), -math.cos(el) * math.sin(az), math.sin(el))


def shade(surface: Surface, lights: Mapping[str, LightState], coin_angle_deg: float) -> np.ndarray:
    """Radiance (S, S, 3) of the coin grid, before the light's colour, for the lit channels."""
    nx, ny, nz = surface.normals
    diffuse_sum = np.zeros(nx.shape, np.float32)
    spec_sum = np.zeros(nx.shape, np.float32)
    for light in lights.values():
        if light.intensity <= 0:
            continue
        if light.diffuse or light.azimuth_deg is None or light.elevation_deg is None:
            # a dome: light from everywhere above, the metal mirrors a bright, broad sky
            diffuse_sum += light.intensity * (0.55 + 0.45 * nz)
            spec_sum += light.intensity * 0.35 * nz * nz
            continue
        lx, ly, lz = light_vector(light.azimuth_deg - coin_angle_deg, light.elevation_deg)
        ndl = np.maximum(nx * lx + ny * ly + nz * lz, 0.0)
        hx, hy, hz = lx, ly, lz + 1.0  # half vector with the view straight down
        norm = math.sqrt(hx * hx + hy * hy + hz * hz)
        ndh = np.maximum((nx * hx + ny * hy + nz * hz) * (1.0 / norm), 0.0)
        # a broad sheen (n·h)^8 and a sharp glint (n·h)^32: polished metal under an LED;
        # repeated squaring is several times faster than np.power
        ndh2 = ndh * ndh
        ndh8 = ndh2 * ndh2
        ndh8 *= ndh8
        ndh32 = ndh8 * ndh8
        ndh32 *= ndh32
        diffuse_sum += light.intensity * ndl
        spec_sum += light.intensity * (0.6 * ndh8 + 2.5 * ndh32) * (ndl > 0)
    radiance = surface.albedo * diffuse_sum[..., None]
    radiance += surface.specular * (spec_sum * surface.occlusion)[..., None]
    return radiance


def _tilt_homography(optics: Optics) -> np.ndarray:
    """Plane millimetres → image millimetres for a camera tilted about the image x axis."""
    t = math.radians(optics.tilt_deg)
    d = WORKING_DISTANCE_MM
    centre = np.array([0.0, d * math.sin(t), d * math.cos(t)])
    forward = -centre / d
    x_axis = np.array([1.0, 0.0, 0.0])
    y_axis = np.cross(x_axis, forward)
    src = np.array([[-10, -10], [10, -10], [10, 10], [-10, 10]], np.float32)
    dst = []
    for px, py in src:
        rel = np.array([px, py, 0.0]) - centre
        depth = rel @ forward
        dst.append([d * (rel @ x_axis) / depth, d * (rel @ y_axis) / depth])
    return cv2.getPerspectiveTransform(src, np.array(dst, np.float32))


def view_transform(
    width: int, height: int, grid_size: int, angle_deg: float, optics: Optics
) -> np.ndarray:
    """3×3 map from coin-grid pixels to image pixels (turntable rotation, axis, scale, tilt)."""
    mm_per_unit = optics.coin_diameter_mm / 2
    unit_per_px = 2 * EXTENT / grid_size
    a = math.radians(angle_deg)
    # grid px → coin mm (centred), turned counter-clockwise on screen (y down)
    to_mm = np.array(
        [[1, 0, -(grid_size / 2 - 0.5)], [0, 1, -(grid_size / 2 - 0.5)], [0, 0, 1]], np.float64
    )
    to_mm = np.diag([unit_per_px * mm_per_unit] * 2 + [1.0]) @ to_mm
    rotate = np.array([[math.cos(a), math.sin(a), 0], [-math.sin(a), math.cos(a), 0], [0, 0, 1]])
    # the coin lies centred on the turntable axis: turned about it, then moved there
    axis_x, axis_y = optics.axis_offset_mm
    rotate = np.array([[1, 0, axis_x], [0, 1, axis_y], [0, 0, 1]], np.float64) @ rotate
    ppmm = width / optics.field_of_view_mm
    to_px = np.array([[ppmm, 0, width / 2 - 0.5], [0, ppmm, height / 2 - 0.5], [0, 0, 1]])
    return to_px @ _tilt_homography(optics) @ rotate @ to_mm


def grid_size_for(width: int, optics: Optics) -> int:
    """Surface grid size that puts one grid pixel on about one image pixel."""
    coin_px = width * optics.coin_diameter_mm / optics.field_of_view_mm
    return max(32, math.ceil(coin_px * EXTENT / 2) * 2)


def _warp(image: np.ndarray, matrix: np.ndarray, width: int, height: int) -> np.ndarray:
    return cv2.warpPerspective(
        image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )


def radiance_view(
    surface: Surface | None,
    lights: Mapping[str, LightState],
    angle_deg: float,
    width: int,
    height: int,
    optics: Optics,
) -> np.ndarray:
    """Noise-free image radiance (H, W, 3): the coin (or the empty stage) under the lights."""
    light_rgb = np.array(optics.light_colour, np.float32)
    stage_rgb = np.array(optics.background, np.float32) * light_rgb
    vignette = _vignette(width, height, optics.vignetting)
    level = 0.0
    directional: list[tuple[float, float, float]] = []
    for light in lights.values():
        if light.intensity <= 0:
            continue
        if light.diffuse or light.azimuth_deg is None or light.elevation_deg is None:
            level += light.intensity
        else:
            lit = light.intensity * math.sin(math.radians(light.elevation_deg))
            level += lit
            directional.append((lit, light.azimuth_deg, light.elevation_deg))
    # the stage is one grey level map, coloured once at the end; the coin and its shadows are
    # only computed inside their bounding boxes (half the image or less)
    stage = np.full((height, width), level, np.float32)
    coin = None
    x0 = y0 = x1 = y1 = 0
    if surface is not None:
        matrix = view_transform(width, height, surface.size, angle_deg, optics)
        x0, y0, x1, y1 = _coin_box(matrix, surface.size, width, height)
    if surface is not None and x1 > x0 and y1 > y0:
        local = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64) @ matrix
        box = (x1 - x0, y1 - y0)
        coin = cv2.warpPerspective(shade(surface, lights, angle_deg) * light_rgb, local, box)
        alpha = cv2.warpPerspective(surface.alpha, local, box)
        if optics.shadows:
            _cast_shadows(stage, alpha, (x0, y0), directional, width / optics.field_of_view_mm)
        stage[y0:y1, x0:x1] *= 1.0 - alpha
    stage *= vignette
    image = stage[..., None] * stage_rgb
    if coin is not None:
        coin *= vignette[y0:y1, x0:x1, None]
        image[y0:y1, x0:x1] += coin
    sigma = optics.defocus * width
    if sigma > 0.25:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    return image


def _coin_box(
    matrix: np.ndarray, grid_size: int, width: int, height: int
) -> tuple[int, int, int, int]:
    """Image bounding box (x0, y0, x1, y1) of everything the flan can cover."""
    centre = grid_size / 2 - 0.5
    radius = FLAN_LIMIT / (2 * EXTENT) * grid_size + 1
    angles = np.linspace(0, 2 * math.pi, 24, endpoint=False)
    ring = np.stack([centre + radius * np.cos(angles), centre + radius * np.sin(angles)], axis=1)
    pts = cv2.perspectiveTransform(ring.reshape(-1, 1, 2), matrix).reshape(-1, 2)
    x0, y0 = np.floor(pts.min(axis=0)).astype(int) - 2
    x1, y1 = np.ceil(pts.max(axis=0)).astype(int) + 3
    return max(0, int(x0)), max(0, int(y0)), min(width, int(x1)), min(height, int(y1))


def _cast_shadows(
    stage: np.ndarray,
    alpha: np.ndarray,
    origin: tuple[int, int],
    directional: list[tuple[float, float, float]],
    ppmm: float,
) -> None:
    """Darken the stage where the coin's edge shadows it, away from each directional light."""
    height, width = stage.shape
    x0, y0 = origin
    h, w = alpha.shape
    for lit, azimuth_deg, elevation_deg in directional:
        reach = COIN_THICKNESS_MM / max(0.05, math.tan(math.radians(elevation_deg)))
        az = math.radians(azimuth_deg)
        dx, dy = -math.cos(az) * reach * ppmm, math.sin(az) * reach * ppmm
        sigma = max(0.5, 0.3 * reach * ppmm)  # penumbra grows with the distance to the edge
        mx, my = math.ceil(abs(dx) + 3 * sigma), math.ceil(abs(dy) + 3 * sigma)
        sx0, sy0 = max(0, x0 - mx), max(0, y0 - my)
        sx1, sy1 = min(width, x0 + w + mx), min(height, y0 + h + my)
        shift = np.array([[1, 0, dx + x0 - sx0], [0, 1, dy + y0 - sy0]], np.float32)
        shadow = cv2.warpAffine(alpha, shift, (sx1 - sx0, sy1 - sy0))
        blurred = cv2.GaussianBlur(shadow, (0, 0), sigma)
        stage[sy0:sy1, sx0:sx1] -= blurred * np.float32(0.85 * lit)


@lru_cache(maxsize=16)
def _vignette(width: int, height: int, strength: float) -> np.ndarray:
    x = (np.arange(width, dtype=np.float32) - width / 2 + 0.5) / (width / 2)
    y = (np.arange(height, dtype=np.float32) - height / 2 + 0.5) / (width / 2)
    r2 = x[None, :] ** 2 + y[:, None] ** 2
    corner = 1.0 + (height / width) ** 2
    return (1.0 - strength * r2 / corner).astype(np.float32)


def expose(radiance: np.ndarray, sensor: Sensor, rng: np.random.Generator | None) -> np.ndarray:
    """Turn radiance into pixel values: (H, W, 3) colour or (H, W) mono, uint8 or uint16."""
    response = np.array(sensor.response, np.float32) * np.float32(sensor.exposure_us * E_PER_US)
    if sensor.color:
        electrons = radiance * response
    else:
        electrons = radiance @ (np.array(MONO_WEIGHTS, np.float32) * response)
    if rng is not None:
        # shot noise (variance = signal) and read noise in one Gaussian draw
        # radiance is never negative, so neither are the electrons under the square root
        sigma = cv2.sqrt(electrons + np.float32(sensor.read_noise_e**2))
        sigma *= _standard_normal(rng, electrons.shape)
        electrons += sigma
    # the well saturates at full_well electrons, then gain scales into the converter's range
    gain = 10 ** (sensor.gain_db / 20) / sensor.full_well_e
    value = np.clip(electrons * np.float32(gain), 0.0, min(1.0, sensor.full_well_e * gain))
    value = cv2.pow(value, sensor.gamma)
    if sensor.bit_depth == 8:
        return cv2.convertScaleAbs(value, alpha=255.0)
    return (value * np.float32(65535) + np.float32(0.5)).astype(np.uint16)


_NOISE_TABLE_SIZE = 1 << 22


@lru_cache(maxsize=1)
def _noise_table() -> np.ndarray:
    return np.random.default_rng(20240611).standard_normal(_NOISE_TABLE_SIZE, dtype=np.float32)


def _standard_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """N(0, 1) samples: a window at a random offset of a fixed table, for speed.

    Drawing fresh Gaussians costs ~20 ns each, more than all the shading; a window into a 4 M
    sample table is exactly Gaussian per pixel, independent across pixels, and differs from
    frame to frame, which is all a sensor's noise needs to be here.
    """
    count = math.prod(shape)
    table = _noise_table()
    if count > table.size // 2:
        return rng.standard_normal(shape, dtype=np.float32)
    start = int(rng.integers(0, table.size - count))
    return table[start : start + count].reshape(shape)


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])


def render_view(
    catalog: CoinCatalog,
    coin_id: str | None,
    side: Side,
    angle_deg: float,
    lights: Mapping[str, LightState],
    *,
    size: int | tuple[int, int] = 512,
    color: bool = True,
    bit_depth: int = 8,
    tilt_deg: float = 0.0,
    seed_noise: int | None = 0,
    exposure_us: float = 20000.0,
    gain_db: float = 0.0,
    field_of_view_mm: float = 40.0,
    coin_diameter_mm: float = 20.0,
) -> np.ndarray:
    """Render a coin (None: the empty stage) as the rig's camera would see it, without a World.

    `size` is an int (square) or (width, height); `seed_noise` None renders without noise.
    """
    width, height = _size(size)
    optics = Optics(field_of_view_mm, coin_diameter_mm, tilt_deg)
    surface = None
    if coin_id is not None:
        surface = coin_surface(catalog, coin_id, side, grid_size_for(width, optics))
    radiance = radiance_view(surface, lights, angle_deg, width, height, optics)
    sensor = Sensor(exposure_us, gain_db, bit_depth=bit_depth, color=color)
    rng = None if seed_noise is None else np.random.default_rng(seed_noise)
    return expose(radiance, sensor, rng)


def coverage_view(
    surface: Surface, angle_deg: float, width: int, height: int, optics: Optics
) -> np.ndarray:
    """Where the coin covers the image, float32 (H, W) 0..1, aligned with radiance_view."""
    matrix = view_transform(width, height, surface.size, angle_deg, optics)
    alpha = _warp(surface.alpha, matrix, width, height)
    sigma = optics.defocus * width
    return cv2.GaussianBlur(alpha, (0, 0), sigma) if sigma > 0.25 else alpha


def identity_mask(
    catalog: CoinCatalog,
    coin_id: str,
    side: Side,
    angle_deg: float,
    size: int | tuple[int, int],
    *,
    tilt_deg: float = 0.0,
    field_of_view_mm: float = 40.0,
    coin_diameter_mm: float = 20.0,
) -> np.ndarray:
    """Where the coin's identifying marks lie, float32 (H, W) in 0..1, aligned with render_view.

    Marks: scratches, nicks, edge bites, flan irregularity, the off-centre strike's crescent.
    """
    width, height = _size(size)
    optics = Optics(field_of_view_mm, coin_diameter_mm, tilt_deg)
    surface = coin_surface(catalog, coin_id, side, grid_size_for(width, optics))
    matrix = view_transform(width, height, surface.size, angle_deg, optics)
    return _warp(surface.identity * surface.alpha, matrix, width, height)
