"""A GRBL 1.1 controller behind a pty: the real GrblTurntable driver cannot tell it from hardware.

What it models: the start-up banner, `ok`/`error:N` per line, real-time `?` status reports
(Run until the SimClock deadline of the motion, then Idle), G0/G1 in G90/G91, feed, G10 L20 and
G92 work offsets, `$X`, `$H`, `$$`, `$G`, `$#`, `$I`, `$N=V`, feed hold `!` / resume `~`, and
soft reset 0x18 (which leaves the alarm state ALARM:3 when it interrupts a motion, like GRBL).
Coordinates are machine units: degrees times `units_per_deg`.

Faults: transport faults (lost, late, garbage reply, disconnect) come from the base class;
`error` replies `error:N` instead of executing the line; `alarm` fires `ALARM:N` halfway through
the next motion (or homing cycle) and locks the controller until `$X`, `$H` or a reset.
"""

from __future__ import annotations

import threading
from collections import deque

from rig.config import FaultKind, FaultRule, GrblTurntableConfig
from rig.sim.clock import SimClock
from rig.sim.faults import FaultInjector
from rig.sim.grbl_motion import Motion
from rig.sim.serial_emulator import SerialEmulator
from rig.sim.world import World
from rig.turntable.grbl_codec import (
    AXES,
    CYCLE_START,
    FEED_HOLD,
    SOFT_RESET,
    STATUS_QUERY,
    GcodeSyntaxError,
    Status,
    axis_index,
    format_number,
    format_status,
    parse_gcode_words,
)

_TRANSPORT_FAULTS: tuple[FaultKind, ...] = ("lost_reply", "late_reply", "garbage", "disconnect")
_UNLOCK_HINT = "[MSG:'$H'|'$X' to unlock]"
# GRBL sends WCO in the first report after a reset or an offset change, then every N reports
_WCO_REFRESH_IDLE = 10
_WCO_REFRESH_BUSY = 30


class GrblEmulator(SerialEmulator):
    """Emulated GRBL 1.1 turntable controller (optionally with a tilt axis) on a pty."""

    realtime_bytes = frozenset(b[0] for b in (STATUS_QUERY, FEED_HOLD, CYCLE_START, SOFT_RESET))

    def __init__(
        self,
        *,
        axis: str = "X",
        units_per_deg: float = 1.0,
        max_speed_deg_per_s: float = 90.0,
        accel_deg_per_s2: float = 180.0,
        tilt_axis: str | None = None,
        tilt_units_per_deg: float = 1.0,
        tilt_max_speed_deg_per_s: float = 30.0,
        homing: bool = False,
        world: World | None = None,
        clock: SimClock | None = None,
        faults: FaultInjector | None = None,
        version: str = "1.1h",
        name: str = "grbl",
    ) -> None:
        super().__init__(name=name, clock=clock, faults=faults)
        if tilt_axis is not None and axis_index(tilt_axis) == axis_index(axis):
            raise ValueError(f"tilt axis {tilt_axis} must differ from turntable axis {axis}")
        self.axis = axis
        self.tilt_axis = tilt_axis
        self.units_per_deg = units_per_deg
        self.tilt_units_per_deg = tilt_units_per_deg
        self.world = world
        self.version = version
        self._lock = threading.RLock()
        # GRBL reports X, Y, Z; forks with A/B/C axes report as many as they drive
        used = [axis_index(axis)] + ([axis_index(tilt_axis)] if tilt_axis else [])
        self._n_axes = max(3, max(used) + 1)
        self._mpos = [0.0] * self._n_axes
        self._g54 = [0.0] * self._n_axes
        self._g92 = [0.0] * self._n_axes
        turntable_rate = max_speed_deg_per_s * 60.0 * units_per_deg
        tilt_rate = tilt_max_speed_deg_per_s * 60.0 * tilt_units_per_deg
        self.settings: dict[int, float] = {
            0: 10, 1: 25, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 10: 1, 11: 0.010, 12: 0.002, 13: 0,
            20: 0, 21: 0, 22: 1 if homing else 0, 23: 0, 24: 25.0, 25: 500.0, 26: 250,
            27: 1.0, 30: 1000, 31: 0, 32: 0,
        }  # fmt: skip
        for index in range(self._n_axes):
            letter = AXES[index]
            is_tilt = letter == tilt_axis
            upd = tilt_units_per_deg if is_tilt else units_per_deg
            self.settings[100 + index] = 3200.0 / 360.0 / upd  # steps/unit: 1/16 µstep motor
            self.settings[110 + index] = tilt_rate if is_tilt else turntable_rate
            self.settings[120 + index] = accel_deg_per_s2 * upd
            self.settings[130 + index] = 1000.0
        self.state = "Alarm" if homing else "Idle"
        self._absolute = True
        self._motion_mode = 0
        self._feed = 0.0
        self._planner: deque[Motion] = deque()
        self._wco_counter = 0

    @classmethod
    def for_config(
        cls,
        config: GrblTurntableConfig,
        *,
        world: World | None = None,
        clock: SimClock | None = None,
        faults: FaultInjector | None = None,
    ) -> GrblEmulator:
        """An emulator matching a turntable config (axes, scaling, speed and acceleration)."""
        tilt = config.tilt
        return cls(
            axis=config.axis,
            units_per_deg=config.units_per_deg,
            max_speed_deg_per_s=config.limits.max_speed_deg_per_s,
            accel_deg_per_s2=config.limits.accel_deg_per_s2,
            tilt_axis=tilt.axis if tilt else None,
            tilt_units_per_deg=tilt.units_per_deg if tilt else 1.0,
            tilt_max_speed_deg_per_s=tilt.speed_deg_per_s if tilt else 30.0,
            homing=config.homing,
            world=world,
            clock=clock,
            faults=faults,
        )

    # ------------------------------------------------------------------ views for tests
    def machine_position(self) -> tuple[float, ...]:
        """Current machine position in axis units (interpolated while moving)."""
        with self._lock:
            self._advance()
            return tuple(self._current_position())

    def work_position(self) -> tuple[float, ...]:
        """Current work position (MPos - WCO) in axis units."""
        with self._lock:
            return tuple(m - o for m, o in zip(self.machine_position(), self._wco(), strict=True))

    def turntable_deg(self) -> float:
        """The physical (machine) turntable angle in degrees."""
        return self.machine_position()[axis_index(self.axis)] / self.units_per_deg

    # ------------------------------------------------------------------ lifecycle hooks
    def on_start(self) -> None:
        """Power-up: print the banner (and the unlock hint when homing locks the machine)."""
        self._send_banner()

    def tick(self) -> None:
        """Advance motions against the SimClock (called by the serving loop)."""
        with self._lock:
            self._advance()

    # ------------------------------------------------------------------ real-time bytes
    def handle_realtime(self, byte: int) -> None:
        """Act on `?`, `!`, `~` or 0x18 at once, as GRBL does outside its line buffer."""
        with self._lock:
            self._advance()
            if byte == STATUS_QUERY[0]:
                self._draw_fault(allowed=())
                self.send_line(self._status_report())
            elif byte == FEED_HOLD[0]:
                motion = self._planner[0] if self._planner else None
                if self.state == "Run" and motion is not None and motion.start is not None:
                    motion.held_at = self.clock.now()
                    self.state = "Hold"
            elif byte == CYCLE_START[0]:
                motion = self._planner[0] if self._planner else None
                if self.state == "Hold" and motion is not None and motion.held_at is not None:
                    paused = self.clock.now() - motion.held_at
                    motion.started_at += paused
                    motion.deadline += paused
                    motion.held_at = None
                    self.state = "Run"
            elif byte == SOFT_RESET[0]:
                self._soft_reset()

    def _soft_reset(self) -> None:
        # a reset during motion loses steps: GRBL enters ALARM:3 (ALARM:6 while homing); a
        # completed feed hold has stopped the axes, so resetting then keeps the position
        moving = self.state in ("Run", "Home")
        homing = self.state == "Home"
        if self._planner:
            self._mpos = self._current_position()
            self._planner.clear()
            self._update_world()
        self._g92 = [0.0] * self._n_axes  # G92 offsets do not survive a reset; G54 (EEPROM) does
        self._absolute, self._motion_mode, self._feed = True, 0, 0.0
        self._wco_counter = 0
        if moving:
            self.send_raw(f"ALARM:{6 if homing else 3}\r\n".encode("ascii"))
            self.state = "Alarm"
        elif self.state != "Alarm":
            self.state = "Idle"
        self._send_banner()

    def _send_banner(self) -> None:
        # the banner bypasses fault injection: faults target replies to commands
        self.send_raw(f"\r\nGrbl {self.version} ['$' for help]\r\n".encode("ascii"))
        if self.state == "Alarm":
            self.send_raw(f"{_UNLOCK_HINT}\r\n".encode("ascii"))

    # ------------------------------------------------------------------ command lines
    def handle_line(self, line: str) -> None:
        """Execute one command line and answer `ok`, `error:N` (and `ALARM:N` under faults)."""
        text = line.strip()
        with self._lock:
            self._advance()
            if text.startswith("$"):
                self._system_command(text)
            else:
                self._gcode(text)

    def _draw_fault(self, allowed: tuple[FaultKind, ...]) -> FaultRule | None:
        """Draw this command's fault; transport faults are queued on its reply (as take_fault).

        The base class's take_fault draws any kind; filtering here keeps an armed `alarm` for
        the next motion instead of spending it on a status query.
        """
        fault = self.faults.next_fault(allowed=(*_TRANSPORT_FAULTS, *allowed))
        if fault is not None and fault.kind in _TRANSPORT_FAULTS:
            self._pending_fault = fault
            return None
        return fault

    def _system_command(self, text: str) -> None:
        is_homing = text.upper() == "$H"
        fault = self._draw_fault(("error", "alarm") if is_homing else ("error",))
        if fault is not None and fault.kind == "error":
            self.send_line(f"error:{fault.code or 20}")
            return
        command = text[1:].upper()
        if command == "X":
            if self.state == "Alarm":
                self.state = "Idle"
                self.send_line("[MSG:Caution: Unlocked]")
            self.send_line("ok")
        elif command == "H":
            self._home((fault.code or 9) if fault is not None else None)
        elif command == "$":
            for number, value in sorted(self.settings.items()):
                shown = format_number(value, 0 if float(value).is_integer() else 3)
                self.send_line(f"${number}={shown}")
            self.send_line("ok")
        elif command == "G":
            self.send_line(f"[GC:{self._modal_state()}]")
            self.send_line("ok")
        elif command == "#":
            self.send_line(f"[G54:{self._coords(self._g54)}]")
            self.send_line(f"[G92:{self._coords(self._g92)}]")
            self.send_line("[TLO:0.000]")
            self.send_line("ok")
        elif command == "I":
            self.send_line(f"[VER:{self.version}.20190825:]")
            self.send_line("[OPT:V,15,128]")
            self.send_line("ok")
        elif "=" in command:
            self._write_setting(command)
        else:
            self.send_line("error:3")

    def _write_setting(self, command: str) -> None:
        number, _, value = command.partition("=")
        if not number.isdigit() or int(number) not in self.settings:
            self.send_line("error:3")
            return
        try:
            words = parse_gcode_words(f"V{value}")
        except GcodeSyntaxError:
            self.send_line("error:2")
            return
        if len(words) != 1:
            self.send_line("error:2")
            return
        self.settings[int(number)] = words[0][1]
        self.send_line("ok")

    def _home(self, alarm_code: int | None) -> None:
        if not self.settings[22]:
            self.send_line("error:5")
            return
        if self.state not in ("Idle", "Alarm"):
            self.send_line("error:8")
            return
        # GRBL answers $H only when the cycle has finished: the ok waits in _advance
        self.state = "Home"
        motion = Motion(target=[0.0] * self._n_axes, feed_units_per_min=None, homing=True)
        motion.alarm_code = alarm_code
        self._planner.append(motion)
        self._advance()

    def _gcode(self, text: str) -> None:
        try:
            words = parse_gcode_words(text)
        except GcodeSyntaxError as exc:
            self._draw_fault(("error",))
            self.send_line(f"error:{exc.code}")
            return
        axes = {letter: value for letter, value in words if letter in AXES[: self._n_axes]}
        fault = self._draw_fault(("error", "alarm") if axes else ("error",))
        if fault is not None and fault.kind == "error":
            self.send_line(f"error:{fault.code or 20}")
            return
        if self.state == "Alarm":
            self.send_line("error:9")  # G-code is locked out until $X, $H or a reset
            return
        code = self._execute(words, axes, (fault.code or 1) if fault is not None else None)
        if code:
            self.send_line(f"error:{code}")

    def _execute(
        self, words: list[tuple[str, float]], axes: dict[str, float], alarm_code: int | None
    ) -> int:
        """Run one parsed block; return a GRBL error code, or 0 when it sent `ok` itself."""
        letters = [letter for letter, _ in words if letter not in "GM"]
        if len(letters) != len(set(letters)):
            return 25
        values = dict(words)
        g_codes = [value for letter, value in words if letter == "G"]
        offset_mode: str | None = None
        for g in g_codes:
            if g in (0.0, 1.0):
                self._motion_mode = int(g)
            elif g in (90.0, 91.0):
                self._absolute = g == 90.0
            elif g == 10.0:
                if values.get("L") != 20 or values.get("P") not in (0, 1):
                    return 20  # only G10 L20 P1 (set G54 from the current position) is modelled
                offset_mode = "G10"
            elif g == 92.0:
                offset_mode = "G92"
            elif g in (4.0, 17.0, 21.0, 54.0, 94.0):
                pass  # plane, units, coordinate system, feed mode: the only ones a turntable uses
            else:
                return 20
        unknown = [letter for letter in letters if letter not in "FSTNLP" and letter not in axes]
        if unknown:
            return 20
        if "F" in values:
            if values["F"] < 0:
                return 4
            self._feed = values["F"]
        position = self._current_position()
        if offset_mode is not None:
            if not axes:
                return 26
            for letter, value in axes.items():
                i = AXES.index(letter)
                if offset_mode == "G10":
                    self._g54[i] = position[i] - self._g92[i] - value
                else:
                    self._g92[i] = position[i] - self._g54[i] - value
            self._wco_counter = 0  # GRBL reports a changed WCO in the very next status
            self.send_line("ok")
            return 0
        if axes:
            if self._motion_mode == 1 and self._feed <= 0:
                return 22
            # a new block is planned from where the previous one ends, as GRBL's planner does
            base = self._planner[-1].target if self._planner else position
            target = list(base)
            for letter, value in axes.items():
                i = AXES.index(letter)
                wco = self._g54[i] + self._g92[i]
                target[i] = value + wco if self._absolute else base[i] + value
            feed = self._feed if self._motion_mode == 1 else None
            self._planner.append(Motion(target, feed, alarm_code=alarm_code))
        self.send_line("ok")
        self._advance()
        return 0

    # ------------------------------------------------------------------ motion
    def _advance(self) -> None:
        """Start, finish or abort planned motions whose SimClock time has come."""
        while self._planner:
            motion = self._planner[0]
            if motion.start is None:
                self._begin(motion)
            if motion.held_at is not None:
                return
            now = self.clock.now()
            if motion.alarm_code is not None:
                if now >= (motion.started_at + motion.deadline) / 2.0:
                    self._alarm_mid_motion(motion)
                return
            if now < motion.deadline:
                return
            self._mpos = list(motion.target)
            self._planner.popleft()
            self._update_world()
            if motion.homing:
                self._g92 = [0.0] * self._n_axes
                self.send_line("ok")
            if not self._planner and self.state in ("Run", "Home"):
                self.state = "Idle"

    def _begin(self, motion: Motion) -> None:
        motion.start = list(self._mpos)
        duration = motion.duration_s(motion.start, self.settings)
        action = "home" if motion.homing else "move " + self._coords(motion.target)
        motion.deadline = self.clock.record(self.name, action, duration)
        motion.started_at = self.clock.now()
        motion.deadline = max(motion.deadline, motion.started_at)
        if not motion.homing:
            self.state = "Run"

    def _alarm_mid_motion(self, motion: Motion) -> None:
        # a limit switch (or a failed homing cycle) stops the axes halfway and locks GRBL
        assert motion.start is not None and motion.alarm_code is not None
        self._mpos = motion.halfway()
        self._planner.clear()
        self._update_world()
        self.state = "Alarm"
        self.send_raw(f"ALARM:{motion.alarm_code}\r\n".encode("ascii"))
        self.send_raw(b"[MSG:Reset to continue]\r\n")

    def _current_position(self) -> list[float]:
        if not self._planner or self._planner[0].start is None:
            return list(self._mpos)
        motion = self._planner[0]
        return motion.position_at(
            motion.held_at if motion.held_at is not None else self.clock.now()
        )

    def _update_world(self) -> None:
        if self.world is None:
            return
        self.world.set_turntable_deg(self._mpos[axis_index(self.axis)] / self.units_per_deg)
        if self.tilt_axis is not None:
            tilt = self._mpos[axis_index(self.tilt_axis)] / self.tilt_units_per_deg
            self.world.set_tilt_deg(tilt)

    # ------------------------------------------------------------------ reports
    def _wco(self) -> list[float]:
        return [a + b for a, b in zip(self._g54, self._g92, strict=True)]

    def _coords(self, values: list[float]) -> str:
        return ",".join(format_number(v) for v in values)

    def _status_report(self) -> str:
        position = tuple(self._current_position())
        wco = tuple(self._wco())
        report_wco = self._wco_counter == 0
        if report_wco:
            self._wco_counter = _WCO_REFRESH_BUSY if self.state == "Run" else _WCO_REFRESH_IDLE
        else:
            self._wco_counter -= 1
        motion = self._planner[0] if self._planner else None
        moving = self.state == "Run" and motion is not None
        feed = 0.0
        if moving and motion is not None:
            feed = motion.feed_units_per_min or self.settings[110 + axis_index(self.axis)]
        mpos_mode = int(self.settings[10]) & 1
        status = Status(
            state=self.state,
            substate=0 if self.state == "Hold" else None,
            mpos=position if mpos_mode else None,
            wpos=None if mpos_mode else tuple(m - o for m, o in zip(position, wco, strict=True)),
            wco=wco if report_wco else None,
            feed=round(feed),
            spindle=0.0,
        )
        return format_status(status)

    def _modal_state(self) -> str:
        motion = f"G{self._motion_mode}"
        distance = "G90" if self._absolute else "G91"
        return f"{motion} G54 G17 G21 {distance} G94 M5 M9 T0 F{format_number(self._feed, 0)} S0"
