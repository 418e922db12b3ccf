"""The GRBL driver's motion: a move and its completion barrier, a lost `ok`, and stop().

A mixin of GrblTurntable (rig.turntable.grbl), which provides the state helpers declared below.
- A move is the motion line, then `G4 P0.01`: GRBL answers the dwell only once the planner is
  empty and the axes stopped (interface.md "Synchronization"; protocol.c
  protocol_buffer_synchronize), so its `ok` says the move is done. Meanwhile `?` goes out every
  poll_interval_s (interface.md: at most 5 Hz) to catch an alarm or a stop; a lost report costs
  one poll. The final report must lie within half a step (plus report rounding) of the target:
  GRBL stops on the nearest whole step (planner.c plan_buffer_line).
- stop(): GRBL services a `?` before a `!` pending beside it (protocol.c
  protocol_exec_rt_system), so the first report after the hold may predate it; and it holds on
  `!` even when idle, where it then reads no lines until a resume or a reset.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from rig.config import GrblTurntableConfig
from rig.errors import DeviceAlarm, DeviceFault, DeviceTimeout, RigError
from rig.turntable.grbl_axes import AxisPlan
from rig.turntable.grbl_codec import SOFT_RESET, Status, encode_move
from rig.turntable.grbl_link import GrblLink

log = logging.getLogger(__name__)

_MOVING_STATES = frozenset({"Run", "Jog", "Home", "Hold", "Door"})
#: interface.md "Synchronization": a dwell is answered once the planner buffer is empty.
_BARRIER = "G4 P0.01"


class GrblMoves:
    """Moves and stop for GrblTurntable (which provides the attributes and helpers below)."""

    config: GrblTurntableConfig
    _name: str
    _stop_requested: threading.Event
    _wco: tuple[float, ...] | None

    def _prepare(self) -> GrblLink:
        raise NotImplementedError

    def _require_open(self) -> GrblLink:
        raise NotImplementedError

    def _plans(self) -> tuple[AxisPlan, AxisPlan | None]:
        raise NotImplementedError

    def _refuse_in_alarm(self, what: str) -> None:
        raise NotImplementedError

    def _query_status(self) -> Status:
        raise NotImplementedError

    def _absorb(self, status: Status) -> None:
        raise NotImplementedError

    def _angle_deg(self, axis: AxisPlan) -> float:
        raise NotImplementedError

    def _at(self, axis: AxisPlan, target_units: float) -> bool:
        raise NotImplementedError

    def _move_axis(self, axis: AxisPlan, target_deg: float) -> float:
        link = self._prepare()
        self._refuse_in_alarm(f"move {axis.letter} to {target_deg:g} deg")
        target_units = round(target_deg * axis.units_per_deg, 3)
        axis.check_travel(target_deg, target_units, self._wco, self._name)
        budget_s = axis.move_budget_s(target_deg - self._angle_deg(axis))
        deadline = time.monotonic() + budget_s + self.config.reply_timeout_s
        line = encode_move(
            target_deg,
            axis=axis.letter,
            units_per_deg=axis.units_per_deg,
            feed_deg_per_min=axis.speed_deg_per_s * 60.0,
        )
        self._send_motion(link, line.decode("ascii").strip(), axis, target_units)
        link.prepare()  # a lost `ok` accepted above is owed: line the replies up first
        what = f"move of {axis.letter} to {target_deg:g} deg"

        def watch(status: Status | None) -> bool:
            if status is not None:
                self._absorb(status)
                if status.state == "Alarm":
                    # the ALARM:N line itself may have been lost; the state still tells
                    raise DeviceAlarm(f"{self._name}: in alarm during the {what}; call recover()")
            if self._stop_requested.is_set():
                raise RigError(
                    f"{self._name}: {what} interrupted by stop() at {self._angle_deg(axis):.3f} deg"
                )
            return status is not None and status.state == "Idle" and self._at(axis, target_units)

        try:
            try:
                link.await_ok(_BARRIER, deadline=deadline, poll_s=self.config.poll_interval_s,
                              watch=watch)  # fmt: skip
            except DeviceFault as exc:
                if isinstance(exc, DeviceAlarm):
                    raise
                # the dwell was refused, not the move: tell the end from the reports instead
                log.warning("%s: %s; polling for the end of the move", self._name, exc)
                self._poll_until(watch, deadline)
        except DeviceTimeout:
            status = self._query_status()
            raise DeviceTimeout(
                f"{self._name}: {what} did not finish within {budget_s:.1f} s (state "
                f"{status.state}, at {self._angle_deg(axis):.3f} deg)"
            ) from None
        status = self._query_status()
        if status.state != "Idle" or not self._at(axis, target_units):
            raise DeviceFault(
                f"{self._name}: {what} ended in state {status.state} at "
                f"{self._angle_deg(axis):.3f} deg, not within half a step "
                f"({axis.step_deg / 2:.4g} deg) of the target"
            )
        return self._angle_deg(axis)

    def _poll_until(self, done: Callable[[Status | None], bool], deadline: float) -> None:
        """Ask `?` every poll interval until `done` says so.

        Raises:
            DeviceTimeout: not done by the deadline.
        """
        link = self._require_open()
        while not done(self._query_status()):
            if time.monotonic() >= deadline:
                raise DeviceTimeout(f"{self._name}: not done by the deadline")
            link.listen(self.config.poll_interval_s)

    def _send_motion(self, link: GrblLink, line: str, axis: AxisPlan, target: float) -> None:
        """Send a motion line once; after a lost `ok`, resend only if it never started."""
        for attempt in range(self.config.retries + 1):
            try:
                link.command(line)
                return
            except DeviceTimeout:
                status = self._query_status()
                if status.state in _MOVING_STATES or self._at(axis, target):
                    log.warning(
                        "%s: no `ok` for %r, but the axis is %s: accepted",
                        self._name,
                        line,
                        "moving" if status.state in _MOVING_STATES else "at the target",
                    )
                    return
                if status.state == "Alarm":
                    raise DeviceAlarm(f"{self._name}: in alarm after sending {line!r}") from None
                if attempt == self.config.retries:
                    raise
                # an absolute (G90) target moves nowhere new if the first copy did run after all
                log.warning("%s: %r was not executed; resending", self._name, line)
                link.resync()

    def _finish_stop(self) -> None:
        link = self._require_open()
        # protocol.c services a `?` before a `!` that waits beside it, so the first report after
        # the hold may show the state before it; a report asked after that one has seen it
        self._query_status()
        status = self._query_status()
        brake_s = max(p.brake_s() for p in self._plans() if p is not None)
        deadline = time.monotonic() + 2.0 * brake_s + self.config.reply_timeout_s
        # Hold:1 is braking, Hold:0 is at rest; a reset before Hold:0 would lose steps
        while status.state in ("Run", "Jog", "Home") or (
            status.state == "Hold" and status.substate != 0
        ):
            if time.monotonic() >= deadline:
                raise DeviceTimeout(f"{self._name}: did not come to a hold")
            link.listen(self.config.poll_interval_s)
            status = self._query_status()
        if status.state in ("Hold", "Door"):
            # flush the planner; GRBL keeps the position (no alarm) after a completed hold
            link.write(SOFT_RESET)
            link.await_banner(send_reset=False)
            self._query_status()
