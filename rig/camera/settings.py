"""Checks every camera driver makes before it touches the camera."""

from __future__ import annotations

from typing import TypeVar

from rig.config import CameraSettings
from rig.errors import NotConnected, SafetyError

T = TypeVar("T")

#: the highest gain any camera config allows (`CameraSettings.gain_db`'s bound)
MAX_GAIN_DB = 48.0


def check_exposure_gain(
    config: CameraSettings,
    exposure_us: float | None,
    gain_db: float | None,
    *,
    name: str,
    max_gain_db: float = MAX_GAIN_DB,
) -> None:
    """Refuse an exposure or gain outside the configured limits (None: not being set).

    Raises:
        SafetyError: exposure outside min_exposure_us..max_exposure_us, or gain outside
            0..max_gain_db; the message names the camera, the value and the limits.
    """
    low, high = config.min_exposure_us, config.max_exposure_us
    if exposure_us is not None and not low <= exposure_us <= high:
        raise SafetyError(
            f"{name}: exposure {exposure_us} µs is outside the configured limits "
            f"{low}..{high} µs; nothing was sent"
        )
    if gain_db is not None and not 0.0 <= gain_db <= max_gain_db:
        raise SafetyError(
            f"{name}: gain {gain_db} dB is outside the configured limits "
            f"0..{max_gain_db} dB; nothing was sent"
        )


def require_open(handle: T | None, name: str) -> T:
    """The open camera handle.

    Raises:
        NotConnected: the handle is None (connect() has not been called, or close() has).
    """
    if handle is None:
        raise NotConnected(f"{name}: not connected (call connect() first)")
    return handle
