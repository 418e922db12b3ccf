"""Per-device configuration models: turntables, arm and tray, lightbox, cameras.

Each device kind is a discriminated union on its `driver` field; units are in field names.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, model_validator

from rig.config.common import (
    MODBUS_FAULTS,
    SERIAL_FAULTS,
    EmulatorConfig,
    ModbusEmulatorConfig,
    ModbusLink,
    RegisterAddress,
    SerialPort,
    StrictModel,
    check_fault_kinds,
    require_one_endpoint,
)
from rig.errors import ConfigError

# ---------------------------------------------------------------- turntables


class TurntableLimits(StrictModel):
    """Travel and speed limits for a rotary axis (absolute, multi-turn)."""

    min_deg: float = Field(-3600.0, ge=-1e6, le=1e6)
    max_deg: float = Field(3600.0, ge=-1e6, le=1e6)
    max_speed_deg_per_s: float = Field(90.0, gt=0, le=3600)
    accel_deg_per_s2: float = Field(180.0, gt=0, le=1e5)

    @model_validator(mode="after")
    def _ordered(self) -> TurntableLimits:
        if self.min_deg >= self.max_deg:
            raise ValueError(f"min_deg ({self.min_deg}) must be below max_deg ({self.max_deg})")
        return self


class TiltAxis(StrictModel):
    """An optional camera tilt stage driven as a second GRBL axis."""

    axis: Literal["X", "Y", "Z", "A", "B", "C"] = "Y"
    units_per_deg: float = Field(1.0, gt=0, le=1e5)
    min_deg: float = Field(0.0, ge=-90, le=90)
    max_deg: float = Field(45.0, ge=-90, le=90)
    speed_deg_per_s: float = Field(30.0, gt=0, le=720)


#: GRBL 1.1 setting numbers: the global ones, and per axis $100+ (steps), $110+ (rate), $120+
#: (acceleration), $130+ (travel) for up to six axes (X Y Z and a fork's A B C)
_GRBL_SETTINGS = frozenset(
    {0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 20, 21, 22, 23, 24, 25, 26, 27, 30, 31, 32}
    | {first + axis for first in (100, 110, 120, 130) for axis in range(6)}
)


class GrblEmulatorConfig(EmulatorConfig):
    """An emulated GRBL controller: its faults, and the `$$` settings flashed on it."""

    settings: dict[int, float] = Field(
        default_factory=dict,
        description="`$N: value` as set on the controller (e.g. 100: 8.889 steps/deg); every "
        "other setting keeps its stock GRBL 1.1h value",
    )

    @model_validator(mode="after")
    def _known_settings(self) -> GrblEmulatorConfig:
        for number, value in self.settings.items():
            if number not in _GRBL_SETTINGS:
                raise ValueError(f"emulate.settings: GRBL 1.1 has no setting ${number}")
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"emulate.settings: ${number}={value} must be a number >= 0")
        return self


class GrblTurntableConfig(StrictModel):
    """GRBL 1.1 controller (Arduino + stepper) turning the turntable over serial G-code."""

    driver: Literal["grbl"]
    link: SerialPort | None = None
    emulate: GrblEmulatorConfig | None = None
    axis: Literal["X", "Y", "Z", "A", "B", "C"] = "X"
    units_per_deg: float = Field(1.0, gt=0, le=1e5, description="GRBL axis units per degree")
    speed_deg_per_s: float = Field(60.0, gt=0, le=3600)
    limits: TurntableLimits = TurntableLimits()
    homing: bool = False
    tilt: TiltAxis | None = None
    reply_timeout_s: float = Field(2.0, gt=0, le=120)
    banner_timeout_s: float = Field(5.0, gt=0, le=120)
    retries: int = Field(2, ge=0, le=10)
    poll_interval_s: float = Field(
        0.2, ge=0.2, le=5, description="status query period; GRBL asks for at most 5 Hz"
    )

    @model_validator(mode="after")
    def _endpoint(self) -> GrblTurntableConfig:
        require_one_endpoint(self.link, self.emulate)
        check_fault_kinds(self.emulate, SERIAL_FAULTS, "a GRBL turntable")
        if self.speed_deg_per_s > self.limits.max_speed_deg_per_s:
            raise ValueError(
                f"speed_deg_per_s {self.speed_deg_per_s} exceeds limits.max_speed_deg_per_s "
                f"{self.limits.max_speed_deg_per_s}"
            )
        return self


class ModbusTurntableRegisters(StrictModel):
    """Register map of an integrated stepper/servo drive (holding registers unless noted)."""

    target: RegisterAddress = 0
    target_words: Literal[1, 2] = 2
    speed: RegisterAddress = 2
    enable: RegisterAddress = 3
    status: RegisterAddress = 4
    busy_bit: int = Field(0, ge=0, le=15)
    fault_bit: int = Field(1, ge=0, le=15)
    actual: RegisterAddress = 5
    actual_words: Literal[1, 2] = 2
    command: RegisterAddress = 7
    home_command: int = Field(1, ge=0, le=65535)
    stop_command: int = Field(2, ge=0, le=65535)
    clear_fault_command: int = Field(3, ge=0, le=65535)


class ModbusTurntableConfig(StrictModel):
    """Integrated stepper/servo drive turning the turntable, Modbus RTU or TCP."""

    driver: Literal["modbus"]
    link: ModbusLink | None = None
    emulate: ModbusEmulatorConfig | None = None
    unit_id: int = Field(1, ge=0, le=247)
    registers: ModbusTurntableRegisters = ModbusTurntableRegisters()
    steps_per_deg: float = Field(100.0, gt=0, le=1e6)
    speed_deg_per_s: float = Field(60.0, gt=0, le=3600)
    limits: TurntableLimits = TurntableLimits()
    timeout_s: float = Field(1.0, gt=0, le=60)
    retries: int = Field(2, ge=0, le=10)
    poll_interval_s: float = Field(0.02, gt=0, le=5)

    @model_validator(mode="after")
    def _endpoint(self) -> ModbusTurntableConfig:
        require_one_endpoint(self.link, self.emulate)
        check_fault_kinds(self.emulate, (*MODBUS_FAULTS, "alarm"), "a Modbus turntable")
        return self


TurntableConfig = Annotated[
    GrblTurntableConfig | ModbusTurntableConfig, Field(discriminator="driver")
]


# ---------------------------------------------------------------- arm and tray


class Pose(StrictModel):
    """A Cartesian tool pose in millimetres (arm base frame)."""

    x_mm: float
    y_mm: float
    z_mm: float

    @model_validator(mode="after")
    def _finite(self) -> Pose:
        for name in ("x_mm", "y_mm", "z_mm"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite")
        return self


class Workspace(StrictModel):
    """The box every commanded pose must lie in."""

    x_mm: tuple[float, float] = (-350.0, 350.0)
    y_mm: tuple[float, float] = (50.0, 350.0)
    z_mm: tuple[float, float] = (-100.0, 200.0)

    @model_validator(mode="after")
    def _ordered(self) -> Workspace:
        for name in ("x_mm", "y_mm", "z_mm"):
            low, high = getattr(self, name)
            if not low < high:
                raise ValueError(f"workspace {name} must be (low, high) with low < high")
        return self

    def contains(self, pose: Pose) -> bool:
        """Whether the pose lies inside the box (inclusive)."""
        return (
            self.x_mm[0] <= pose.x_mm <= self.x_mm[1]
            and self.y_mm[0] <= pose.y_mm <= self.y_mm[1]
            and self.z_mm[0] <= pose.z_mm <= self.z_mm[1]
        )


class TrayConfig(StrictModel):
    """A grid tray of coin slots; slot 0 at `origin`, row-major."""

    rows: int = Field(4, ge=1, le=100)
    cols: int = Field(6, ge=1, le=100)
    origin: Pose = Pose(x_mm=-150.0, y_mm=150.0, z_mm=0.0)
    pitch_mm: float = Field(40.0, gt=0, le=500)

    @property
    def slots(self) -> int:
        """Number of slots."""
        return self.rows * self.cols

    def slot_pose(self, slot: int) -> Pose:
        """The pose of a slot's centre at coin height."""
        if not 0 <= slot < self.slots:
            raise ConfigError(
                f"tray slot {slot} does not exist (tray has slots 0..{self.slots - 1})"
            )
        row, col = divmod(slot, self.cols)
        return Pose(
            x_mm=self.origin.x_mm + col * self.pitch_mm,
            y_mm=self.origin.y_mm + row * self.pitch_mm,
            z_mm=self.origin.z_mm,
        )


class FlipStation(StrictModel):
    """A chute that turns a dropped coin over: drop it at `drop`, pick it up again at `pickup`."""

    drop: Pose
    pickup: Pose


#: how far apart (in x and y) two places that each hold a coin must be: a coin is ~20-30 mm across
MIN_PAD_GAP_MM = 30.0


def xy_distance_mm(a: Pose, b: Pose) -> float:
    """The horizontal distance between two poses."""
    return math.dist((a.x_mm, a.y_mm), (b.x_mm, b.y_mm))


class Staging(StrictModel):
    """Two pads beside the turntable where coins wait, so the arm works while the camera shoots.

    The next coin waits on `incoming` (first side up) to go on the turntable; the coin just shot
    waits on `outgoing` to go back to its tray slot. While the camera shoots, the arm stays
    `keep_out_mm` (in x and y) away from the turntable pose: out of the camera's view and of the
    lights' paths. It waits above `incoming`. `overlap: false` keeps the serial schedule (load,
    shoot, flip, shoot, unload, parking after each) on a rig that has pads.
    """

    incoming: Pose
    outgoing: Pose
    keep_out_mm: float = Field(
        60.0, gt=0, le=1000, description="radius about the turntable the arm avoids while shooting"
    )
    overlap: bool = True

    @model_validator(mode="after")
    def _apart(self) -> Staging:
        gap = xy_distance_mm(self.incoming, self.outgoing)
        if gap < MIN_PAD_GAP_MM:
            raise ValueError(
                f"staging pads are {gap:.1f} mm apart; at least {MIN_PAD_GAP_MM:g} mm is needed"
            )
        return self


class GcodeArmConfig(StrictModel):
    """A G-code arm with a suction cup (uFactory uArm Swift Pro or Rotrics DexArm dialect)."""

    driver: Literal["gcode-arm"]
    dialect: Literal["uarm-swift-pro", "dexarm"] = "uarm-swift-pro"
    link: SerialPort | None = None
    emulate: EmulatorConfig | None = None
    workspace: Workspace = Workspace()
    safe_pose: Pose = Pose(x_mm=0.0, y_mm=200.0, z_mm=150.0)
    turntable_pose: Pose = Pose(x_mm=150.0, y_mm=200.0, z_mm=10.0)
    flip_station: FlipStation = FlipStation(
        drop=Pose(x_mm=0.0, y_mm=300.0, z_mm=40.0), pickup=Pose(x_mm=60.0, y_mm=300.0, z_mm=0.0)
    )
    clearance_mm: float = Field(40.0, ge=0, le=300, description="lift above a pick/place point")
    staging: Staging | None = None
    speed_mm_per_s: float = Field(100.0, gt=0, le=1000)
    accel_mm_per_s2: float = Field(500.0, gt=0, le=1e5)
    reply_timeout_s: float = Field(2.0, gt=0, le=120)
    banner_timeout_s: float = Field(5.0, gt=0, le=120)
    retries: int = Field(2, ge=0, le=10)

    @model_validator(mode="after")
    def _poses_inside(self) -> GcodeArmConfig:
        require_one_endpoint(self.link, self.emulate)
        check_fault_kinds(self.emulate, SERIAL_FAULTS, "a G-code arm")
        named = {
            "safe_pose": self.safe_pose,
            "turntable_pose": self.turntable_pose,
            "flip_station.drop": self.flip_station.drop,
            "flip_station.pickup": self.flip_station.pickup,
        }
        staging = self.staging
        if staging is not None:
            named |= {"staging.incoming": staging.incoming, "staging.outgoing": staging.outgoing}
        for name, pose in named.items():
            lifted = Pose(x_mm=pose.x_mm, y_mm=pose.y_mm, z_mm=pose.z_mm + self.clearance_mm)
            if not (self.workspace.contains(pose) and self.workspace.contains(lifted)):
                raise ValueError(f"{name} (or its clearance above) lies outside the workspace")
        if staging is not None:
            for name in ("incoming", "outgoing"):
                away = xy_distance_mm(getattr(staging, name), self.turntable_pose)
                if away < staging.keep_out_mm:
                    raise ValueError(
                        f"staging.{name} lies {away:.1f} mm from the turntable, inside "
                        f"keep_out_mm ({staging.keep_out_mm:g} mm)"
                    )
        return self


ArmConfig = Annotated[GcodeArmConfig, Field(discriminator="driver")]


# ---------------------------------------------------------------- lightbox


class LightChannel(StrictModel):
    """One LED channel: where its level lives and where the light comes from."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    address: RegisterAddress
    kind: Literal["holding", "coil"] = "holding"
    full_scale: int = Field(1000, ge=1, le=65535, description="register value for intensity 1.0")
    azimuth_deg: float | None = Field(None, ge=-360, le=360)
    elevation_deg: float | None = Field(None, ge=0, le=90)
    diffuse: bool = False

    @model_validator(mode="after")
    def _geometry(self) -> LightChannel:
        directional = self.azimuth_deg is not None and self.elevation_deg is not None
        if self.diffuse == directional:
            raise ValueError(
                f"channel {self.name}: give either azimuth_deg and elevation_deg, or diffuse: true"
            )
        return self


Intensity = Annotated[float, Field(ge=0.0, le=1.0)]


class ModbusLightboxConfig(StrictModel):
    """A Modbus LED/PWM controller, one register (or coil) per channel."""

    driver: Literal["modbus"]
    link: ModbusLink | None = None
    emulate: ModbusEmulatorConfig | None = None
    unit_id: int = Field(1, ge=0, le=247)
    channels: tuple[LightChannel, ...] = Field(min_length=1)
    patterns: dict[str, dict[str, Intensity]] = Field(default_factory=dict)
    timeout_s: float = Field(1.0, gt=0, le=60)
    retries: int = Field(2, ge=0, le=10)
    settle_ms: float = Field(20.0, ge=0, le=5000, description="LED settling time after a change")

    @model_validator(mode="after")
    def _consistent(self) -> ModbusLightboxConfig:
        require_one_endpoint(self.link, self.emulate)
        check_fault_kinds(self.emulate, MODBUS_FAULTS, "a Modbus lightbox")
        names = [c.name for c in self.channels]
        if len(set(names)) != len(names):
            raise ValueError("channel names must be unique")
        addresses = [(c.kind, c.address) for c in self.channels]
        if len(set(addresses)) != len(addresses):
            raise ValueError("two channels share a register")
        for pattern, levels in self.patterns.items():
            unknown = sorted(set(levels) - set(names))
            if unknown:
                raise ValueError(
                    f"pattern {pattern!r} names unknown channel(s) {unknown}; channels are {names}"
                )
        return self

    def channel(self, name: str) -> LightChannel:
        """The channel called `name`."""
        for channel in self.channels:
            if channel.name == name:
                return channel
        raise ConfigError(
            f"no light channel {name!r}; channels are {[c.name for c in self.channels]}"
        )


LightboxConfig = Annotated[ModbusLightboxConfig, Field(discriminator="driver")]


# ---------------------------------------------------------------- cameras

PixelFormat = Literal["Mono8", "Mono12", "RGB8", "BayerRG8", "BayerRG12"]


class CameraSettings(StrictModel):
    """Exposure and gain limits and defaults shared by all cameras."""

    exposure_us: float = Field(20000.0, ge=10, le=10_000_000)
    gain_db: float = Field(0.0, ge=0, le=48)
    min_exposure_us: float = Field(20.0, ge=1, le=10_000_000)
    max_exposure_us: float = Field(1_000_000.0, ge=1, le=60_000_000)
    grab_timeout_s: float = Field(5.0, gt=0, le=600)


class BaslerCameraConfig(CameraSettings):
    """A Basler camera through pypylon; chosen by serial number, or the first found."""

    driver: Literal["basler"]
    serial: str | None = None
    pixel_format: PixelFormat = "Mono8"
    max_gain_db: float = Field(24.0, ge=0, le=48, description="highest gain the driver may set")
    emulated: bool = Field(False, description="use pylon's own camera emulation (PYLON_CAMEMU)")

    @model_validator(mode="after")
    def _gain_within_limit(self) -> BaslerCameraConfig:
        if self.gain_db > self.max_gain_db:
            raise ValueError(f"gain_db {self.gain_db} exceeds max_gain_db {self.max_gain_db}")
        return self


class OpenCvCameraConfig(CameraSettings):
    """A webcam or video file through cv2.VideoCapture."""

    driver: Literal["opencv"]
    source: int | str = 0
    width: int | None = Field(None, ge=16, le=16384)
    height: int | None = Field(None, ge=16, le=16384)


class SimCameraConfig(CameraSettings):
    """The digital twin's simulated camera."""

    driver: Literal["sim"]
    width: int = Field(512, ge=32, le=8192)
    height: int = Field(512, ge=32, le=8192)
    color: bool = True
    bit_depth: Literal[8, 16] = 8
    field_of_view_mm: float = Field(40.0, gt=1, le=1000, description="width of the view in mm")
    read_noise_e: float = Field(3.0, ge=0, le=1000)
    full_well_e: float = Field(10000.0, gt=0, le=1e7)
    serial: str = "SIM-0001"


CameraConfig = Annotated[
    BaslerCameraConfig | OpenCvCameraConfig | SimCameraConfig, Field(discriminator="driver")
]
