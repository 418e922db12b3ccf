"""Grabbing calibration frames through the rig's drivers: lights, exposure, pixel scaling.

Every procedure sets lights with the lightbox driver, moves with the turntable driver and grabs
with the camera driver; these helpers keep that plumbing (and automatic exposure) in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from capture.calibration.staging import Placement, Stager
from rig.config import RigConfig
from rig.devices import Frame, Rig

log = logging.getLogger(__name__)

NOMINAL_GAMMA = 1 / 2.2  # for exposure decisions only; fits that need it measure it


def full_scale(image: np.ndarray) -> float:
    """The largest value the image's dtype can hold (1.0 for floats)."""
    if np.issubdtype(image.dtype, np.integer):
        return float(np.iinfo(image.dtype).max)
    return 1.0


def to_gray(image: np.ndarray) -> np.ndarray:
    """Luminance-ish float32 in 0..1 (the mean of the colour channels)."""
    scaled = image.astype(np.float32) / np.float32(full_scale(image))
    return scaled.mean(axis=2) if scaled.ndim == 3 else scaled


def to_gray8(image: np.ndarray) -> np.ndarray:
    """8-bit grey for detectors that want it (16-bit frames are scaled down, not truncated)."""
    return np.clip(to_gray(image) * 255 + 0.5, 0, 255).astype(np.uint8)


def directional_channels(config: RigConfig) -> list[str]:
    """Channels with a direction (azimuth, elevation), in config order."""
    return [c.name for c in config.lightbox.channels if not c.diffuse]


def even_light(config: RigConfig) -> dict[str, float]:
    """Soft, even light for printed targets: the diffuse channels, else every channel."""
    diffuse = [c.name for c in config.lightbox.channels if c.diffuse]
    names = diffuse or [c.name for c in config.lightbox.channels]
    return dict.fromkeys(names, 1.0)


@contextmanager
def calibrating(rig: Rig, config: RigConfig, stage: Stager) -> Iterator[None]:
    """Ready the rig for a calibration, and always leave it parked, even after an error.

    Ready: lights off, turntable homed, camera tilt at 0° (calibrations are made looking
    down). Parked: lights off, turntable at 0°, the configured exposure back, target away.
    """
    rig.lightbox.all_off()
    rig.turntable.home()
    if rig.tilt is not None:
        rig.tilt.tilt_to_deg(0.0)
    try:
        yield
    finally:
        steps: list[tuple[str, Callable[[], object]]] = [
            ("lights off", rig.lightbox.all_off),
            ("turntable to 0°", lambda: rig.turntable.move_to_deg(0.0)),
            ("exposure", lambda: rig.camera.configure(exposure_us=config.camera.exposure_us)),
            ("target away", lambda: stage(Placement("none"))),
        ]
        for name, step in steps:
            try:
                step()
            except Exception as exc:  # parking runs on the way out of errors: never mask them
                log.error("parking after calibration: %s failed: %s", name, exc)


def auto_expose(
    rig: Rig,
    config: RigConfig,
    *,
    percentile: float,
    target: float,
    mask: np.ndarray | None = None,
    start_us: float | None = None,
    rounds: int = 5,
) -> tuple[float, Frame]:
    """Set the exposure so the image's `percentile` sits near `target` of full scale.

    Returns the exposure and the last frame taken with it. Clipped frames cut the exposure by a
    fixed step; others scale it through the nominal gamma.
    """
    settings = config.camera
    low, high = settings.min_exposure_us, settings.max_exposure_us
    exposure = float(np.clip(start_us or settings.exposure_us, low, high))
    frame = _grab_at(rig, exposure)
    for _ in range(rounds):
        values = to_gray(frame.image)
        values = values[mask] if mask is not None else values.ravel()
        level = float(np.percentile(values, percentile))
        if 0.85 * target <= level <= 1.1 * target:
            break
        # a clipped level says nothing of how far over it is: back off by a fixed step
        factor = 0.4 if level >= 0.98 else (target / max(level, 1e-3)) ** (1 / NOMINAL_GAMMA)
        new = float(np.clip(exposure * min(factor, 20.0), low, high))
        if new == exposure:
            break
        exposure = new
        frame = _grab_at(rig, exposure)
    return exposure, frame


def _grab_at(rig: Rig, exposure_us: float) -> Frame:
    rig.camera.configure(exposure_us=exposure_us)
    return rig.camera.grab()
