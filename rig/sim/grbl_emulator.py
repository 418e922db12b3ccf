"""A GRBL 1.1h controller behind a pty, modelled on the firmware's sources, not on any driver.

Time and order (protocol.c, serial.c): real-time bytes are picked off as they arrive; a reset
(0x18) stops the steppers at once (motion_control.c mc_reset), the others set flags. Lines wait
in the serial buffer. The main loop gets to new input `service_latency_s` after its first byte
(interface.md: a report within ~5-20 ms) and takes all that came meanwhile in one pass, in
GRBL's order: at each line end the pending flags are serviced (protocol_exec_rt_system: alarm,
reset, status report, feed hold, cycle start, cycle stop), then the line runs; with the buffer
empty, queued motion starts (protocol_auto_cycle_start) and the flags are serviced again. So a
`?` that comes with a `!` reports the state before the hold, and a `?` that comes with a motion
line reports Idle: the cycle has not started yet.

States: a hold from Run brakes (Hold:1) and then waits (Hold:0); `!` in Idle holds at once
(Hold:0); in Hold:0 GRBL reads no lines (protocol_exec_rt_suspend) until `~` resumes or a reset;
`~` in an idle hold returns to Idle. A reset while moving (Run, Hold:1, Home) raises ALARM:3
(ALARM:6 homing) and the position is lost: GRBL keeps its step count, but the steppers were cut
at speed and the twin's axis coasts on by v²/2a (an assumption: braked like a normal stop, the
motor unpowered). During `$H` only a reset is serviced; after a limit alarm (ALARM:1/2) too.

Beside it: planner and steppers in rig.sim.grbl_motion, the G-code parser in rig.sim.grbl_gcode,
`$` commands in rig.sim.grbl_system, homing in rig.sim.grbl_homing, reports in
rig.sim.grbl_report; docs/fidelity-grbl.md lists each behaviour, its reference and its test.

Faults: lost, late, garbage replies and disconnects come from the base class (on the reply of
the command that drew them); `error` answers `error:N` instead; `alarm` trips a limit halfway
through the next motion (or fails the next homing cycle).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from rig.config import FaultKind, FaultRule, GrblTurntableConfig
from rig.sim.clock import SimClock
from rig.sim.faults import FaultInjector
from rig.sim.grbl_gcode import GcodeState
from rig.sim.grbl_homing import HomingOutcome, home_axes
from rig.sim.grbl_motion import Planner, lround
from rig.sim.grbl_report import ReportCounters, Snapshot, format_coords, status_report
from rig.sim.grbl_system import SystemCommands
from rig.sim.serial_emulator import SerialEmulator
from rig.sim.world import World
from rig.turntable.grbl_codec import (
    CYCLE_START,
    FEED_HOLD,
    SOFT_RESET,
    STATUS_QUERY,
    GcodeSyntaxError,
    axis_index,
    parse_gcode_words,
)
from rig.turntable.grbl_settings import stock_settings

_TRANSPORT_FAULTS: tuple[FaultKind, ...] = ("lost_reply", "late_reply", "garbage", "disconnect")
_FLAGS = {STATUS_QUERY[0]: "status", FEED_HOLD[0]: "hold", CYCLE_START[0]: "start"}
_LINE_BUFFER = 80  # config.h LINE_BUFFER_SIZE: longer lines are refused with error:11


@dataclass
class _Wait:
    """A command holding the main loop: G4/G10/G92 waiting for the planner, or `$H` running."""

    kind: str  # "sync" or "home"
    fault: FaultRule | None
    dwell_s: float = 0.0
    until: float | None = None  # wall time the dwell or homing cycle ends
    homing: HomingOutcome | None = None
    alarm_code: int | None = None  # a homing cycle that fails


class GrblEmulator(SystemCommands, SerialEmulator):
    """Emulated GRBL 1.1h on a pty, with its own `$$` settings (stock unless given)."""

    realtime_bytes = frozenset(b[0] for b in (STATUS_QUERY, FEED_HOLD, CYCLE_START, SOFT_RESET))

    def __init__(
        self,
        *,
        axis: str = "X",
        units_per_deg: float = 1.0,
        tilt_axis: str | None = None,
        tilt_units_per_deg: float = 1.0,
        settings: Mapping[int, float] | None = None,
        world: World | None = None,
        clock: SimClock | None = None,
        faults: FaultInjector | None = None,
        version: str = "1.1h",
        name: str = "grbl",
        service_latency_s: float = 0.005,
    ) -> None:
        super().__init__(name=name, clock=clock, faults=faults)
        if tilt_axis is not None and axis_index(tilt_axis) == axis_index(axis):
            raise ValueError(f"tilt axis {tilt_axis} must differ from turntable axis {axis}")
        self.axis, self.tilt_axis = axis, tilt_axis
        self.units_per_deg, self.tilt_units_per_deg = units_per_deg, tilt_units_per_deg
        self.world, self.version = world, version
        self.service_latency_s = service_latency_s
        self._lock = threading.RLock()
        # an Uno drives X, Y, Z; forks with A/B/C report as many axes as they drive
        used = [axis_index(axis)] + ([axis_index(tilt_axis)] if tilt_axis else [])
        self.n_axes = max(3, max(used) + 1)
        self._driven = sorted(used)
        self.settings = stock_settings(self.n_axes)
        for number, value in (settings or {}).items():
            if number not in self.settings:
                raise ValueError(f"GRBL has no setting ${number} on a {self.n_axes}-axis build")
            self.settings[number] = float(value)
        self.planner = Planner(self.n_axes, self.clock, name)
        self.parser = GcodeState(self.n_axes)
        self._origin = [0.0] * self.n_axes  # physical − machine position, units
        # config.h HOMING_INIT_LOCK: with homing enabled GRBL powers up locked in alarm
        self.state = "Alarm" if int(self.settings[22]) else "Idle"
        self._hold_complete = False
        self._flags: list[tuple[float, str]] = []  # (visible at, flag)
        self._rx: deque[tuple[float, str]] = deque()  # (visible at, line)
        self._reset_at: float | None = None
        self._pass_at = 0.0  # when the main loop next takes the input that has arrived
        self._alarm: int | None = None  # raised, to be reported at the next checkpoint
        self._critical = False
        self._soft_limit = False
        self._cycle_stop = False
        self._wait: _Wait | None = None
        self._homing_alarm: int | None = None  # an injected homing failure for the next `$H`
        self._counters = ReportCounters()
        self.status_queries = 0  # `?` bytes received: how often a driver polls

    @classmethod
    def for_config(
        cls,
        config: GrblTurntableConfig,
        *,
        world: World | None = None,
        clock: SimClock | None = None,
        faults: FaultInjector | None = None,
    ) -> GrblEmulator:
        """The controller a config's wiring describes, with the `$$` its emulate section flashed.

        Only the axes and their scale (which axis turns what) come from the driver's section;
        rates, accelerations and homing are the controller's own settings (stock GRBL 1.1h
        unless `emulate.settings` gives them), as on a real board.
        """
        tilt = config.tilt
        return cls(
            axis=config.axis,
            units_per_deg=config.units_per_deg,
            tilt_axis=tilt.axis if tilt else None,
            tilt_units_per_deg=tilt.units_per_deg if tilt else 1.0,
            settings=config.emulate.settings if config.emulate is not None else None,
            world=world,
            clock=clock,
            faults=faults,
        )

    # ------------------------------------------------------------------ views for tests
    def machine_position(self) -> tuple[float, ...]:
        """What GRBL counts now: step counters over $10x, in axis units."""
        with self._lock:
            return tuple(self._machine(self.clock.now()))

    def work_position(self) -> tuple[float, ...]:
        """Machine position minus the work coordinate offset, in axis units."""
        with self._lock:
            machine, wco = self.machine_position(), self.parser.wco()
            return tuple(m - o for m, o in zip(machine, wco, strict=True))

    def physical_position(self) -> tuple[float, ...]:
        """Where the axes really are (units): the machine position unless steps were lost."""
        with self._lock:
            return tuple(m + o for m, o in zip(self.machine_position(), self._origin, strict=True))

    # ------------------------------------------------------------------ serial input
    def on_start(self) -> None:
        """Power-up: print the banner (and the unlock hint when homing locks the machine)."""
        self._send_banner()

    def handle_realtime(self, byte: int) -> None:
        """A real-time byte, as serial.c's receive interrupt takes it: reset acts, others flag."""
        with self._lock:
            now = self.clock.now()
            self.status_queries += byte == STATUS_QUERY[0]
            if byte == SOFT_RESET[0]:
                self._request_reset(now)
            else:
                self._flags.append((self._next_pass(now), _FLAGS[byte]))

    def handle_line(self, line: str) -> None:
        """A received line waits in the serial buffer until the main loop reads it."""
        with self._lock:
            self._rx.append((self._next_pass(self.clock.now()), line))

    def _next_pass(self, now: float) -> float:
        """When the main loop takes input arriving now: with whatever came since the last pass."""
        if self._pass_at <= now:
            self._pass_at = now + self.service_latency_s
        return self._pass_at

    def tick(self) -> None:
        """One turn of GRBL's main loop (called by the serving loop)."""
        with self._lock:
            self._main(self.clock.now())

    def next_tick_s(self) -> float:
        """Wake up when queued input becomes visible or the running action ends."""
        with self._lock:
            now = self.clock.now()
            due = [t for t, _ in self._flags] + [t for t, _ in self._rx]
            if self._reset_at is not None:
                due.append(self._reset_at)
            if self._wait is not None and self._wait.until is not None:
                due.append(self._wait.until)
            event = self.planner.next_event_s(now)
            if event is not None:
                due.append(now + event)
            soonest = min(due, default=now + 0.02) - now
            return min(0.02, max(0.001, soonest))

    # ------------------------------------------------------------------ the main loop
    def _main(self, now: float) -> None:
        self._run_steppers(now)
        if self._reset_at is not None:
            if now >= self._reset_at:
                self._abort()
            return
        if self._wait is not None and self._wait.kind == "home":
            self._run_homing(now)  # limits.c: only a reset is looked at during the cycle
            return
        if self._critical:
            return  # protocol.c: a limit alarm blocks everything but a reset
        self._checkpoint(now)
        while not self._suspended() and self._reset_at is None and not self._critical:
            if self._wait is not None and (self._wait.kind == "home" or not self._waited(now)):
                return
            if not self._rx or self._rx[0][0] > now:
                break
            self._checkpoint(now)  # protocol_main_loop: real-time check point at each line end
            if self._suspended() or self._critical:
                return
            self._execute(self._rx.popleft()[1], now)
        if self._wait is None and not self._suspended() and self.planner.has_blocks():
            self._flags.append((now, "start"))  # protocol_auto_cycle_start
        self._checkpoint(now)

    def _checkpoint(self, now: float) -> None:
        """protocol_exec_rt_system: service the flags visible now, in GRBL's order."""
        if self._alarm is not None:
            self.state = "Alarm"
            self.send_raw(f"ALARM:{self._alarm}\r\n".encode("ascii"))
            if self._alarm in (1, 2):
                self.send_raw(b"[MSG:Reset to continue]\r\n")
                self._critical = True
            self._alarm = None
            if self._critical:
                return
        flags = {flag for at, flag in self._flags if at <= now}
        self._flags = [(at, flag) for at, flag in self._flags if at > now]
        if "status" in flags:
            fault = self.faults.next_fault(allowed=_TRANSPORT_FAULTS)
            self._reply(self._status_report(now), fault)
        if "hold" in flags and self.state not in ("Alarm", "Check", "Sleep"):
            if self.state == "Run":
                self.planner.hold(now)  # brake: Hold:1 until the steppers are at rest
            elif self.state == "Idle":
                self._hold_complete = True  # nothing moves: the hold is complete at once
            self.state = "Hold"
        resumable = self.state == "Idle" or (self.state == "Hold" and self._hold_complete)
        if "start" in flags and "hold" not in flags and resumable:
            self._hold_complete = False
            if self.planner.has_blocks():
                self.planner.start(now)
                self.state = "Run"
            else:
                self.state = "Idle"
        if self._cycle_stop:
            self._cycle_stop = False
            if self.state == "Hold":
                self._hold_complete = True
                if self._soft_limit:
                    self._soft_limit_alarm()
            elif self.state in ("Run", "Check"):
                self.state = "Idle"

    def _run_steppers(self, now: float) -> None:
        """The stepper interrupt: motion up to now, a hold coming to rest, a tripped limit."""
        held, alarm = self.planner.advance(now)
        if alarm is not None:
            self._kill(now)
            self._alarm = alarm
            return
        if held or (self.state == "Run" and not self.planner.has_blocks()):
            self._cycle_stop = True
        self._update_world(now)

    def _suspended(self) -> bool:
        """protocol_exec_rt_suspend: a completed hold reads no lines until resumed or reset."""
        return self.state == "Hold" and self._hold_complete

    # ------------------------------------------------------------------ reset
    def _request_reset(self, now: float) -> None:
        """mc_reset: stop the steppers now if moving (position lost), abort at the next pass."""
        if self._reset_at is not None:
            return
        braking = self.state == "Hold" and not self._hold_complete
        if self.state in ("Run", "Home") or braking:
            self._alarm = 6 if self.state == "Home" else 3
            self._kill(now)
        self._reset_at = self._next_pass(now)

    def _kill(self, now: float) -> None:
        """Cut the steppers at speed: GRBL keeps its count; the twin's axis coasts on."""
        speed, unit = self.planner.kill(now)
        if speed > 0:
            accel = min(self.settings[120 + i] / abs(u) for i, u in enumerate(unit) if u)
            coast = speed * speed / (2.0 * accel)
            self._origin = [o + u * coast for o, u in zip(self._origin, unit, strict=True)]
        self._update_world(now)

    def _abort(self) -> None:
        """main.c after a reset: report the alarm, re-initialise, print the banner."""
        if self._alarm is not None:
            self.send_raw(f"ALARM:{self._alarm}\r\n".encode("ascii"))
            self.state = "Alarm"
            self._alarm = None
        if self.state in ("Alarm", "Sleep"):
            self.state = "Alarm"
        else:
            self.state = "Idle"
        self.planner.sync()
        self.parser.reset(self._machine(self.clock.now()))
        self._rx.clear()  # serial_reset_read_buffer: lines sent before the banner are lost
        self._flags.clear()  # "a soft-reset clears the last status report query" (interface.md)
        self._wait, self._reset_at = None, None
        self._critical = self._soft_limit = self._cycle_stop = self._hold_complete = False
        self._counters.reset()
        self._send_banner()

    def _send_banner(self) -> None:
        # the banner bypasses fault injection: faults target replies to commands
        self.send_raw(f"\r\nGrbl {self.version} ['$' for help]\r\n".encode("ascii"))
        if self.state == "Alarm":
            self.send_raw(b"[MSG:'$H'|'$X' to unlock]\r\n")

    # ------------------------------------------------------------------ lines
    def _execute(self, line: str, now: float) -> None:
        """One line from the serial buffer (protocol_main_loop), with its injected fault."""
        # protocol.c drops spaces and control characters and upper-cases before parsing
        text = "".join(c for c in line if c > " ").upper()
        if len(text) >= _LINE_BUFFER:
            self._reply("error:11")
            return
        protocol: tuple[FaultKind, ...] = ("error",)
        if text == "$H" or (text[:1] not in ("$", "") and any(c in text for c in "XYZABC")):
            protocol = ("error", "alarm")
        fault = self.faults.next_fault(allowed=(*_TRANSPORT_FAULTS, *protocol))
        reply_fault = fault if fault is not None and fault.kind in _TRANSPORT_FAULTS else None
        if fault is not None and fault.kind == "error":
            self._reply(f"error:{fault.code or 20}")
            return
        alarm = (fault.code or 1) if fault is not None and fault.kind == "alarm" else None
        if not text:
            self._reply("ok", reply_fault)
        elif text.startswith("$"):
            if text == "$H" and alarm is not None:
                self._homing_alarm = alarm
            self._system(text, reply_fault, now)
        elif self.state in ("Alarm", "Jog"):
            self._reply("error:9", reply_fault)  # G-code is locked out until $X, $H or a reset
        else:
            self._gcode(text, reply_fault, alarm, now)

    def _gcode(self, text: str, fault: FaultRule | None, alarm: int | None, now: float) -> None:
        try:
            outcome = self.parser.execute(parse_gcode_words(text))
        except GcodeSyntaxError as exc:
            self._reply(f"error:{exc.code}", fault)
            return
        if outcome.error:
            self._reply(f"error:{outcome.error}", fault)
            return
        if outcome.sync:
            self._counters.wco = 0  # system_flag_wco_change: the next report carries the new WCO
        if outcome.target is not None and self.state != "Check":
            # system_check_travel_limits: machine space is [−$130, 0] on every axis
            beyond = any(t > 0 or t < -self.settings[130 + i] for i, t in enumerate(outcome.target))
            if int(self.settings[20]) and beyond:
                self._soft_limit_violation(now)  # no `ok`: the line never completes
                return
            self.planner.plan(outcome.target, outcome.rate, self.settings, alarm)
        if outcome.dwell_s is not None and self.state != "Check":
            self._wait = _Wait("sync", fault, dwell_s=outcome.dwell_s)
            self._flags.append((now, "start"))  # protocol_buffer_synchronize starts the cycle
        elif outcome.sync and self.planner.has_blocks():  # FORCE_BUFFER_SYNC_* (config.h)
            self._wait = _Wait("sync", fault)
            self._flags.append((now, "start"))
        else:
            self._reply("ok", fault)

    def _waited(self, now: float) -> bool:
        """Whether the command holding the main loop has finished (and answered)."""
        wait = self._wait
        assert wait is not None and wait.kind == "sync"
        if self.planner.has_blocks() or self.state == "Run":
            return False  # protocol_buffer_synchronize
        if wait.until is None and wait.dwell_s > 0:
            wait.until = self.clock.record(self.name, "dwell", wait.dwell_s)
            return False
        if wait.until is not None and now < wait.until:
            return False
        self._wait = None
        self._reply("ok", wait.fault)
        return True

    # ------------------------------------------------------------------ limits and homing
    def _soft_limit_violation(self, now: float) -> None:
        """limits_soft_check: hold a running cycle to rest, then ALARM:2 (critical)."""
        if self.state == "Run":
            self._soft_limit = True
            self._flags.append((now, "hold"))
        else:
            self._soft_limit_alarm()

    def _soft_limit_alarm(self) -> None:
        self.planner.sync()
        self._soft_limit = False
        self._alarm = 2

    def _start_homing(self, fault: FaultRule | None, now: float) -> None:
        """`$H`: the whole cycle runs on the sim clock; its `ok` comes when it has finished."""
        physical = self.physical_position()
        outcome = home_axes(self._driven, dict(enumerate(physical)), self.settings)
        alarm = self._homing_alarm or outcome.alarm_code
        self._homing_alarm = None
        until = self.clock.record(self.name, "home", outcome.duration_s)
        self._wait = _Wait("home", fault, until=until, homing=outcome, alarm_code=alarm)
        self.state = "Home"

    def _run_homing(self, now: float) -> None:
        wait = self._wait
        assert wait is not None and wait.until is not None
        if now < wait.until:
            return
        outcome = wait.homing
        self._wait = None
        if wait.alarm_code is not None or outcome is None:
            self.state = "Alarm"
            self._alarm = wait.alarm_code or 9
            self._reset_at = now  # limits_go_home: mc_reset, so the alarm is followed by a banner
            return
        for i, machine in outcome.machine.items():
            steps = lround(machine * self.settings[100 + i])
            self.planner.position[i] = steps
            self._origin[i] = outcome.physical[i] - steps / self.settings[100 + i]
        self.planner.sync()
        self.parser.reset(self._machine(now))  # gc_sync_position
        self.parser.g92 = [0.0] * self.n_axes
        self.state = "Idle"
        self._update_world(now)
        self._reply("ok", wait.fault)

    # ------------------------------------------------------------------ output
    def _reply(self, text: str, fault: FaultRule | None = None) -> None:
        """Send one line; a transport fault drawn by its command applies to it."""
        self._pending_fault = fault
        self.send_line(text)

    def _coords(self, values: list[float]) -> str:
        return format_coords(values, self.settings)

    def _machine(self, now: float) -> list[float]:
        steps = self.planner.steps_now(now)
        return [s / self.settings[100 + i] for i, s in enumerate(steps)]

    def _update_world(self, now: float) -> None:
        if self.world is None:
            return
        physical = [m + o for m, o in zip(self._machine(now), self._origin, strict=True)]
        self.world.set_turntable_deg(physical[axis_index(self.axis)] / self.units_per_deg)
        if self.tilt_axis is not None:
            tilt = physical[axis_index(self.tilt_axis)] / self.tilt_units_per_deg
            self.world.set_tilt_deg(tilt)

    def _status_report(self, now: float) -> str:
        state = self.state
        if state == "Hold":
            state = f"Hold:{0 if self._hold_complete else 1}"
        moving = self.state in ("Run", "Hold", "Home", "Jog")
        snap = Snapshot(
            state=state,
            position=self._machine(now),
            wco=self.parser.wco(),
            rate_units_per_min=self.planner.speed_now(now) if moving else 0.0,
            moving=moving,
            blocks=len(self.planner.blocks) + (self.planner.active is not None),
            queued_bytes=sum(len(line) + 1 for _, line in self._rx),
        )
        return status_report(snap, self.settings, self._counters)
