"""GRBL 1.1 turntable driver (Arduino + stepper) over serial G-code, with an optional tilt axis.

Protocol notes that shape this class:
- GRBL answers every command line with exactly one `ok` or `error:N`, in order; real-time bytes
  (`?`, `!`, `~`, 0x18) get no `ok`. A status report `<…>` is self-describing, so a lost status
  reply is always safe to ask again; a motion line is not (it would move twice), so after a lost
  `ok` the driver asks where the axis is before deciding to resend.
- A timed-out line may still be answered later. The driver counts such owed replies and, before
  its next operation, drains stragglers and re-synchronises with a `$G` handshake.
- Motion completion is found by polling `?` every `poll_interval_s`, listening for `ALARM:N` in
  between, under an overall timeout computed from distance, speed and acceleration.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType

from rig.config import GrblTurntableConfig
from rig.devices import DeviceIdentity, DeviceStatus
from rig.errors import (
    ConfigError,
    DeviceAlarm,
    DeviceFault,
    DeviceTimeout,
    NotConnected,
    RigError,
    TransportError,
)
from rig.motion import check_within, motion_timeout_s
from rig.retry import with_retries
from rig.transport import SerialLineTransport
from rig.turntable.grbl_codec import (
    FEED_HOLD,
    SOFT_RESET,
    STATUS_QUERY,
    Alarm,
    Banner,
    ErrorReply,
    Message,
    Ok,
    ParseError,
    Reply,
    Status,
    alarm_meaning,
    axis_index,
    encode_move,
    encode_set_zero,
    parse_line,
)

log = logging.getLogger(__name__)

#: GRBL prints positions with 3 decimals; a target counts as reached within this many units.
_TOLERANCE_UNITS = 0.002
#: An Arduino resets when the port opens and prints its banner ~1-2 s later; a controller that
#: stays silent this long is already running, so ask it for a banner with a soft reset.
_SPONTANEOUS_BANNER_S = 0.5
_MOVING_STATES = frozenset({"Run", "Jog", "Home", "Hold", "Door"})


class GrblTurntable:
    """A turntable (and optional camera tilt axis) on a GRBL 1.1 controller.

    Angles are absolute degrees in GRBL's work coordinates and may exceed 360 within the
    configured limits: asked for 370 from 350, the table turns +20, never -340.
    """

    def __init__(self, config: GrblTurntableConfig, *, port: str | None = None) -> None:
        """Prepare the driver; nothing is opened until connect().

        Raises:
            ConfigError: no port given and the config has no `link` (an emulated config needs
                the port of the emulator the simulation backend started).
        """
        if port is None:
            if config.link is None:
                raise ConfigError(
                    "GRBL turntable: no serial port; give `link.port`, or start the emulator "
                    "and pass its port"
                )
            port = config.link.port
        self.config = config
        self.port = port
        self._baudrate = config.link.baudrate if config.link is not None else 115200
        self._axis = axis_index(config.axis)
        self._tilt_axis = axis_index(config.tilt.axis) if config.tilt is not None else None
        if self._tilt_axis == self._axis:
            raise ConfigError(f"GRBL turntable: tilt axis {config.axis} is the turntable axis")
        self._transport: SerialLineTransport | None = None
        self._lock = threading.RLock()
        self._stop_requested = threading.Event()
        self._banner: Banner | None = None
        self._wco: tuple[float, ...] | None = None
        self._wpos: tuple[float, ...] | None = None
        self._last: Status | None = None
        self._owed_replies = 0  # line replies that timed out but may still arrive
        self._in_alarm = False

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """Open the port, wait for the GRBL banner, unlock (or home) and read the position.

        Raises:
            TransportError: the port cannot be opened or the link drops.
            DeviceTimeout: no GRBL banner or no reply in time.
            DeviceFault: the controller is not GRBL 1.1 or rejects the unlock/homing.
        """
        with self._lock:
            if self._transport is not None:
                return
            transport = SerialLineTransport(
                self.port, baudrate=self._baudrate, name="GRBL turntable"
            )
            transport.open()
            self._transport = transport
            try:
                self._await_banner(send_reset=True)
                self._make_ready()
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        """Close the port (idempotent); the controller keeps its position."""
        with self._lock:
            if self._transport is not None:
                self._transport.close()
                self._transport = None

    def __enter__(self) -> GrblTurntable:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def identity(self) -> DeviceIdentity:
        """Model GRBL, the firmware version from the banner, the port as endpoint."""
        firmware = self._banner.firmware if self._banner is not None else ""
        return DeviceIdentity(
            kind="turntable", driver="grbl", model="GRBL", firmware=firmware, endpoint=self.port
        )

    def status(self) -> DeviceStatus:
        """Machine state and positions, read now from the controller.

        Raises:
            TransportError: the link dropped or the status query timed out (after retries).
        """
        if self._transport is None:
            return DeviceStatus(state="disconnected", details={"endpoint": self.port})
        with self._lock:
            self._prepare()
            status = self._query_status()
        state = status.state if status.substate is None else f"{status.state}:{status.substate}"
        details: dict[str, object] = {
            "position_deg": self._angle_deg(self._axis, self.config.units_per_deg),
            "firmware": self._banner.firmware if self._banner else "",
            "endpoint": self.port,
        }
        if self._tilt_axis is not None and self.config.tilt is not None:
            details["tilt_deg"] = self._angle_deg(self._tilt_axis, self.config.tilt.units_per_deg)
        return DeviceStatus(state=state, details=details)

    # ------------------------------------------------------------------ Turntable protocol
    def home(self) -> None:
        """Run the `$H` homing cycle, or (homing disabled) declare the current angle zero.

        Raises:
            NotConnected: connect() was not called.
            DeviceAlarm: homing failed (ALARM:N) or the controller is locked in alarm.
            DeviceFault: the controller rejected the command (error:N).
            DeviceTimeout: no reply in time.
            TransportError: the link dropped.
        """
        with self._lock:
            self._prepare()
            self._refuse_in_alarm("home")
            if self.config.homing:
                self._home_cycle()
            else:
                line = encode_set_zero(self.config.axis).decode("ascii").strip()
                # setting the same offset twice is harmless, so a lost `ok` may be retried
                self._retry_line(line)
            self._query_status()

    def move_to_deg(self, angle_deg: float) -> float:
        """Turn to an absolute angle, wait until the controller is idle there, return it.

        Raises:
            SafetyError: the angle is NaN/inf or outside the limits; nothing was sent.
            NotConnected: connect() was not called.
            DeviceAlarm: the controller raised ALARM:N (call recover()).
            DeviceFault: the controller rejected the move (error:N).
            DeviceTimeout: no reply, or the motion did not finish in time.
            TransportError: the link dropped.
            RigError: stop() interrupted the move.
        """
        limits = self.config.limits
        check_within(angle_deg, limits.min_deg, limits.max_deg, what="turntable angle", unit="deg")
        with self._lock:
            return self._move_axis(
                self._axis,
                self.config.axis,
                angle_deg,
                units_per_deg=self.config.units_per_deg,
                speed_deg_per_s=self.config.speed_deg_per_s,
            )

    def tilt_to_deg(self, tilt_deg: float) -> float:
        """Tilt the camera to an absolute angle on the second GRBL axis and return it.

        Raises:
            ConfigError: the config has no tilt axis.
            SafetyError: the angle is NaN/inf or outside the tilt limits; nothing was sent.
            NotConnected: connect() was not called.
            DeviceAlarm: the controller raised ALARM:N (call recover()).
            DeviceFault: the controller rejected the move (error:N).
            DeviceTimeout: no reply, or the motion did not finish in time.
            TransportError: the link dropped.
        """
        tilt = self.config.tilt
        if tilt is None or self._tilt_axis is None:
            raise ConfigError("GRBL turntable: no tilt axis configured (`tilt:` section)")
        check_within(tilt_deg, tilt.min_deg, tilt.max_deg, what="camera tilt", unit="deg")
        with self._lock:
            return self._move_axis(
                self._tilt_axis,
                tilt.axis,
                tilt_deg,
                units_per_deg=tilt.units_per_deg,
                speed_deg_per_s=tilt.speed_deg_per_s,
            )

    def position_deg(self) -> float:
        """The turntable's absolute angle as the controller reports it now.

        Raises:
            NotConnected: connect() was not called.
            DeviceTimeout: no status report after the configured retries.
            TransportError: the link dropped.
        """
        with self._lock:
            self._prepare()
            self._query_status()
            return self._angle_deg(self._axis, self.config.units_per_deg)

    def tilt_deg(self) -> float:
        """The camera tilt as the controller reports it now.

        Raises:
            ConfigError: the config has no tilt axis.
            NotConnected: connect() was not called.
            DeviceTimeout: no status report after the configured retries.
            TransportError: the link dropped.
        """
        if self.config.tilt is None or self._tilt_axis is None:
            raise ConfigError("GRBL turntable: no tilt axis configured (`tilt:` section)")
        with self._lock:
            self._prepare()
            self._query_status()
            return self._angle_deg(self._tilt_axis, self.config.tilt.units_per_deg)

    def stop(self) -> None:
        """Stop any motion now: feed hold, wait until stopped, then flush the planner.

        Safe to call from another thread while move_to_deg() waits: the feed hold byte goes
        out at once and the waiting move raises RigError.

        Raises:
            NotConnected: connect() was not called.
            DeviceTimeout: the axes did not come to a hold in time.
            TransportError: the link dropped.
        """
        transport = self._require_open()
        self._stop_requested.set()
        transport.write(FEED_HOLD)  # first, before waiting for the lock a move may hold
        with self._lock:
            try:
                self._finish_stop()
            finally:
                self._stop_requested.clear()

    def recover(self) -> None:
        """Clear an alarm: soft reset, wait for the banner, `$X` (and `$H` when homing), re-read.

        Raises:
            NotConnected: connect() was not called.
            DeviceTimeout: no banner or reply in time.
            DeviceFault: the controller rejected the unlock or homing.
            TransportError: the link dropped.
        """
        with self._lock:
            transport = self._require_open()
            transport.write(SOFT_RESET)
            self._await_banner(send_reset=False)
            self._make_ready()
            log.info(
                "GRBL turntable on %s recovered at %.3f deg",
                self.port,
                self._angle_deg(self._axis, self.config.units_per_deg),
            )

    # ------------------------------------------------------------------ motion internals
    def _move_axis(
        self,
        index: int,
        letter: str,
        target_deg: float,
        *,
        units_per_deg: float,
        speed_deg_per_s: float,
    ) -> float:
        self._prepare()
        self._refuse_in_alarm(f"move {letter} to {target_deg:g} deg")
        distance_deg = abs(target_deg - self._angle_deg(index, units_per_deg))
        budget_s = motion_timeout_s(
            distance_deg, speed_deg_per_s, self.config.limits.accel_deg_per_s2
        )
        deadline = time.monotonic() + budget_s + self.config.reply_timeout_s
        line = encode_move(
            target_deg,
            axis=letter,
            units_per_deg=units_per_deg,
            feed_deg_per_min=speed_deg_per_s * 60.0,
        )
        target_units = round(target_deg * units_per_deg, 3)
        self._send_motion(line.decode("ascii").strip(), index, target_units)
        while True:
            status = self._query_status()
            reached = self._at(status, index, target_units)
            if status.state == "Idle" and reached:
                return self._angle_deg(index, units_per_deg)
            if self._stop_requested.is_set():
                raise RigError(
                    f"GRBL turntable: move of {letter} to {target_deg:g} deg interrupted by "
                    f"stop() at {self._angle_deg(index, units_per_deg):.3f} deg"
                )
            now = time.monotonic()
            if now >= deadline:
                raise DeviceTimeout(
                    f"GRBL turntable on {self.port}: move of {letter} to {target_deg:g} deg did "
                    f"not finish within {budget_s:.1f} s (state {status.state}, at "
                    f"{self._angle_deg(index, units_per_deg):.3f} deg)"
                )
            # wait for the next poll listening, so an ALARM line is raised the moment it comes
            self._listen(min(self.config.poll_interval_s, deadline - now))

    def _send_motion(self, line: str, index: int, target_units: float) -> None:
        """Send a motion line once; after a lost `ok`, resend only if it never started."""
        for attempt in range(self.config.retries + 1):
            try:
                self._command(line)
                return
            except DeviceTimeout:
                status = self._query_status()
                if status.state in _MOVING_STATES or self._at(status, index, target_units):
                    log.warning(
                        "GRBL turntable: no `ok` for %r, but the axis is %s: accepted",
                        line,
                        "moving" if status.state in _MOVING_STATES else "at the target",
                    )
                    return
                if status.state == "Alarm":
                    self._in_alarm = True
                    raise DeviceAlarm(
                        f"GRBL turntable on {self.port}: in alarm after sending {line!r}"
                    ) from None
                if attempt == self.config.retries:
                    raise
                log.warning("GRBL turntable: %r was not executed; resending", line)
                self._resync()

    def _home_cycle(self) -> None:
        limits = self.config.limits
        # homing seeks over at most the whole travel range before it gives up with ALARM:9
        budget = motion_timeout_s(
            limits.max_deg - limits.min_deg, self.config.speed_deg_per_s, limits.accel_deg_per_s2
        )
        self._command("$H", timeout_s=budget + self.config.reply_timeout_s)
        self._in_alarm = False

    def _finish_stop(self) -> None:
        status = self._query_status()
        speed = max(self.config.speed_deg_per_s, self.config.limits.max_speed_deg_per_s)
        decel_s = speed / self.config.limits.accel_deg_per_s2
        deadline = time.monotonic() + 2.0 * decel_s + self.config.reply_timeout_s
        # Hold:1 is decelerating, Hold:0 is stopped; a reset before Hold:0 would lose steps
        while status.state == "Run" or (status.state == "Hold" and status.substate != 0):
            if time.monotonic() >= deadline:
                raise DeviceTimeout(f"GRBL turntable on {self.port}: did not come to a hold")
            self._listen(self.config.poll_interval_s)
            status = self._query_status()
        if status.state == "Hold":
            # flush the rest of the planned motion; GRBL keeps the position (no alarm) here
            self._require_open().write(SOFT_RESET)
            self._await_banner(send_reset=False)
            self._query_status()

    # ------------------------------------------------------------------ link internals
    def _make_ready(self) -> None:
        self._owed_replies = 0  # a reset empties GRBL's line buffer: nothing is owed
        status = self._query_status()
        self._in_alarm = status.state == "Alarm"
        if self.config.homing:
            self._home_cycle()
        elif self._in_alarm:
            self._retry_line("$X")  # unlocking twice is harmless, so a lost `ok` may be retried
            self._in_alarm = False
        self._query_status()

    def _await_banner(self, *, send_reset: bool) -> None:
        transport = self._require_open()
        start = time.monotonic()
        deadline = start + self.config.banner_timeout_s
        reset_at = start + min(_SPONTANEOUS_BANNER_S, self.config.banner_timeout_s / 4)
        reset_sent = not send_reset
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise DeviceTimeout(
                    f"GRBL turntable on {self.port}: no GRBL banner within "
                    f"{self.config.banner_timeout_s:g} s (is it a GRBL controller?)"
                )
            try:
                raw = transport.read_line((deadline if reset_sent else reset_at) - now)
            except DeviceTimeout:
                if not reset_sent:
                    log.debug("GRBL turntable: no spontaneous banner; sending soft reset")
                    transport.write(SOFT_RESET)
                    reset_sent = True
                continue
            reply = parse_line(raw)
            if isinstance(reply, Banner):
                if not reply.version.startswith("1.1"):
                    raise DeviceFault(
                        f"GRBL turntable on {self.port}: firmware {reply.firmware} is not "
                        "supported (this driver speaks GRBL 1.1)"
                    )
                self._banner = reply
                return
            if isinstance(reply, ParseError):
                log.warning("GRBL turntable: skipping unreadable line %r", reply.raw)
            else:
                log.debug("GRBL turntable: before banner, discarding %r", reply)

    def _prepare(self) -> None:
        """Before an operation: fail if closed, and resynchronise after an earlier timeout."""
        self._require_open()
        if self._owed_replies > 0:
            self._resync()

    def _resync(self) -> None:
        """Drain straggling replies, then `$G` until its `[GC:…]` shows the replies line up."""
        transport = self._require_open()
        for raw in transport.drain(self.config.reply_timeout_s):
            reply = parse_line(raw)
            if isinstance(reply, Alarm):
                self._in_alarm = True
            log.warning("GRBL turntable: discarding stale reply %r", raw)
        self._owed_replies = 0
        transport.write(b"$G\n")
        deadline = time.monotonic() + self.config.reply_timeout_s
        synced = False
        while True:
            try:
                reply = self._next_reply(deadline, "$G")
            except DeviceTimeout:
                self._owed_replies += 1  # the `$G` reply itself may still come
                raise
            if isinstance(reply, Message) and reply.kind == "GC":
                synced = True
            elif isinstance(reply, Ok | ErrorReply) and synced:
                return
            elif isinstance(reply, Ok | ErrorReply):
                log.warning("GRBL turntable: discarding stale %r", reply)

    def _retry_line(self, line: str) -> None:
        """Send an idempotent line, resending it after a timeout (up to `retries` times)."""

        def attempt() -> None:
            if self._owed_replies > 0:
                self._resync()
            self._command(line)

        with_retries(attempt, attempts=self.config.retries + 1, retry_on=(DeviceTimeout,))

    def _command(self, line: str, *, timeout_s: float | None = None) -> None:
        """Send one line and wait for its `ok`.

        Raises:
            DeviceFault: `error:N` (with GRBL's meaning); DeviceAlarm on `ALARM:N`.
            DeviceTimeout: no reply (the reply is then owed and drained before the next use).
        """
        transport = self._require_open()
        transport.write(line.encode("ascii") + b"\n")
        deadline = time.monotonic() + (timeout_s or self.config.reply_timeout_s)
        while True:
            try:
                reply = self._next_reply(deadline, line)
            except DeviceTimeout:
                self._owed_replies += 1
                raise
            if isinstance(reply, Ok):
                return
            if isinstance(reply, ErrorReply):
                raise DeviceFault(
                    f"GRBL turntable on {self.port}: {line!r} rejected with "
                    f"error:{reply.code} ({reply.meaning})",
                    code=reply.code,
                )

    def _query_status(self) -> Status:
        """Ask `?` (always safe to repeat, so retried) and absorb the report."""
        status = with_retries(
            self._status_once, attempts=self.config.retries + 1, retry_on=(DeviceTimeout,)
        )
        if status.state == "Alarm":
            self._in_alarm = True
        return status

    def _status_once(self) -> Status:
        transport = self._require_open()
        transport.write(STATUS_QUERY)
        deadline = time.monotonic() + self.config.reply_timeout_s
        while True:
            reply = self._next_reply(deadline, "status query '?'")
            if isinstance(reply, Status):
                self._absorb(reply)
                return reply
            if isinstance(reply, Ok | ErrorReply):
                self._settle_owed(reply)

    def _listen(self, timeout_s: float) -> None:
        """Wait up to timeout_s for unsolicited lines (an ALARM is raised at once)."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            try:
                reply = self._next_reply(deadline, "unsolicited lines")
            except DeviceTimeout:
                return
            if isinstance(reply, Ok | ErrorReply):
                self._settle_owed(reply)

    def _settle_owed(self, reply: Ok | ErrorReply) -> None:
        if self._owed_replies > 0:
            self._owed_replies -= 1
            log.warning("GRBL turntable: late reply %r to a timed-out command", reply)
        else:
            log.warning("GRBL turntable: unexpected reply %r ignored", reply)

    def _next_reply(self, deadline: float, waiting_for: str) -> Reply:
        """The next readable line before the deadline; line noise is logged and skipped.

        Raises:
            DeviceAlarm: an `ALARM:N` line arrived.
            DeviceTimeout: nothing readable before the deadline.
            TransportError: the link dropped.
        """
        transport = self._require_open()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeviceTimeout(
                    f"GRBL turntable on {self.port}: no reply to {waiting_for} within "
                    f"{self.config.reply_timeout_s:g} s"
                )
            try:
                raw = transport.read_line(remaining)
            except DeviceTimeout:
                continue  # re-check the deadline above, which builds the message
            reply = parse_line(raw)
            if isinstance(reply, ParseError):
                # garbage still counts against the deadline: we loop on the same one
                log.warning("GRBL turntable: skipping unreadable line %r (%s)", raw, reply.reason)
                continue
            if isinstance(reply, Alarm):
                self._in_alarm = True
                raise DeviceAlarm(
                    f"GRBL turntable on {self.port}: ALARM:{reply.code} "
                    f"({alarm_meaning(reply.code)}) while waiting for {waiting_for}; "
                    "call recover()",
                    code=reply.code,
                )
            if isinstance(reply, Banner):
                log.warning("GRBL turntable: controller restarted unexpectedly (%s)", reply.text)
                self._banner = reply
            return reply

    # ------------------------------------------------------------------ state helpers
    def _require_open(self) -> SerialLineTransport:
        if self._transport is None:
            raise NotConnected(f"GRBL turntable on {self.port}: not connected")
        return self._transport

    def _refuse_in_alarm(self, what: str) -> None:
        if self._in_alarm:
            raise DeviceAlarm(
                f"GRBL turntable on {self.port}: cannot {what}: controller is in alarm; "
                "call recover()"
            )

    def _absorb(self, status: Status) -> None:
        if status.wco is not None:
            self._wco = status.wco
        # GRBL sends WCO in the first report after a reset, so a missing one is zero only
        # until that report has been seen
        wpos = status.work_position(self._wco or (0.0,) * 6)
        if wpos is None:
            raise TransportError(f"GRBL turntable on {self.port}: status has no position")
        needed = max(self._axis, self._tilt_axis or 0) + 1
        if len(wpos) < needed:
            raise TransportError(
                f"GRBL turntable on {self.port}: status reports {len(wpos)} axes; the "
                f"configured axes need {needed}"
            )
        self._wpos = wpos
        self._last = status

    def _angle_deg(self, index: int, units_per_deg: float) -> float:
        if self._wpos is None:
            return 0.0
        return round(self._wpos[index] / units_per_deg, 6)

    def _at(self, status: Status, index: int, target_units: float) -> bool:
        wpos = status.work_position(self._wco or (0.0,) * 6)
        return wpos is not None and abs(wpos[index] - target_units) <= _TOLERANCE_UNITS
