"""GRBL 1.1 turntable driver (Arduino + stepper) over serial G-code, with an optional tilt axis.

Layers: SerialLineTransport (bytes) → GrblLink (one `ok`/`error:N` per line, `?` reports,
resynchronisation after timeouts) → this class (degrees, limits, motion, recovery).
- A status report `<…>` is self-describing, so a lost status reply is always safe to ask again;
  a motion line is not (it would move twice), so after a lost `ok` the driver asks where the
  axis is before deciding to resend.
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
    DeviceTimeout,
    NotConnected,
    RigError,
    TransportError,
)
from rig.motion import check_within, motion_timeout_s
from rig.transport import SerialLineTransport
from rig.turntable.grbl_codec import (
    FEED_HOLD,
    SOFT_RESET,
    Banner,
    Status,
    axis_index,
    encode_move,
    encode_set_zero,
)
from rig.turntable.grbl_link import GrblLink

log = logging.getLogger(__name__)

#: GRBL prints positions with 3 decimals; a target counts as reached within this many units.
_TOLERANCE_UNITS = 0.002
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
        self._link: GrblLink | None = None
        self._last_banner: Banner | None = None  # kept after close() for identity()
        self._lock = threading.RLock()
        self._stop_requested = threading.Event()
        self._wco: tuple[float, ...] | None = None
        self._wpos: tuple[float, ...] | None = None

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """Open the port, wait for the GRBL banner, unlock (or home) and read the position.

        Raises:
            TransportError: the port cannot be opened or the link drops.
            DeviceTimeout: no GRBL banner or no reply in time.
            DeviceFault: the controller is not GRBL 1.1 or rejects the unlock/homing.
        """
        with self._lock:
            if self._link is not None:
                return
            transport = SerialLineTransport(
                self.port, baudrate=self._baudrate, name="GRBL turntable"
            )
            transport.open()
            self._link = GrblLink(
                transport,
                name=f"GRBL turntable on {self.port}",
                reply_timeout_s=self.config.reply_timeout_s,
                banner_timeout_s=self.config.banner_timeout_s,
                retries=self.config.retries,
            )
            try:
                self._link.await_banner(send_reset=True)
                self._make_ready()
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        """Close the port (idempotent); the controller keeps its position."""
        with self._lock:
            if self._link is not None:
                self._last_banner = self._link.banner or self._last_banner
                self._link.transport.close()
                self._link = None

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
        banner = self._link.banner if self._link is not None else self._last_banner
        firmware = banner.firmware if banner is not None else ""
        return DeviceIdentity(
            kind="turntable", driver="grbl", model="GRBL", firmware=firmware, endpoint=self.port
        )

    def status(self) -> DeviceStatus:
        """Machine state and positions, read now from the controller.

        Raises:
            TransportError: the link dropped or the status query timed out (after retries).
        """
        if self._link is None:
            return DeviceStatus(state="disconnected", details={"endpoint": self.port})
        with self._lock:
            self._prepare()
            status = self._query_status()
        state = status.state if status.substate is None else f"{status.state}:{status.substate}"
        details: dict[str, object] = {
            "position_deg": self._angle_deg(self._axis, self.config.units_per_deg),
            "firmware": self.identity().firmware,
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
                self._require_open().retry_line(line)
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
        link = self._require_open()
        self._stop_requested.set()
        link.write(FEED_HOLD)  # first, before waiting for the lock a move may hold
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
            link = self._require_open()
            link.write(SOFT_RESET)
            link.await_banner(send_reset=False)
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
        link = self._prepare()
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
        self._send_motion(link, line.decode("ascii").strip(), index, target_units)
        while True:
            status = self._query_status()
            reached = self._at(status, index, target_units)
            if status.state == "Idle" and reached:
                return self._angle_deg(index, units_per_deg)
            if status.state == "Alarm":
                # the ALARM:N line itself may have been lost; the state still tells
                raise DeviceAlarm(
                    f"GRBL turntable on {self.port}: controller in alarm during the move of "
                    f"{letter} to {target_deg:g} deg; call recover()"
                )
            if self._stop_requested.is_set():
                raise RigError(
                    f"GRBL turntable on {self.port}: move of {letter} to {target_deg:g} deg "
                    f"interrupted by stop() at {self._angle_deg(index, units_per_deg):.3f} deg"
                )
            now = time.monotonic()
            if now >= deadline:
                raise DeviceTimeout(
                    f"GRBL turntable on {self.port}: move of {letter} to {target_deg:g} deg did "
                    f"not finish within {budget_s:.1f} s (state {status.state}, at "
                    f"{self._angle_deg(index, units_per_deg):.3f} deg)"
                )
            # wait for the next poll listening, so an ALARM line is raised the moment it comes
            link.listen(min(self.config.poll_interval_s, deadline - now))

    def _send_motion(self, link: GrblLink, line: str, index: int, target_units: float) -> None:
        """Send a motion line once; after a lost `ok`, resend only if it never started."""
        for attempt in range(self.config.retries + 1):
            try:
                link.command(line)
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
                    raise DeviceAlarm(
                        f"GRBL turntable on {self.port}: in alarm after sending {line!r}"
                    ) from None
                if attempt == self.config.retries:
                    raise
                log.warning("GRBL turntable: %r was not executed; resending", line)
                link.resync()

    def _home_cycle(self) -> None:
        limits = self.config.limits
        # homing seeks over at most the whole travel range before it gives up with ALARM:9
        budget = motion_timeout_s(
            limits.max_deg - limits.min_deg, self.config.speed_deg_per_s, limits.accel_deg_per_s2
        )
        link = self._require_open()
        link.command("$H", timeout_s=budget + self.config.reply_timeout_s)
        link.in_alarm = False

    def _finish_stop(self) -> None:
        link = self._require_open()
        status = self._query_status()
        speed = max(self.config.speed_deg_per_s, self.config.limits.max_speed_deg_per_s)
        decel_s = speed / self.config.limits.accel_deg_per_s2
        deadline = time.monotonic() + 2.0 * decel_s + self.config.reply_timeout_s
        # Hold:1 is decelerating, Hold:0 is stopped; a reset before Hold:0 would lose steps
        while status.state == "Run" or (status.state == "Hold" and status.substate != 0):
            if time.monotonic() >= deadline:
                raise DeviceTimeout(f"GRBL turntable on {self.port}: did not come to a hold")
            link.listen(self.config.poll_interval_s)
            status = self._query_status()
        if status.state == "Hold":
            # flush the rest of the planned motion; GRBL keeps the position (no alarm) here
            link.write(SOFT_RESET)
            link.await_banner(send_reset=False)
            self._query_status()

    # ------------------------------------------------------------------ link helpers
    def _make_ready(self) -> None:
        """After a banner: unlock or home, then read the position."""
        link = self._require_open()
        status = self._query_status()
        link.in_alarm = status.state == "Alarm"
        if self.config.homing:
            self._home_cycle()
        elif link.in_alarm:
            link.retry_line("$X")  # unlocking twice is harmless, so a lost `ok` may be retried
            link.in_alarm = False
        self._query_status()

    def _prepare(self) -> GrblLink:
        """Before an operation: fail if closed, and resynchronise after an earlier timeout."""
        link = self._require_open()
        link.prepare()
        return link

    def _query_status(self) -> Status:
        status = self._require_open().query_status()
        self._absorb(status)
        return status

    # ------------------------------------------------------------------ state helpers
    def _require_open(self) -> GrblLink:
        if self._link is None:
            raise NotConnected(f"GRBL turntable on {self.port}: not connected")
        return self._link

    def _refuse_in_alarm(self, what: str) -> None:
        if self._require_open().in_alarm:
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

    def _angle_deg(self, index: int, units_per_deg: float) -> float:
        if self._wpos is None:
            return 0.0
        return round(self._wpos[index] / units_per_deg, 6)

    def _at(self, status: Status, index: int, target_units: float) -> bool:
        wpos = status.work_position(self._wco or (0.0,) * 6)
        return wpos is not None and abs(wpos[index] - target_units) <= _TOLERANCE_UNITS
