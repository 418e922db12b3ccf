"""A turntable calibration record for tests that need one in a calibration folder."""

from __future__ import annotations

from datetime import timedelta

from capture.calibration.models import CalibrationRecord, DeviceKey, TurntableResult, utc_now


def turntable_record(
    device: DeviceKey,
    *,
    days_old: float = 0.0,
    centre_px: tuple[float, float] = (270.5, 240.25),
    zero_offset_deg: float = 17.0,
) -> CalibrationRecord:
    """A clockwise turntable calibration of a 512×512 camera, `days_old` days old."""
    result = TurntableResult(
        width=512,
        height=512,
        centre_px=centre_px,
        rotation_sign=-1,
        zero_offset_deg=zero_offset_deg,
        px_per_mm=12.8,
        residual_px=0.1,
        angles_deg=[0.0, 90.0, 180.0],
        marker_id=7,
        marker_mm=8.0,
        camera_calibration=None,
    )
    return CalibrationRecord(
        kind="turntable",
        created=utc_now() - timedelta(days=days_old),
        device=device,
        result=result,
    )
