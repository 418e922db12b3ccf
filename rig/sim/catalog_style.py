"""Auction-catalog style reference images of simulated coins.

Catalog photographs differ from rig captures in every way that a matcher must learn to ignore:
soft light from the upper left (a softbox, not a raking LED), the portrait or figure turned
upright, a plain background, a warmer white balance, the coin filling the frame at the
photographer's own resolution, little noise, and JPEG compression.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from rig.sim.coins import CoinCatalog, Side, stable_rng
from rig.sim.relief import coin_surface
from rig.sim.shading import (
    Optics,
    Sensor,
    coverage_view,
    expose,
    grid_size_for,
    radiance_view,
)
from rig.sim.world import LightState

_BACKGROUNDS = ((0.0, 0.0, 0.0), (0.9, 0.9, 0.9), (0.35, 0.35, 0.37))
_RESOLUTIONS = (360, 420, 480, 600)


def softbox(azimuth_deg: float = 135.0, elevation_deg: float = 45.0) -> dict[str, LightState]:
    """A soft key light from the upper left (a fan of sources) with some fill from the room."""
    lights = {"fill": LightState(0.35, None, None, True)}
    for k, (da, de) in enumerate(((0, 0), (-18, -8), (18, -8), (-10, 10), (10, 10))):
        lights[f"key{k}"] = LightState(0.2, azimuth_deg + da, elevation_deg + de, False)
    return lights


@dataclass(frozen=True)
class CatalogPhoto:
    """An auction-style photograph with the ground truth of where the coin lies in it."""

    rgb: np.ndarray  # what a reader of the JPEG gets, compression artefacts included
    jpeg: bytes
    coverage: np.ndarray  # float32 (H, W), 1 on the coin, 0 on the backdrop


def render_catalog_image(
    catalog: CoinCatalog, coin_id: str, side: Side, *, quality: int | None = None
) -> tuple[np.ndarray, bytes]:
    """An auction-style photograph: (decoded RGB uint8 array, its JPEG bytes)."""
    photo = render_catalog_photo(catalog, coin_id, side, quality=quality)
    return photo.rgb, photo.jpeg


def render_catalog_photo(
    catalog: CoinCatalog, coin_id: str, side: Side, *, quality: int | None = None
) -> CatalogPhoto:
    """An auction-style photograph of one coin side, with its coverage mask."""
    coin = catalog.coin(coin_id)
    rng = stable_rng(catalog.seed, "catalog-photo", coin_id, side)
    size = int(_RESOLUTIONS[int(rng.integers(0, len(_RESOLUTIONS)))])
    background = _BACKGROUNDS[int(rng.integers(0, len(_BACKGROUNDS)))]
    fill = float(rng.uniform(0.80, 0.92))  # the coin spans this fraction of the frame
    optics = Optics(
        field_of_view_mm=20.0 / fill,
        coin_diameter_mm=20.0,
        background=(0.0, 0.0, 0.0),  # the backdrop is composited below, lit flat
        light_colour=(1.0, 0.93, 0.8),  # warm studio light, photographed without correction
        shadows=False,
        vignetting=0.05,
        defocus=0.0005,
    )
    surface = coin_surface(catalog, coin_id, side, grid_size_for(size, optics))
    # photographers turn the design upright, whatever the die axis
    upright = coin.design_rotation_deg[side] + float(rng.normal(0, 3))
    radiance = radiance_view(surface, softbox(), upright, size, size, optics)
    # a plain backdrop is lit flat and evenly, not by the coin's lights
    alpha = coverage_view(surface, upright, size, size, optics)
    sensor = Sensor(
        exposure_us=float(rng.uniform(26000, 34000)), read_noise_e=1.0, full_well_e=30000
    )
    image = expose(radiance * 2.2, sensor, np.random.default_rng(rng.integers(0, 2**31)))
    backdrop = np.array(background, np.float32) ** (1 / 2.2) * 255
    image = (image * alpha[..., None] + backdrop * (1 - alpha[..., None]) + 0.5).astype(np.uint8)
    q = quality if quality is not None else int(rng.integers(70, 92))
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q]
    )
    back = cv2.imdecode(encoded, cv2.IMREAD_COLOR) if ok else None
    if back is None:  # pragma: no cover - OpenCV always encodes a valid uint8 image
        raise RuntimeError("JPEG encoding failed")
    decoded = cv2.cvtColor(back, cv2.COLOR_BGR2RGB)
    return CatalogPhoto(rgb=decoded, jpeg=encoded.tobytes(), coverage=alpha)
