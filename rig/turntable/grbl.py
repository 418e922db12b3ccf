"""GRBL 1.1 turntable driver (Arduino + stepper) over serial G-code, with an optional tilt axis.

Layers: SerialLineTransport (bytes) → GrblLink (one `ok`/`error:N` per line, `?` reports,
resynchronisation after timeouts) → this class (degrees, limits, motion, recovery).
- At connect the driver reads `$$`: steps per unit, rates, accelerations and travel come from
  the firmware (rig.turntable.grbl_axes), which is what GRBL moves by. What it clamps or
  notices is logged and shown in identity().notes, which the session record keeps.
- Moves end on a firmware barrier (`G4` answered once the planner is empty) and on the step
  nearest the target; stop() leaves GRBL reading lines in every state (rig.turntable.grbl_moves).
- A status report is self-describing, so a lost one is always safe to ask again; an absolute
  (G90) motion line is safe to resend too, but the driver still asks where the axis is first.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from rig.config import GrblTurntableConfig
from rig.devices import DeviceIdentity, DeviceStatus
from rig.errors import (
    ConfigError,
    DeviceAlarm,
    DeviceFault,
    NotConnected,
    TransportError,
)
from rig.motion import check_within
from rig.transport import SerialLineTransport
from rig.turntable.grbl_axes import AxisPlan, homing_budget_s, plan_axes, read_firmware
from rig.turntable.grbl_codec import (
    FEED_HOLD,
    SOFT_RESET,
    Banner,
    Status,
    encode_set_zero,
)
from rig.turntable.grbl_link import GrblLink
from rig.turntable.grbl_moves import GrblMoves
from rig.turntable.grbl_settings import FirmwareSettings

log = logging.getLogger(__name__)


# GRBL 1.1 alarms after which the machine position is likely lost (alarm_codes_en_US.csv)
POSITION_LOST_ALARMS = (1, 3)


class GrblTurntable(GrblMoves):
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
        if config.tilt is not None and config.tilt.axis == config.axis:
            raise ConfigError(f"GRBL turntable: tilt axis {config.axis} is the turntable axis")
        self.config = config
        self.port = port
        self._name = f"GRBL turntable on {port}"
        self._baudrate = config.link.baudrate if config.link is not None else 115200
        self._link: GrblLink | None = None
        self._last_banner: Banner | None = None  # kept after close() for identity()
        self._lock = threading.RLock()
        self._stop_requested = threading.Event()
        self._wco: tuple[float, ...] | None = None
        self._wpos: tuple[float, ...] | None = None
        self._settings = FirmwareSettings({})
        self._axes: tuple[AxisPlan, AxisPlan | None] | None = None
        self._notes: tuple[str, ...] = ()

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """Open the port, wait for the banner, read `$$`, unlock (or home), read the position.

        Raises:
            TransportError: the port cannot be opened or the link drops.
            DeviceTimeout: no GRBL banner or no reply in time.
            ConfigError: the config and the controller's settings disagree (homing, inches,
                an acceleration above the configured limit).
            DeviceFault: the controller is not GRBL 1.1 or rejects the unlock/homing.
        """
        with self._lock:
            if self._link is not None:
                return
            transport = SerialLineTransport(self.port, baudrate=self._baudrate, name=self._name)
            transport.open()
            self._link = GrblLink(
                transport,
                name=self._name,
                reply_timeout_s=self.config.reply_timeout_s,
                banner_timeout_s=self.config.banner_timeout_s,
                retries=self.config.retries,
            )
            try:
                self._link.await_banner(send_reset=True)
                self._read_settings()
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
        """Model GRBL, the firmware version, the port; notes on what `$$` made the driver do."""
        banner = self._link.banner if self._link is not None else self._last_banner
        firmware = banner.firmware if banner is not None else ""
        return DeviceIdentity(
            kind="turntable",
            driver="grbl",
            model="GRBL",
            firmware=firmware,
            endpoint=self.port,
            notes=self._notes,
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
            turntable, tilt = self._plans()
            details: dict[str, object] = {
                "position_deg": self._angle_deg(turntable),
                "firmware": self.identity().firmware,
                "endpoint": self.port,
                "step_deg": turntable.step_deg,
                "speed_deg_per_s": turntable.speed_deg_per_s,
                "accel_deg_per_s2": turntable.accel_deg_per_s2,
                "notes": list(self._notes),
            }
            if tilt is not None:
                details["tilt_deg"] = self._angle_deg(tilt)
        state = status.state if status.substate is None else f"{status.state}:{status.substate}"
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
        """Turn to an absolute angle, wait until the controller has finished there, return it.

        The angle returned is the one GRBL reports: the whole step nearest the target.

        Raises:
            SafetyError: the angle is NaN/inf, outside the limits or outside the controller's
                soft-limit travel; nothing was sent.
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
            return self._move_axis(self._plans()[0], angle_deg)

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
        if tilt is None:
            raise ConfigError("GRBL turntable: no tilt axis configured (`tilt:` section)")
        check_within(tilt_deg, tilt.min_deg, tilt.max_deg, what="camera tilt", unit="deg")
        with self._lock:
            plan = self._plans()[1]
            assert plan is not None  # planned whenever the config has a tilt
            return self._move_axis(plan, tilt_deg)

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
            return self._angle_deg(self._plans()[0])

    def tilt_deg(self) -> float:
        """The camera tilt as the controller reports it now.

        Raises:
            ConfigError: the config has no tilt axis.
            NotConnected: connect() was not called.
            DeviceTimeout: no status report after the configured retries.
            TransportError: the link dropped.
        """
        if self.config.tilt is None:
            raise ConfigError("GRBL turntable: no tilt axis configured (`tilt:` section)")
        with self._lock:
            self._prepare()
            self._query_status()
            plan = self._plans()[1]
            assert plan is not None
            return self._angle_deg(plan)

    def stop(self) -> None:
        """Stop any motion and leave the controller reading commands again.

        Feed hold, wait until the axes are at rest, then (if GRBL is holding) a soft reset to
        flush the planner: in a completed hold GRBL reads no command lines, and a reset before
        the hold is complete would lose steps. GRBL enters a hold on `!` even when idle, so the
        reset follows then too. A controller in alarm stays in alarm (recover() clears it).

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

        After ALARM:1 (hard limit) or ALARM:3 (reset while moving) GRBL has likely lost the
        machine position (doc/markdown/interface.md, alarm codes): with homing it is found
        again by `$H`; without, the controller is unlocked but DeviceFault says the position
        is lost, so a session pauses instead of recording wrong angles.

        Raises:
            NotConnected: connect() was not called.
            DeviceTimeout: no banner or reply in time.
            DeviceFault: the controller rejected the unlock or homing, or the position was lost
                and homing is off.
            TransportError: the link dropped.
        """
        with self._lock:
            link = self._require_open()
            lost, link.last_alarm = link.last_alarm in POSITION_LOST_ALARMS, None
            link.write(SOFT_RESET)
            link.await_banner(send_reset=False)
            self._make_ready()
            if lost and not self.config.homing:
                # GRBL's alarm codes 1 and 3: "machine position is likely lost"; without a
                # homing switch nothing can find it again, and every later angle would be off
                raise DeviceFault(
                    f"{self._name}: an alarm lost the machine position and homing is off: "
                    "put the turntable back at its zero mark (or rerun, which re-zeros it)"
                )
            log.info("%s recovered at %.3f deg", self._name, self._angle_deg(self._plans()[0]))

    # ------------------------------------------------------------------ motion internals
    def _home_cycle(self) -> None:
        link = self._require_open()
        budget = homing_budget_s(self._settings, [p.index for p in self._plans() if p])
        try:
            link.command("$H", timeout_s=budget + self.config.reply_timeout_s)
        except DeviceFault as exc:
            if exc.code == 5:
                raise ConfigError(
                    f"{self._name}: homing is disabled on the controller ($22=0) but the config "
                    "asks for it; set $22=1 or `homing: false`"
                ) from None
            raise
        link.in_alarm = False

    # ------------------------------------------------------------------ link helpers
    def _read_settings(self) -> None:
        """`$$` → the axes' plans and the notes (once per connection)."""
        settings = read_firmware(self._require_open(), self.config)
        turntable, tilt, notes = plan_axes(self.config, settings, self._name)
        self._settings = settings
        self._axes = (turntable, tilt)
        self._notes = tuple(notes)

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
            raise NotConnected(f"{self._name}: not connected")
        return self._link

    def _plans(self) -> tuple[AxisPlan, AxisPlan | None]:
        if self._axes is None:
            raise NotConnected(f"{self._name}: not connected")
        return self._axes

    def _refuse_in_alarm(self, what: str) -> None:
        if self._require_open().in_alarm:
            raise DeviceAlarm(
                f"{self._name}: cannot {what}: controller is in alarm; call recover()"
            )

    def _absorb(self, status: Status) -> None:
        if status.wco is not None:
            self._wco = status.wco
        # GRBL sends WCO in the first report after a reset, so a missing one is zero only
        # until that report has been seen
        wpos = status.work_position(self._wco or (0.0,) * 6)
        if wpos is None:
            raise TransportError(f"{self._name}: status has no position")
        needed = max(p.index for p in self._plans() if p is not None) + 1
        if len(wpos) < needed:
            raise TransportError(
                f"{self._name}: status reports {len(wpos)} axes; the configured axes need {needed}"
            )
        self._wpos = wpos

    def _angle_deg(self, axis: AxisPlan) -> float:
        if self._wpos is None:
            return 0.0
        return round(self._wpos[axis.index] / axis.units_per_deg, 6)

    def _at(self, axis: AxisPlan, target_units: float) -> bool:
        """Whether the last report lies on the step GRBL stops on for this target."""
        return (
            self._wpos is not None
            and abs(self._wpos[axis.index] - target_units) <= axis.tolerance_units
        )
