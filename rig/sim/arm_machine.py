"""What both emulated G-code arms share: the serial line, the planner, the pump, the twin's world.

The motion planner runs segments one after another, each timed with a trapezoid profile on the
sim clock; the world learns the arm's position when a segment completes, and coins are taken or
released where the cup switches. A `Firmware` (rig.sim.arm_uarm, rig.sim.arm_dexarm) decides how
commands are read and when they are answered; `rig.sim.arm_emulator` pairs the two.

Coordinates inside the machine are the rig's frame; the firmware models convert on the wire.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from rig.arm import codec
from rig.config import FaultRule, GcodeArmConfig, Pose, TrayConfig
from rig.motion import trapezoid_duration_s
from rig.sim.clock import SimClock
from rig.sim.faults import FaultInjector
from rig.sim.serial_emulator import SerialEmulator
from rig.sim.world import World

XYZ = tuple[float, float, float]


@dataclass
class _Motion:
    """One planned segment: it starts when the one before it ends."""

    start: XYZ
    target: XYZ
    started_at: float
    deadline: float


class Firmware(Protocol):
    """How one firmware reads lines and when it answers (see rig.sim.arm_uarm / arm_dexarm)."""

    def receive(self, line: str) -> None:
        """Take one received line (without its line ending)."""
        ...

    def service(self) -> None:
        """Run whatever is ready now: queued commands, replies waiting for the arm to stop."""
        ...

    def next_due(self) -> float | None:
        """The clock time at which something becomes ready without new input, if any."""
        ...


class ArmMachine(SerialEmulator):
    """An arm with a suction cup on a pty, run by a firmware model (`make_firmware`)."""

    #: how close (mm, per axis) the cup must be to a known surface point to take or release there
    location_tolerance_mm: float = 3.0

    def __init__(
        self,
        *,
        config: GcodeArmConfig,
        tray: TrayConfig,
        world: World | None,
        clock: SimClock,
        faults: FaultInjector,
        homed: bool = False,
    ) -> None:
        """An arm of `config.dialect`; `homed`: a DexArm homed earlier in its power cycle."""
        self.dialect = codec.dialect(config.dialect)
        super().__init__(name=f"arm-{self.dialect.name}", clock=clock, faults=faults)
        self.config = config
        self.tray = tray
        self.world = world
        safe = config.safe_pose
        self._xyz: XYZ = (
            world.snapshot().arm_xyz_mm if world is not None else (safe.x_mm, safe.y_mm, safe.z_mm)
        )
        self._motions: list[_Motion] = []
        self.suction_on = False  # uarm_swift.c uarm_swift_init: pump_off() at power-on
        self.firmware: Firmware = self.make_firmware(homed)

    def make_firmware(self, homed: bool) -> Firmware:
        """The firmware model that reads this arm's commands."""
        raise NotImplementedError

    # ------------------------------------------------------------------ serving
    def on_start(self) -> None:
        """Send the firmware's power-on banner."""
        for line in self.dialect.banner:
            self.send_raw(line.encode("ascii") + b"\r\n")

    def handle_line(self, line: str) -> None:
        """Hand one received line to the firmware model, then run what became ready."""
        self._settle()
        self.firmware.receive(line)
        self.firmware.service()

    def tick(self) -> None:
        """Complete motions whose time is up and run what waited for them."""
        self._settle()
        self.firmware.service()

    def next_tick_s(self) -> float:
        """Wake when a motion ends or the firmware has something due, not up to a tick later.

        The firmware answers the moment a move completes; a fixed 20 ms tick made every arm
        reply ~10 ms late on average, which at time scale 1 showed up as orchestration overhead.
        """
        due = [m.deadline for m in self._motions[:1]]
        firmware_due = self.firmware.next_due()
        if firmware_due is not None:
            due.append(firmware_due)
        if not due:
            return 0.02
        return min(0.02, max(0.001, min(due) - self.clock.now()))

    # ------------------------------------------------------------------ replies
    def claim_fault(self) -> tuple[FaultRule | None, FaultRule | None]:
        """Draw this command's fault: (protocol fault to act on, transport fault for its reply).

        A transport fault belongs to the reply of the command that drew it, which may be sent
        much later (a move's `ok` when it ends), so it is kept with that reply, not applied to
        whatever the emulator happens to send next.
        """
        protocol = self.take_fault()
        transport, self._pending_fault = self._pending_fault, None
        return protocol, transport

    def send_reply(self, lines: list[str], fault: FaultRule | None = None) -> None:
        """Send a reply in one write, so an injected fault loses or garbles all of it."""
        if not lines:
            return
        self._pending_fault = fault
        self.send_line("\r\n".join(lines))

    # ------------------------------------------------------------------ motion
    @property
    def idle(self) -> bool:
        """Whether no planned motion is left."""
        self._settle()
        return not self._motions

    @property
    def xyz_mm(self) -> XYZ:
        """The tool position now (interpolated while moving)."""
        return self._current_xyz()

    @property
    def planned_xyz(self) -> XYZ:
        """Where the arm stands once every planned segment has run."""
        return self._motions[-1].target if self._motions else self._current_xyz()

    def plan_move(self, target: XYZ, speed_mm_per_s: float, action: str = "move") -> None:
        """Queue a straight segment from the end of the last one, timed on the sim clock."""
        self._settle()
        start = self.planned_xyz
        distance = math.dist(start, target)
        duration = trapezoid_duration_s(distance, speed_mm_per_s, self.config.accel_mm_per_s2)
        now = self.clock.now()
        # "vertical": a rise or a descent, told apart from travel in the ledger's breakdown
        vertical = " vertical" if distance > 0 and start[:2] == target[:2] else ""
        label = f"{action} {distance:.1f} mm{vertical}"
        scaled = self.clock.record(self.name, label, duration) - now
        begins = self._motions[-1].deadline if self._motions else now
        self._motions.append(_Motion(start, target, begins, begins + scaled))
        self._settle()  # with time scale 0 the motion is over at once

    def _settle(self) -> None:
        now = self.clock.now()
        while self._motions and now >= self._motions[0].deadline:
            done = self._motions.pop(0)
            self._xyz = done.target
            if self.world is not None:
                self.world.set_arm_xyz(done.target)

    def _current_xyz(self) -> XYZ:
        self._settle()
        if not self._motions:
            return self._xyz
        motion = self._motions[0]
        now = self.clock.now()
        if now <= motion.started_at:
            return motion.start
        # linear in time is close enough for a position report taken mid-move
        fraction = (now - motion.started_at) / (motion.deadline - motion.started_at)
        x0, y0, z0 = motion.start
        x1, y1, z1 = motion.target
        return (x0 + (x1 - x0) * fraction, y0 + (y1 - y0) * fraction, z0 + (z1 - z0) * fraction)

    # ------------------------------------------------------------------ suction and the world
    def switch_suction(self, on: bool) -> None:
        """Switch the pump where the cup is now: a coin is taken or released there."""
        was_on, self.suction_on = self.suction_on, on
        if self.world is None or was_on == on:
            return
        where = self.location(self._current_xyz(), taking=on)
        if on:
            if where is not None:
                self.world.take(*where)
        else:
            # released away from any known surface point, the coin falls: the twin forgets it
            self.world.release(*(where or ("floor", None)))

    def location(self, xyz: XYZ, *, taking: bool) -> tuple[str, int | str | None] | None:
        """Which surface point the cup is at: turntable, a tray slot, the chute or a pad."""
        station = self.config.flip_station
        # coins go into the chute at its drop point and come out, turned over, at its pickup
        chute = station.pickup if taking else station.drop
        candidates: list[tuple[str, int | str | None, Pose]] = [
            ("turntable", None, self.config.turntable_pose),
            ("chute", None, chute),
        ]
        candidates += [("tray", slot, self.tray.slot_pose(slot)) for slot in range(self.tray.slots)]
        staging = self.config.staging  # pads beside the turntable, where coins wait (issue 16)
        if staging is not None:
            candidates += [
                ("pad", name, getattr(staging, name)) for name in ("incoming", "outgoing")
            ]
        tolerance = self.location_tolerance_mm
        for where, slot, pose in candidates:
            if all(
                abs(a - b) <= tolerance
                for a, b in zip(xyz, (pose.x_mm, pose.y_mm, pose.z_mm), strict=True)
            ):
                return where, slot
        return None
