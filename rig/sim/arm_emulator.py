"""A G-code arm with a suction cup behind a pty, speaking the uArm Swift Pro or DexArm dialect.

The emulator answers as the firmware would (banner, `ok` replies, position reports, error
replies for unreachable poses and unknown commands), models motion time with a trapezoid
profile recorded on the sim clock, and changes the twin's world: the arm's position when a move
completes, and coins taken or released when the suction cup switches at a known location.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from rig.arm import codec
from rig.arm.codec import Command
from rig.config import GcodeArmConfig, Pose, TrayConfig
from rig.motion import trapezoid_duration_s
from rig.sim.clock import SimClock
from rig.sim.faults import FaultInjector
from rig.sim.serial_emulator import SerialEmulator
from rig.sim.world import World

XYZ = tuple[float, float, float]


@dataclass
class _Motion:
    start: XYZ
    target: XYZ
    started_at: float
    deadline: float


@dataclass
class _Deferred:
    """A reply (and maybe an effect) held back until a time and, optionally, the end of motion."""

    deadline: float
    after_motion: bool
    lines: list[str]
    action: Callable[[], None] | None = None


class GcodeArmEmulator(SerialEmulator):
    """Emulated uArm Swift Pro / DexArm on a pty; `port` is the path the driver opens."""

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
    ) -> None:
        self.dialect = codec.dialect(config.dialect)
        super().__init__(name=f"arm-{self.dialect.name}", clock=clock, faults=faults)
        self.config = config
        self.tray = tray
        self.world = world
        safe = config.safe_pose
        self._xyz: XYZ = (
            world.snapshot().arm_xyz_mm if world is not None else (safe.x_mm, safe.y_mm, safe.z_mm)
        )
        self._motion: _Motion | None = None
        self._deferred: list[_Deferred] = []
        self.suction_on = False
        self._handlers = self._handler_table()

    # ------------------------------------------------------------------ dispatch table
    def _handler_table(self) -> list[tuple[Command, bool, Callable[[Command], None]]]:
        """(template, match its parameters too, handler): built from the dialect's data."""
        d = self.dialect
        entries: list[tuple[str, bool, Callable[[Command], None]]] = [
            (d.move.format(x=0, y=0, z=0, f=1), False, self._on_move),
            (d.suction_on, True, lambda c: self._on_suction(c, True)),
            (d.suction_off, True, lambda c: self._on_suction(c, False)),
            (d.position_query, False, self._on_position),
            (d.dwell.format(ms=0), False, self._on_dwell),
            (d.info_query, False, self._on_info),
        ]
        entries += [
            (alias, True, lambda c: self._on_suction(c, False)) for alias in d.suction_off_aliases
        ]
        entries += [(command, True, self._on_ok) for command in d.setup]
        if d.home is not None:
            entries.append((d.home, False, self._on_home))
        if d.wait_command is not None:
            entries.append((d.wait_command, False, self._on_wait))
        if d.moving_query is not None:
            entries.append((d.moving_query, False, self._on_moving))
        table = []
        for text, match_params, handler in entries:
            template = codec.parse_command(d, text)
            assert template is not None, f"dialect {d.name}: cannot parse its own {text!r}"
            table.append((template, match_params, handler))
        return table

    def _handler(self, command: Command) -> Callable[[Command], None] | None:
        for template, match_params, handler in self._handlers:
            if template.code != command.code:
                continue
            if match_params and any(
                command.params.get(key) != value for key, value in template.params.items()
            ):
                continue
            return handler
        return None

    # ------------------------------------------------------------------ lifecycle
    def on_start(self) -> None:
        """Send the firmware's power-on banner."""
        for line in self.dialect.banner:
            self.send_raw(line.encode("ascii") + b"\r\n")

    @property
    def xyz_mm(self) -> XYZ:
        """The tool position now (interpolated while moving)."""
        return self._current_xyz()

    # ------------------------------------------------------------------ serving
    def handle_line(self, line: str) -> None:
        """Answer one command as the firmware would."""
        self._advance()
        command = codec.parse_command(self.dialect, line)
        seq = command.seq if command is not None else None
        fault = self.take_fault()
        if fault is not None and fault.kind in ("error", "alarm"):
            code = fault.code if fault.code is not None else self.dialect.fault_code
            self._reply_error(seq, code, "operation failed (injected fault)")
            return
        handler = self._handler(command) if command is not None else None
        if command is None or handler is None:
            self._reply_error(
                seq, self.dialect.unknown_command_code, f'Unknown command: "{line.strip()}"'
            )
            return
        handler(command)
        self._flush_deferred()

    def tick(self) -> None:
        """Complete motions whose time is up and send the replies that waited for them."""
        self._advance()

    def next_tick_s(self) -> float:
        """Wake when the motion ends or a held-back reply is due, not up to a tick later.

        The firmware answers the moment a move completes; a fixed 20 ms tick made every arm
        reply ~10 ms late on average, which at time scale 1 showed up as orchestration overhead.
        """
        motion_ends = self._motion.deadline if self._motion is not None else None
        due: list[float] = [] if motion_ends is None else [motion_ends]
        head = self._deferred[0] if self._deferred else None
        # a reply held until the motion ends is due then, however early its own deadline
        if head is not None and not (head.after_motion and motion_ends is not None):
            due.append(head.deadline)
        if not due:
            return 0.02
        return min(0.02, max(0.001, min(due) - self.clock.now()))

    def _advance(self) -> None:
        self._current_xyz()
        self._flush_deferred()

    def _current_xyz(self) -> XYZ:
        motion = self._motion
        if motion is None:
            return self._xyz
        now = self.clock.now()
        if now >= motion.deadline:
            self._motion = None
            self._xyz = motion.target
            if self.world is not None:
                self.world.set_arm_xyz(motion.target)
            return self._xyz
        # linear in time is close enough for a position report taken mid-move
        fraction = (now - motion.started_at) / (motion.deadline - motion.started_at)
        return tuple(  # type: ignore[return-value]
            a + (b - a) * fraction for a, b in zip(motion.start, motion.target, strict=True)
        )

    def _flush_deferred(self) -> None:
        now = self.clock.now()
        # replies go out in command order: stop at the first one still waiting
        while self._deferred:
            head = self._deferred[0]
            if now < head.deadline or (head.after_motion and self._motion is not None):
                return
            self._deferred.pop(0)
            if head.action is not None:
                head.action()
            self._send(head.lines)

    def _send(self, lines: list[str]) -> None:
        # one write for the whole reply, so an injected fault loses or garbles all of it
        self.send_line("\r\n".join(lines))

    def _reply_ok(self, seq: int | None, data: str = "") -> None:
        self._send(codec.format_reply_ok(self.dialect, seq, data))

    def _reply_error(self, seq: int | None, code: int, message: str) -> None:
        self._send(codec.format_reply_error(self.dialect, seq, code, message))

    def _defer(
        self,
        seq: int | None,
        *,
        deadline: float | None = None,
        after_motion: bool = True,
        action: Callable[[], None] | None = None,
    ) -> None:
        self._deferred.append(
            _Deferred(
                deadline=self.clock.now() if deadline is None else deadline,
                after_motion=after_motion,
                lines=codec.format_reply_ok(self.dialect, seq),
                action=action,
            )
        )

    # ------------------------------------------------------------------ motion
    def reachable(self, xyz: XYZ) -> bool:
        """Whether the arm's linkage can reach this point (an annulus in XY, a band in Z)."""
        x, y, z = xyz
        r_min, r_max = self.dialect.reach_radius_mm
        z_min, z_max = self.dialect.reach_z_mm
        return r_min <= math.hypot(x, y) <= r_max and z_min <= z <= z_max

    def _start_motion(self, target: XYZ, speed_mm_per_s: float, action: str) -> None:
        start = self._current_xyz()
        distance = math.dist(start, target)
        duration = trapezoid_duration_s(distance, speed_mm_per_s, self.config.accel_mm_per_s2)
        deadline = self.clock.record(self.name, f"{action} {distance:.1f} mm", duration)
        self._motion = _Motion(start, target, self.clock.now(), deadline)
        self._current_xyz()  # with time scale 0 the motion is over at once

    def _on_move(self, command: Command) -> None:
        here = self._current_xyz()
        params = command.params
        target = (
            params.get("X", here[0]),
            params.get("Y", here[1]),
            params.get("Z", here[2]),
        )
        feed = params.get("F", self.config.speed_mm_per_s * 60.0)
        if not all(math.isfinite(v) for v in (*target, feed)) or feed <= 0:
            self._reply_error(command.seq, self.dialect.parameter_code, "Parameter error")
            return
        if not self.reachable(target):
            self._reply_error(
                command.seq,
                self.dialect.unreachable_code,
                "Out of range: X{:.2f} Y{:.2f} Z{:.2f}".format(*target),
            )
            return
        self._start_motion(target, feed / 60.0, "move")
        # like the firmware, acknowledge once queued; completion is for the host to ask about
        self._reply_ok(command.seq)

    def _on_home(self, command: Command) -> None:
        assert self.dialect.home_pose_mm is not None
        self._start_motion(self.dialect.home_pose_mm, self.config.speed_mm_per_s, "home")
        self._defer(command.seq)  # homing blocks: its ok comes once the arm is there

    def _on_wait(self, command: Command) -> None:
        self._defer(command.seq)

    def _on_dwell(self, command: Command) -> None:
        duration_s = max(0.0, command.params.get("P", 0.0)) / 1000.0
        self._defer(command.seq, deadline=self.clock.record(self.name, "dwell", duration_s))

    def _on_moving(self, command: Command) -> None:
        self._current_xyz()
        self._reply_ok(command.seq, "V1" if self._motion is not None else "V0")

    def _on_position(self, command: Command) -> None:
        xyz = tuple(round(v, 2) for v in self._current_xyz())
        self._reply_ok(command.seq, codec.format_position(self.dialect, xyz))  # type: ignore[arg-type]

    def _on_info(self, command: Command) -> None:
        self._reply_ok(command.seq, self.dialect.info_reply)

    def _on_ok(self, command: Command) -> None:
        self._reply_ok(command.seq)

    def _on_suction(self, command: Command, on: bool) -> None:
        # the pump switches once queued motion is done, where the cup then is
        self._defer(command.seq, action=lambda: self._switch_suction(on))

    # ------------------------------------------------------------------ suction and the world
    def _switch_suction(self, on: bool) -> None:
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

    def location(self, xyz: XYZ, *, taking: bool) -> tuple[str, int | None] | None:
        """Which surface point the cup is at: turntable, a tray slot, or the flip chute."""
        station = self.config.flip_station
        # coins go into the chute at its drop point and come out, turned over, at its pickup
        chute = station.pickup if taking else station.drop
        candidates: list[tuple[str, int | None, Pose]] = [
            ("turntable", None, self.config.turntable_pose),
            ("chute", None, chute),
        ]
        candidates += [("tray", slot, self.tray.slot_pose(slot)) for slot in range(self.tray.slots)]
        tolerance = self.location_tolerance_mm
        for where, slot, pose in candidates:
            if all(
                abs(a - b) <= tolerance
                for a, b in zip(xyz, (pose.x_mm, pose.y_mm, pose.z_mm), strict=True)
            ):
                return where, slot
        return None
