"""Fake devices at the rig.devices Protocol level, with fault switches, for orchestrator tests.

Every call is appended to a shared CallLog so tests can check order (parking after a failure,
no motion before validation). `fail(method, exc, times)` makes the next calls of a method raise;
`times=None` fails forever. A DeviceAlarm latches like GRBL's: moves keep failing until recover().
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from rig.config import Pose
from rig.devices import DeviceIdentity, DeviceStatus, Frame, LightGeometry, Rig
from rig.errors import DeviceAlarm, SafetyError


@dataclass
class CallLog:
    """Every device call in order: (device, method, args)."""

    calls: list[tuple[str, str, tuple[Any, ...]]] = field(default_factory=list)

    def names(self) -> list[str]:
        return [f"{device}.{method}" for device, method, _ in self.calls]


class FakeDevice:
    kind = "device"

    def __init__(self, log: CallLog) -> None:
        self.log = log
        self._faults: dict[str, list[BaseException | None]] = defaultdict(list)
        self._forever: dict[str, BaseException] = {}
        self.connected = True

    def fail(self, method: str, exc: BaseException, times: int | None = 1) -> None:
        """Make the next `times` calls of `method` raise `exc` (None: every call)."""
        if times is None:
            self._forever[method] = exc
        else:
            self._faults[method].extend([exc] * times)

    def heal(self, method: str | None = None) -> None:
        for name in [method] if method else list(self._forever):
            self._forever.pop(name, None)
            self._faults.pop(name, None)

    def _call(self, method: str, *args: Any) -> None:
        self.log.calls.append((self.kind, method, args))
        if method in self._forever:
            raise self._forever[method]
        queued = self._faults.get(method)
        if queued:
            exc = queued.pop(0)
            if exc is not None:
                raise exc

    def connect(self) -> None:
        self._call("connect")

    def close(self) -> None:
        self._call("close")
        self.connected = False

    def identity(self) -> DeviceIdentity:
        return DeviceIdentity(kind=self.kind, driver="fake", model="fake")

    def status(self) -> DeviceStatus:
        return DeviceStatus("ready")


class FakeTurntable(FakeDevice):
    kind = "turntable"

    def __init__(self, log: CallLog, limits: tuple[float, float] = (-3600, 3600)) -> None:
        super().__init__(log)
        self.angle = 0.0
        self.limits = limits
        self.alarmed = False
        self.moving = False

    def home(self) -> None:
        self._call("home")
        self.angle = 0.0

    def move_to_deg(self, angle_deg: float) -> float:
        if not self.limits[0] <= angle_deg <= self.limits[1]:
            raise SafetyError(f"turntable {angle_deg} outside {self.limits}")
        if self.alarmed:
            self.log.calls.append((self.kind, "move_to_deg", (angle_deg,)))
            raise DeviceAlarm("turntable: ALARM:1 (still latched)", code=1)
        try:
            self._call("move_to_deg", angle_deg)
        except DeviceAlarm:
            self.alarmed = True
            raise
        self.angle = angle_deg
        return angle_deg

    def position_deg(self) -> float:
        return self.angle

    def stop(self) -> None:
        self._call("stop")

    def recover(self) -> None:
        self._call("recover")
        self.alarmed = False


class FakeTilt:
    def __init__(self, log: CallLog) -> None:
        self.log = log
        self.tilt = 0.0

    def tilt_to_deg(self, tilt_deg: float) -> float:
        self.log.calls.append(("tilt", "tilt_to_deg", (tilt_deg,)))
        self.tilt = tilt_deg
        return tilt_deg


PATTERNS = {
    "raking_n": {"north": 1.0},
    "raking_e": {"east": 1.0},
    "raking_s": {"south": 1.0},
    "raking_w": {"west": 1.0},
    "top": {"top": 0.8, "dome": 0.2},
    "diffuse": {"dome": 1.0},
}
CHANNELS = ("north", "east", "south", "west", "top", "dome")


class FakeLightbox(FakeDevice):
    kind = "lightbox"

    def __init__(self, log: CallLog) -> None:
        super().__init__(log)
        self.state = dict.fromkeys(CHANNELS, 0.0)

    def channels(self) -> list[LightGeometry]:
        return [LightGeometry(name, 0.0, 20.0, False) for name in CHANNELS]

    def patterns(self) -> dict[str, dict[str, float]]:
        return {k: dict(v) for k, v in PATTERNS.items()}

    def set_levels(self, levels: dict[str, float]) -> dict[str, float]:
        self._call("set_levels", dict(levels))
        self.state = {name: float(levels.get(name, 0.0)) for name in CHANNELS}
        return dict(self.state)

    def set_pattern(self, name: str) -> dict[str, float]:
        self._call("set_pattern", name)
        if name not in PATTERNS:
            raise KeyError(name)
        self.state = {ch: float(PATTERNS[name].get(ch, 0.0)) for ch in CHANNELS}
        return dict(self.state)

    def levels(self) -> dict[str, float]:
        return dict(self.state)

    def all_off(self) -> None:
        self._call("all_off")
        self.state = dict.fromkeys(CHANNELS, 0.0)

    @property
    def lit(self) -> bool:
        return any(level > 0 for level in self.state.values())


class FakeCamera(FakeDevice):
    kind = "camera"

    def __init__(self, log: CallLog, *, size: int = 8, bit_depth: int = 8) -> None:
        super().__init__(log)
        self.size = size
        self.bit_depth = bit_depth
        self.exposure_us = 20000.0
        self.gain_db = 0.0
        self.grabs = 0

    def configure(
        self,
        *,
        exposure_us: float | None = None,
        gain_db: float | None = None,
        pixel_format: str | None = None,
    ) -> None:
        self._call("configure", exposure_us, gain_db)
        if exposure_us is not None:
            self.exposure_us = exposure_us
        if gain_db is not None:
            self.gain_db = gain_db

    def grab(self, timeout_s: float | None = None) -> Frame:
        self._call("grab")
        return self._frame()

    def _frame(self) -> Frame:
        self.grabs += 1
        dtype = np.uint16 if self.bit_depth == 16 else np.uint8
        # Every grab differs (its count is in the pixels), so checksums tell frames apart.
        rng = np.random.default_rng(self.grabs)
        top = 65535 if self.bit_depth == 16 else 255
        image = rng.integers(0, top, size=(self.size, self.size, 3), dtype=dtype)
        return Frame(
            image=image,
            exposure_us=self.exposure_us,
            gain_db=self.gain_db,
            pixel_format="RGB16" if self.bit_depth == 16 else "RGB8",
            camera="fake-cam",
            timestamp_s=float(self.grabs),
        )


class FakeExposure:
    """A triggered fake exposure; its frame is made at trigger time, handed out by result().

    A `stuck` exposure's frame never arrives, like a camera that lost a trigger: result() times
    out (TimeoutError, as a concurrent.futures wait does) and, without a timeout, would block
    forever, so it fails the test instead of hanging it.
    """

    def __init__(self, camera: FakeTriggeredCamera, frame: Frame, *, stuck: bool = False) -> None:
        self.camera = camera
        self.frame = frame
        self.stuck = stuck

    def wait_exposed(self) -> None:
        self.camera.log.calls.append(("camera", "exposed", ()))

    def result(self, timeout_s: float | None = None) -> Frame:
        self.camera._call("result", timeout_s)
        if self.stuck:
            if timeout_s is None:
                raise AssertionError("result() without a timeout would block forever")
            raise TimeoutError(f"no frame within {timeout_s} s")
        return self.frame


class FakeTriggeredCamera(FakeCamera):
    """A camera with `trigger` (rig.devices.TriggeredCamera) whose frames carry, in `sim`,
    the turntable angle and lights at the moment of their exposure (the twin's ground truth)."""

    def __init__(
        self, log: CallLog, turntable: FakeTurntable, lightbox: FakeLightbox, **kw: Any
    ) -> None:
        super().__init__(log, **kw)
        self.turntable = turntable
        self.lightbox = lightbox
        # exposure numbers (1-based, counting every trigger) whose frames never arrive
        self.stuck: set[int] = set()

    def trigger(self) -> FakeExposure:
        self._call("trigger")
        frame = self._frame()
        truth = {"turntable_deg": self.turntable.angle, "lights": dict(self.lightbox.state)}
        return FakeExposure(self, replace(frame, sim=truth), stuck=self.grabs in self.stuck)


SAFE = Pose(x_mm=0, y_mm=200, z_mm=150)


class FakeArm(FakeDevice):
    kind = "arm"

    def __init__(self, log: CallLog) -> None:
        super().__init__(log)
        self.pose = SAFE
        self.holding: int | None = None
        self.on_turntable: int | None = None
        self.flips = 0

    def home(self) -> None:
        self._call("home")
        self.pose = SAFE

    def move_to(self, pose: Pose) -> None:
        self._call("move_to", pose)
        self.pose = pose

    def position(self) -> Pose:
        return self.pose

    def suction(self, on: bool) -> None:
        self._call("suction", on)

    def park(self) -> None:
        self._call("park")
        self.pose = SAFE

    def pick_from_slot(self, slot: int) -> None:
        self._call("pick_from_slot", slot)
        self.pose = Pose(x_mm=-100, y_mm=100, z_mm=0)
        self.holding = slot

    def place_on_turntable(self) -> None:
        self._call("place_on_turntable")
        self.on_turntable, self.holding = self.holding, None
        self.pose = Pose(x_mm=200, y_mm=200, z_mm=10)

    def flip_on_turntable(self) -> None:
        self._call("flip_on_turntable")
        self.flips += 1

    def return_to_slot(self, slot: int) -> None:
        self._call("return_to_slot", slot)
        self.on_turntable = None

    @property
    def parked(self) -> bool:
        return self.pose == SAFE


@dataclass
class FakeRig:
    rig: Rig
    log: CallLog
    turntable: FakeTurntable
    lightbox: FakeLightbox
    camera: FakeCamera
    arm: FakeArm | None
    tilt: FakeTilt | None


def make_rig(
    *, arm: bool = True, tilt: bool = False, bit_depth: int = 8, triggered: bool = False
) -> FakeRig:
    log = CallLog()
    turntable, lightbox = FakeTurntable(log), FakeLightbox(log)
    camera = (
        FakeTriggeredCamera(log, turntable, lightbox, bit_depth=bit_depth)
        if triggered
        else FakeCamera(log, bit_depth=bit_depth)
    )
    fake_arm = FakeArm(log) if arm else None
    fake_tilt = FakeTilt(log) if tilt else None
    rig = Rig(turntable=turntable, lightbox=lightbox, camera=camera, arm=fake_arm, tilt=fake_tilt)
    return FakeRig(rig, log, turntable, lightbox, camera, fake_arm, fake_tilt)
