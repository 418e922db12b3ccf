"""Calibration records: versioned, self-describing JSON (pydantic), one per fit.

A record names the device it belongs to (rig name, camera serial and model), when it was made,
the fit's results and quality, and any large arrays stored beside it as .npy files. `kind`
chooses the result model (a discriminated union), so readers get typed results back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

CALIBRATION_FORMAT = "coinrig-calibration"
CALIBRATION_VERSION = 1
Kind = Literal["camera", "turntable", "lights", "flatfield"]
KINDS: tuple[Kind, ...] = ("camera", "turntable", "lights", "flatfield")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceKey(_Model):
    """Whose calibration this is: the rig and the camera that took the frames."""

    rig: str
    camera_serial: str
    camera_model: str = ""
    camera_driver: str = ""

    @property
    def folder_name(self) -> str:
        """A file-system-safe folder name, `RIG_SERIAL`."""
        return _safe(f"{self.rig}_{self.camera_serial or 'unknown'}")


class BoardSpec(_Model):
    """A printed ChArUco board: squares across and down, their size and the marker dictionary."""

    columns: int = Field(9, ge=3, le=64)
    rows: int = Field(7, ge=3, le=64)
    square_mm: float = Field(3.0, gt=0, le=500)
    marker_mm: float = Field(2.2, gt=0, le=500)
    dictionary: str = "DICT_4X4_50"


class CameraResult(_Model):
    """Intrinsics and distortion (OpenCV model) from ChArUco views."""

    kind: Literal["camera"] = "camera"
    width: int
    height: int
    camera_matrix: list[list[float]]
    distortion: list[float]  # k1 k2 p1 p2 k3
    rms_px: float
    max_rms_px: float
    per_view_rms_px: list[float]
    views_used: int
    corners_used: int
    board: BoardSpec


class TurntableResult(_Model):
    """Where the turntable turns in the image, which way, from where, and the image scale."""

    kind: Literal["turntable"] = "turntable"
    width: int
    height: int
    centre_px: tuple[float, float]  # in raw (distorted) image pixels
    rotation_sign: Literal[1, -1]  # +1: positive angles turn counter-clockwise in the image
    zero_offset_deg: float  # image angle (CCW from +x) of the marker's x axis at driver 0°
    px_per_mm: float
    residual_px: float  # RMS of marker corners about the fitted rotation
    angles_deg: list[float]
    marker_id: int
    marker_mm: float
    camera_calibration: str | None  # the camera record used to undistort, if any


class ChannelResult(_Model):
    """One light channel: measured direction, configured direction, and their angle apart."""

    name: str
    azimuth_deg: float
    elevation_deg: float
    configured_azimuth_deg: float
    configured_elevation_deg: float
    error_deg: float
    within_tolerance: bool
    highlight_px: tuple[float, float]


class LightsResult(_Model):
    """Light directions from a chrome sphere's highlights."""

    kind: Literal["lights"] = "lights"
    channels: list[ChannelResult]
    tolerance_deg: float
    sphere_centre_px: tuple[float, float]
    sphere_radius_px: float
    sphere_diameter_mm: float
    camera_calibration: str | None


class PatternFlat(_Model):
    """The flat field of one light pattern: its array file and white balance."""

    array: str  # .npy beside the record: float32 (H, W, C), linear, mean 1 in the centre
    white_balance: list[float]  # per-channel gains making the card neutral (green = 1)
    exposure_us: float
    level: float  # linear card level in the centre, 0..1 of full scale
    nonuniformity_before_pct: float  # peak-to-peak of the card's block means, raw
    nonuniformity_after_pct: float  # the same on a fresh frame after correction


class FlatFieldResult(_Model):
    """Per-pattern flat fields and white balance from a uniform grey card."""

    kind: Literal["flatfield"] = "flatfield"
    width: int
    height: int
    channels: int
    gamma: float  # the camera's encoding exponent: value = linear ** gamma
    patterns: dict[str, PatternFlat]


Result = Annotated[
    CameraResult | TurntableResult | LightsResult | FlatFieldResult, Field(discriminator="kind")
]


class CalibrationRecord(_Model):
    """One calibration file: format, version, device, time, result and warnings."""

    format: Literal["coinrig-calibration"] = "coinrig-calibration"
    version: int = CALIBRATION_VERSION
    kind: Kind
    created: datetime
    device: DeviceKey
    software: str = "coinrig"
    result: Result
    frames: int = 0
    warnings: list[str] = Field(default_factory=list)

    def age_days(self, now: datetime | None = None) -> float:
        """Days since the calibration was made."""
        now = now or datetime.now(UTC)
        return (now - self.created).total_seconds() / 86400.0


def utc_now() -> datetime:
    """The current UTC time, to the second (records and file names agree)."""
    return datetime.now(UTC).replace(microsecond=0)


def _safe(text: str) -> str:
    """Keep letters, digits, dot, dash and underscore; anything else becomes a dash."""
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in text) or "unknown"
