"""The whole-rig configuration: the device sections plus storage, simulation and calibration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from rig.config.common import StrictModel
from rig.config.devices import (
    MIN_PAD_GAP_MM,
    ArmConfig,
    CameraConfig,
    GcodeArmConfig,
    LightboxConfig,
    Pose,
    TrayConfig,
    TurntableConfig,
    xy_distance_mm,
)

# ---------------------------------------------------------------- storage, simulation, rig


class StorageConfig(StrictModel):
    """Where datasets go and how images are written."""

    root: Path = Path("data")
    image_format: Literal["png", "tiff"] = "png"
    writer_queue: int = Field(8, ge=1, le=1024, description="images buffered while the rig moves")
    png_compression: int = Field(1, ge=0, le=9)


OffsetMm = Annotated[float, Field(ge=-100.0, le=100.0)]


class SimulationConfig(StrictModel):
    """The simulation backend: the twin's world and the emulators' clock."""

    seed: int = 0
    rulers: int = Field(3, ge=1, le=1000)
    types: int = Field(6, ge=1, le=10000)
    coins: int = Field(24, ge=1, le=100000)
    dies_per_design: int = Field(2, ge=1, le=20)
    shared_reverses: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="fraction of later types that reuse another ruler's reverse design",
    )
    time_scale: float = Field(0.0, ge=0.0, le=100.0, description="0 = no waiting, 1 = real time")
    coin_diameter_mm: float = Field(20.0, gt=1, le=100)
    turntable_axis_offset_mm: tuple[OffsetMm, OffsetMm] = Field(
        (0.0, 0.0),
        description="where the turntable axis (and the coin on it) lies, in mm from the optical "
        "axis (x right, y down in the image); coins turn about it",
    )


class CalibrationPolicy(StrictModel):
    """Where calibrations live and when one counts as stale."""

    folder: Path = Path("calibration")
    max_age_days: float = Field(30.0, gt=0, le=3650)


class RigConfig(StrictModel):
    """The whole rig: one section per device plus storage, simulation and calibration."""

    name: str = Field("coinrig", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    turntable: TurntableConfig
    arm: ArmConfig | None = None
    lightbox: LightboxConfig
    camera: CameraConfig
    tray: TrayConfig | None = None
    storage: StorageConfig = StorageConfig()
    simulation: SimulationConfig | None = None
    calibration: CalibrationPolicy = CalibrationPolicy()

    @model_validator(mode="after")
    def _consistent(self) -> RigConfig:
        if self.arm is not None and self.tray is None:
            raise ValueError("an arm needs a tray section (where it picks coins from)")
        if self.arm is not None and self.tray is not None:
            for slot in range(self.tray.slots):
                pose = self.tray.slot_pose(slot)
                lifted = Pose(
                    x_mm=pose.x_mm, y_mm=pose.y_mm, z_mm=pose.z_mm + self.arm.clearance_mm
                )
                if not (self.arm.workspace.contains(pose) and self.arm.workspace.contains(lifted)):
                    raise ValueError(f"tray slot {slot} lies outside the arm workspace")
            crowded = _crowded_pad(self.arm, self.tray)
            if crowded is not None:
                raise ValueError(crowded)
        emulated = (
            any(
                getattr(device, "emulate", None) is not None
                for device in (self.turntable, self.arm, self.lightbox)
            )
            or self.camera.driver == "sim"
        )
        if emulated and self.simulation is None:
            raise ValueError("emulated devices need a `simulation:` section")
        return self


def _crowded_pad(arm: GcodeArmConfig, tray: TrayConfig) -> str | None:
    """Why a staging pad overlaps a tray slot, the flip station or the other pad; else None."""
    if arm.staging is None:
        return None
    places = {f"tray slot {slot}": tray.slot_pose(slot) for slot in range(tray.slots)}
    places["flip_station.drop"] = arm.flip_station.drop
    places["flip_station.pickup"] = arm.flip_station.pickup
    for pad in ("incoming", "outgoing"):
        pose = getattr(arm.staging, pad)
        for name, other in places.items():
            gap = xy_distance_mm(pose, other)
            if gap < MIN_PAD_GAP_MM:
                return (
                    f"staging.{pad} lies {gap:.1f} mm from {name}: pads need "
                    f"{MIN_PAD_GAP_MM:g} mm to themselves"
                )
    return None
