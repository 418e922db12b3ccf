"""`rig calibrate lights` against the twin: chrome-sphere highlights give each light's direction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from capture.calibration.camera import calibrate_camera
from capture.calibration.lights import calibrate_lights
from capture.calibration.models import CalibrationRecord, DeviceKey, utc_now
from capture.calibration.staging import Stager, stager_for
from capture.calibration.store import CalibrationError, StoredCalibration
from rig.assembly import open_rig
from rig.config import RigConfig, load_config, parse_config
from rig.devices import Rig
from rig.sim.target_scene import TwinRig

CONFIG = load_config("sim")


def staged(rig: Rig, twin: TwinRig | None = None) -> Stager:
    """The twin placing targets (the sim backend always has one)."""
    stage = stager_for(rig, twin)
    assert stage is not None
    return stage


@pytest.fixture(scope="module")
def lens() -> StoredCalibration:
    """A camera calibration fitted from twin frames (the lights fit's perspective model)."""
    with open_rig(CONFIG) as rig:
        run = calibrate_camera(rig, CONFIG, staged(rig))
    record = CalibrationRecord(
        kind="camera",
        created=utc_now(),
        device=DeviceKey(rig=CONFIG.name, camera_serial="SIM-0001"),
        result=run.fit.result,
    )
    return StoredCalibration(Path("sim-rig_SIM-0001/camera-test.json"), record)


def with_channel(config: RigConfig, name: str, **change: Any) -> RigConfig:
    data = config.model_dump(mode="json")
    for channel in data["lightbox"]["channels"]:
        if channel["name"] == name:
            channel.update(change)
    return parse_config(data)


def test_directions_match_the_twin_with_a_camera_calibration(lens: StoredCalibration) -> None:
    with open_rig(CONFIG) as rig:
        run = calibrate_lights(rig, CONFIG, staged(rig), camera=lens)
    channels = {c.name: c for c in run.result.channels}
    assert set(channels) == {"north", "east", "south", "west", "top"}  # the dome is diffuse
    # the twin lights exactly as configured, so the configured direction is the truth
    assert max(c.error_deg for c in channels.values()) < 2.0
    assert all(c.within_tolerance for c in channels.values()) and not run.warnings
    assert run.result.camera_calibration == lens.name


def test_orthographic_fallback_stays_within_tolerance() -> None:
    with open_rig(CONFIG) as rig:
        run = calibrate_lights(rig, CONFIG, staged(rig))
    assert max(c.error_deg for c in run.result.channels) < 2.0
    assert run.result.camera_calibration is None


def test_a_misconfigured_light_is_reported(lens: StoredCalibration) -> None:
    wrong = with_channel(CONFIG, "north", azimuth_deg=100.0)  # the twin's light is at 90°
    with open_rig(CONFIG) as rig:
        run = calibrate_lights(rig, wrong, staged(rig), camera=lens)
    north = next(c for c in run.result.channels if c.name == "north")
    assert not north.within_tolerance and north.configured_azimuth_deg == 100.0
    assert north.azimuth_deg == pytest.approx(90.0, abs=1.0)
    assert len(run.warnings) == 1 and "light north" in run.warnings[0]


def test_no_sphere_is_an_error_and_the_rig_is_left_parked() -> None:
    with open_rig(CONFIG) as rig:
        with pytest.raises(CalibrationError, match="no sphere"):
            calibrate_lights(rig, CONFIG, lambda placement: None)  # nobody places the sphere
        assert not any(rig.lightbox.levels().values())
        assert rig.turntable.position_deg() == pytest.approx(0.0)
