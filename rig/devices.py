"""Device interfaces: what the capture layer may ask of a turntable, arm, lightbox and camera.

Every concrete driver implements one of these Protocols; orchestrator unit tests mock exactly
these and nothing deeper. Methods carry units in their names and raise the errors of rig.errors.
Optional capabilities are Protocols too: a TiltStage (Rig.tilt), a TriggeredCamera (asked for
with isinstance). A simulated Rig also carries a typed Twin handle (world, clock, catalog...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np

from rig.config import Pose

if TYPE_CHECKING:  # for the Twin handle only: a rig on hardware never loads the simulation
    from rig.sim.clock import SimClock
    from rig.sim.coins import CoinCatalog
    from rig.sim.simulation import Emulators
    from rig.sim.world import World


@dataclass(frozen=True)
class DeviceIdentity:
    """Who a device says it is: shown by `rig probe`, stored in session records."""

    kind: str
    driver: str
    model: str
    serial: str = ""
    firmware: str = ""
    endpoint: str = ""
    notes: tuple[str, ...] = ()  # what the driver found in the device's own settings


@dataclass(frozen=True)
class Frame:
    """One grabbed image with the metadata a real camera reports (plus twin ground truth)."""

    image: np.ndarray
    exposure_us: float
    gain_db: float
    pixel_format: str
    camera: str
    timestamp_s: float
    sim: dict[str, Any] | None = None

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        """Image height in pixels."""
        return int(self.image.shape[0])


@dataclass(frozen=True)
class LightGeometry:
    """Where a channel's light comes from; `diffuse` channels have no direction."""

    name: str
    azimuth_deg: float | None
    elevation_deg: float | None
    diffuse: bool


@dataclass
class DeviceStatus:
    """A short state report for `rig probe`."""

    state: str
    details: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Device(Protocol):
    """What every device can do."""

    def connect(self) -> None:
        """Open the link and bring the device to a known, ready state."""

    def close(self) -> None:
        """Release the link (idempotent)."""

    def identity(self) -> DeviceIdentity:
        """Who the device is."""

    def status(self) -> DeviceStatus:
        """Current state, for display."""


@runtime_checkable
class Turntable(Device, Protocol):
    """A rotary stage carrying the coin; angles are absolute and may exceed 360 (multi-turn)."""

    def home(self) -> None:
        """Find the reference position (or declare the current one zero when no homing)."""

    def move_to_deg(self, angle_deg: float) -> float:
        """Move to an absolute angle, wait until still, return the reported angle."""

    def position_deg(self) -> float:
        """The current absolute angle."""

    def stop(self) -> None:
        """Stop any motion now."""

    def recover(self) -> None:
        """Clear an alarm/fault so the stage can move again (position is re-established)."""


@runtime_checkable
class TiltStage(Protocol):
    """An optional camera tilt axis."""

    def tilt_to_deg(self, tilt_deg: float) -> float:
        """Tilt the camera to an absolute angle and return the reported one."""


@runtime_checkable
class Arm(Device, Protocol):
    """A pick-and-place arm with a suction cup; every pose is checked against its workspace."""

    def home(self) -> None:
        """Home the arm and go to the safe pose."""

    def move_to(self, pose: Pose) -> None:
        """Move the tool to a pose (checked against the workspace first)."""

    def position(self) -> Pose:
        """The current tool pose."""

    def suction(self, on: bool) -> None:
        """Switch the suction cup."""

    def park(self) -> None:
        """Release nothing, go to the safe pose."""

    def pick_from_slot(self, slot: int) -> None:
        """Pick the coin in a tray slot."""

    def place_on_turntable(self) -> None:
        """Put the held coin on the turntable."""

    def flip_on_turntable(self) -> None:
        """Turn the coin on the turntable over (through the flip station)."""

    def return_to_slot(self, slot: int) -> None:
        """Pick the coin from the turntable and put it back in its slot."""


#: where the arm can pick or place a coin: a tray slot (its number), the turntable, or a staging
#: pad beside it (`incoming`: the next coin waits there; `outgoing`: the coin just shot)
Spot = int | Literal["turntable", "incoming", "outgoing"]


@runtime_checkable
class StagingArm(Protocol):
    """An arm with staging pads beside the turntable (an optional capability).

    Asked for with isinstance: it moves coins between spots and waits clear of the camera, so
    that it can fetch the next coin while the camera shoots the current one.
    """

    def pick(self, spot: Spot) -> None:
        """Take the coin lying at `spot` (approach from above, suction on, rise)."""

    def place(self, spot: Spot) -> None:
        """Put the held coin down at `spot` (approach from above, suction off, rise)."""

    def wait_clear(self) -> None:
        """Go to the waiting pose above the incoming pad, out of the camera's view."""


@runtime_checkable
class Lightbox(Device, Protocol):
    """Named light channels with a geometry, and named patterns."""

    def channels(self) -> list[LightGeometry]:
        """Every channel with its direction."""

    def patterns(self) -> dict[str, dict[str, float]]:
        """Named patterns: channel → intensity 0..1."""

    def set_levels(self, levels: dict[str, float]) -> dict[str, float]:
        """Set channels (others off), read back, verify, return what the device reports."""

    def set_pattern(self, name: str) -> dict[str, float]:
        """Set a named pattern and return the verified levels."""

    def levels(self) -> dict[str, float]:
        """Read back every channel's intensity."""

    def all_off(self) -> None:
        """Switch every channel off."""


@runtime_checkable
class Camera(Device, Protocol):
    """A camera that grabs one frame per software trigger."""

    def configure(
        self,
        *,
        exposure_us: float | None = None,
        gain_db: float | None = None,
        pixel_format: str | None = None,
    ) -> None:
        """Set exposure, gain and pixel format (checked against the configured limits)."""

    def grab(self, timeout_s: float | None = None) -> Frame:
        """Trigger and return one frame."""


class Exposure(Protocol):
    """A frame whose exposure was started: the rig may move once `wait_exposed()` returns."""

    def wait_exposed(self) -> None:
        """Return once the exposure is over; readout and transfer may still be going on."""

    def result(self, timeout_s: float | None = None) -> Frame:
        """The frame, once read out.

        Raises:
            RigError: the frame was lost after its exposure (the shot must be taken again).
        """


@runtime_checkable
class TriggeredCamera(Protocol):
    """A camera that can start an exposure and deliver its frame later (optional capability).

    With one, the capture engine moves on to the next shot's motions and light switch as soon
    as the exposure is over, and the frame's readout (in simulation: the twin's render) overlaps
    them instead of adding to the rig's critical path. Cameras without it are grabbed.
    """

    def trigger(self) -> Exposure:
        """Start an exposure now and return without waiting for it."""


@dataclass(frozen=True)
class Twin:
    """The simulation behind a simulated rig: what commands and benchmarks reach past devices for.

    The world (to stage coins and targets as an operator would), the clock (its ledger of
    physical time), the coin catalog the camera renders, and the running emulators by device.
    `on_hardware` names the rig's devices that are real (a mixed rig); `ground_truth` is False
    when one of them moves the coin or its light, so the twin's truth is not the rig's.
    """

    world: World
    clock: SimClock
    catalog: CoinCatalog
    emulators: Emulators
    on_hardware: tuple[str, ...] = ()
    ground_truth: bool = True

    @property
    def mixed_warning(self) -> str | None:
        """One line for a rig that mixes hardware with emulated devices; None when it does not."""
        if not self.on_hardware:
            return None
        truth = (
            "the twin's ground truth is recorded (every device that moves the twin is emulated)"
            if self.ground_truth
            else "the twin's ground truth (`sim` fields, coin labels) is not recorded"
        )
        real = ", ".join(self.on_hardware)
        return f"this rig mixes hardware ({real}) with emulated devices; {truth}"


@dataclass
class Rig:
    """The opened devices of one rig, as the capture layer sees them."""

    turntable: Turntable
    lightbox: Lightbox
    camera: Camera
    arm: Arm | None = None
    tilt: TiltStage | None = None
    twin: Twin | None = None  # None on hardware

    def devices(self) -> list[Device]:
        """Every device, in the order they should be closed last-to-first."""
        found: list[Device] = [self.turntable, self.lightbox, self.camera]
        if self.arm is not None:
            found.append(self.arm)
        return found
