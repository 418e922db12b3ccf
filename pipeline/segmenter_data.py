"""Training crops for the coin segmenter: single twin photos with the coin's true coverage.

Each sample is one photo as a user might take or the rig might shoot it alone: a raking light
from any side at a low angle (the hard case, most of the samples), a dome, two lights, or an
auction-style catalog photo on white, grey or black card; turntables and cards of many shades;
the coin anywhere from small to filling the frame, a little tilted or off-centre. The crop is
cut around the circle that the pipeline's own coin finder reports (its errors included), exactly
as training.cutout.crop_pose cuts it, and the target is the twin's coverage under that crop.
Catalog seeds come from a range that no shipped evaluation uses (see SEED_BASE).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from rig.sim.catalog_style import render_catalog_photo
from rig.sim.coins import SIDES, CoinCatalog
from rig.sim.relief import coin_surface
from rig.sim.shading import Optics, Sensor, coverage_view, expose, grid_size_for, radiance_view
from rig.sim.world import LightState
from training.coinfind import Circle, find_coin
from training.cutout import crop_coin
from training.segmenter import SEGMENT_PX

# Twin catalog seeds for segmenter training start here: evaluation collections, tests and the
# demo use small seeds (0-99), so the segmenter never trains on a coin it is measured on.
SEED_BASE = 10_000
# Coins per training catalog: enough types and flans per seed, cheap to set up.
COINS_PER_CATALOG = 24
# The crop the pipeline segments: crop_pose's working side and its default margin.
WORK_PX = 192
MARGIN = 0.04
# Rendered frame side: coins span 60-160 px in it, as in rig captures downscaled for search.
FRAME_PX = 256


@dataclass(frozen=True)
class SegmenterSample:
    """One training crop (uint8 RGB, SEGMENT_PX square) and its coverage (float32, 0..1)."""

    crop: np.ndarray
    coverage: np.ndarray


def _lights(rng: np.random.Generator) -> dict[str, LightState]:
    """A random lighting: mostly one low raking light, else a dome or two raking lights."""
    kind = rng.choice(["raking", "raking", "raking", "two", "dome"])
    if kind == "dome":
        return {"dome": LightState(float(rng.uniform(0.6, 1.2)), None, None, True)}
    lights = {"a": LightState(1.0, float(rng.uniform(0, 360)), float(rng.uniform(8, 40)), False)}
    if kind == "two":
        lights["b"] = LightState(
            float(rng.uniform(0.3, 1.0)),
            float(rng.uniform(0, 360)),
            float(rng.uniform(8, 60)),
            False,
        )
    return lights


def _backdrop(rng: np.random.Generator) -> tuple[float, float, float]:
    """A turntable or card: mostly dark matte, sometimes mid grey or pale, slightly tinted."""
    level = float(
        rng.choice(
            [rng.uniform(0.01, 0.12), rng.uniform(0.12, 0.45), rng.uniform(0.45, 0.9)],
            p=[0.6, 0.25, 0.15],
        )
    )
    tint = rng.uniform(0.9, 1.1, size=3)
    return tuple(float(min(1.0, level * t)) for t in tint)  # type: ignore[return-value]


def _rig_photo(catalog: CoinCatalog, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A rig-style photo (RGB uint8) and the coin's coverage in it."""
    coin_id = str(rng.choice(catalog.coin_ids()))
    side = SIDES[int(rng.integers(0, 2))]
    optics = Optics(
        field_of_view_mm=float(rng.uniform(24, 70)),
        tilt_deg=float(rng.uniform(0, 8)),
        background=_backdrop(rng),
        vignetting=float(rng.uniform(0, 0.3)),
        defocus=float(rng.uniform(0.0004, 0.002)),
        axis_offset_mm=(float(rng.normal(0, 2.5)), float(rng.normal(0, 2.5))),
    )
    angle = float(rng.uniform(0, 360))
    surface = coin_surface(catalog, coin_id, side, grid_size_for(FRAME_PX, optics))
    radiance = radiance_view(surface, _lights(rng), angle, FRAME_PX, FRAME_PX, optics)
    sensor = Sensor(exposure_us=float(rng.uniform(8000, 30000)), gain_db=float(rng.uniform(0, 3)))
    image = expose(radiance, sensor, np.random.default_rng(int(rng.integers(0, 2**31))))
    coverage = coverage_view(surface, angle, FRAME_PX, FRAME_PX, optics)
    return image, coverage


def _catalog_photo(catalog: CoinCatalog, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An auction-style photo on card (RGB uint8) and the coin's coverage in it."""
    coin_id = str(rng.choice(catalog.coin_ids()))
    photo = render_catalog_photo(catalog, coin_id, SIDES[int(rng.integers(0, 2))])
    return photo.rgb, photo.coverage


def make_sample(index: int, seed: int = 0) -> SegmenterSample:
    """Sample `index` of the training stream for `seed`: the same arguments, the same sample.

    A photo whose coin the finder missed (its crop holds little of the coin, or mostly coin)
    teaches the outline nothing, and the search would not segment it either: redrawn.
    """
    rng = np.random.default_rng([seed, index])
    catalog = _catalog(SEED_BASE + seed * 1000 + index // 50)
    while True:
        image, coverage = (_catalog_photo if rng.random() < 0.15 else _rig_photo)(catalog, rng)
        circle = find_coin(image)
        cover = np.repeat((coverage[..., None] * 255).astype(np.uint8), 3, 2)
        target = _work_crop(cover, circle)[..., 0].astype(np.float32) / 255.0
        if MIN_TARGET_FILL <= target.mean() <= MAX_TARGET_FILL:
            return SegmenterSample(_work_crop(image, circle), target)


# The fitted circle spans 1 / (1 + MARGIN) of the crop's side, so a coin the finder found fills
# about π/4 / 1.08 = 0.73 of it (0.6-0.75 for ragged flans); far off means the finder missed.
MIN_TARGET_FILL = 0.5
MAX_TARGET_FILL = 0.85


def _work_crop(image: np.ndarray, circle: Circle) -> np.ndarray:
    """The crop crop_pose segments (WORK_PX, MARGIN) brought down to SEGMENT_PX."""
    crop = crop_coin(image, circle, WORK_PX, margin=MARGIN)
    return cv2.resize(crop, (SEGMENT_PX, SEGMENT_PX), interpolation=cv2.INTER_AREA)


_catalogs: dict[int, CoinCatalog] = {}


def _catalog(seed: int) -> CoinCatalog:
    """A twin catalog, kept: its dies and flans are built once per seed."""
    if seed not in _catalogs:
        _catalogs.clear()  # samples come in runs of one seed; keep memory flat
        _catalogs[seed] = CoinCatalog(seed=seed, types=6, coins=COINS_PER_CATALOG)
    return _catalogs[seed]
