"""The session runner: runs a plan on a Rig for a list of coins, writing to a dataset.

The runner owns sequencing, the state machine, pause/stop, events and the dataset hand-off; the
engine (capture.engine) owns the devices. Whatever happens, `run()` drains the writer, parks the
rig, records why it finished in sessions/SESSION_ID.json and only then re-raises:

- a device that keeps failing (after the engine's retries): the shot is skipped when the plan
  says `on_failure: skip`, otherwise the rig is parked and the session ends `paused`;
- disk full: `paused` with reason disk_full; nothing half-written stays behind;
- Ctrl-C (KeyboardInterrupt): no new exposure starts; the shots already exposed (up to
  IN_FLIGHT, their frames perhaps still reading out) are collected and written on the way out,
  the rig parked, the session `paused` (interrupted), and the KeyboardInterrupt re-raised;
- anything unexpected: `failed`, parked, re-raised.

An exposed shot whose frame cannot be kept on the way out is listed in the record's `missing`
as lost after its exposure, not as not taken. Every ending but `done` is resumable: a rerun
skips shots already on disk with their checksum.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from capture.calibration.flatfield import FlatFieldCorrector
from capture.calibration.store import CalibrationUse, calibration_for_rig
from capture.engine import CaptureEngine, CoinJob, Collected, Exposure, Prompt, ShotSettings
from capture.events import (
    TRANSITIONS,
    CoinDone,
    CoinStarted,
    Emitter,
    FinishReason,
    Listener,
    RunState,
    RunStatus,
    SessionDone,
    SessionPaused,
    SessionRecordFailed,
    SessionStarted,
    ShotDone,
    ShotRetry,
    ShotSkipped,
    StateChanged,
    utc_now,
)
from capture.plan import Plan, ShotEvent, check_plan, expand
from capture.records import flat_fielded, physical_s, session_timings, shot_metadata, shot_tally
from capture.writer import (
    DatasetError,
    DatasetWriteError,
    DatasetWriter,
    ResumeIndex,
    image_name,
    validate_coin_id,
)
from rig.config import RigConfig
from rig.devices import Frame, Rig
from rig.errors import ConfigError, RigError

log = logging.getLogger(__name__)

# Shots whose frames may still be reading out while the next ones are set up and exposed: two
# give a frame two shots' light switches and exposures to arrive in, so a camera (or the twin's
# render) a little slower than one shot now and then does not hold the rig up.
IN_FLIGHT = 2


class _Stop(Exception):
    """Internal: end the session in the resumable `paused` state."""

    def __init__(self, reason: FinishReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def new_session_id() -> str:
    """A sortable, unique session id: UTC time plus random hex."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


class SessionRunner:
    """Runs one plan over a list of coins on a Rig, into a DatasetWriter the caller has opened."""

    def __init__(
        self,
        rig: Rig,
        plan: Plan,
        writer: DatasetWriter,
        coins: Sequence[CoinJob],
        *,
        config: RigConfig | None = None,
        session_id: str | None = None,
        prompt: Prompt | None = None,
        listeners: Sequence[Listener] = (),
        coin_info: Callable[[str], dict[str, Any]] | None = None,
        sleep: Callable[[float], None] | None = None,
        backoff_s: float = 0.05,
        calibration: CalibrationUse | None = None,
        flatfield: FlatFieldCorrector | None = None,
    ) -> None:
        # Refuse bad ids and duplicates here, before anything can move or be written.
        for job in coins:
            validate_coin_id(job.coin_id)
        ids = [job.coin_id for job in coins]
        if len(set(ids)) != len(ids):
            raise DatasetError(f"a coin appears twice in the job list: {ids}")
        slots = [job.slot for job in coins if job.slot is not None]
        if len(set(slots)) != len(slots):
            raise DatasetError(f"a tray slot appears twice in the job list: {slots}")
        self.rig = rig
        self.plan = plan
        self.writer = writer
        self.coins = list(coins)
        self.config = config
        self.session_id = session_id or new_session_id()
        self.coin_info = coin_info
        # A frame is waited for as long as a grab would be (the camera's grab_timeout_s): a
        # camera that lost a trigger must not hold the session for ever.
        timeout_s = config.camera.grab_timeout_s if config is not None else None
        self.engine = CaptureEngine(
            rig, plan, prompt=prompt, sleep=sleep, backoff_s=backoff_s, frame_timeout_s=timeout_s
        )
        self.engine.on_retry = self._on_retry
        self.events = expand(plan)
        self._emitter = Emitter(list(listeners))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._state = RunState.IDLE
        self._reason: FinishReason | None = None
        self._message = ""
        self._coin: str | None = None
        self._shot: int | None = None
        self._submitted: dict[str, tuple[str, int]] = {}
        self._skipped: dict[str, str] = {}
        self._lost: dict[str, str] = {}  # exposed, then not kept: file name → why
        self._todo: dict[str, list[ShotEvent]] = {}
        self._errors: list[str] = []
        self._on_turntable: str | None = None
        self._devices: list[dict[str, Any]] = []
        # None: looked up from config.calibration when the session starts (if there is a config)
        self.calibration = calibration
        self.flatfield = flatfield
        self._warnings: list[str] = []
        self._patterns = dict(plan.patterns)
        self._taken = self._skipped_now = 0  # of the current coin

    # ------------------------------------------------------------ public
    def add_listener(self, listener: Listener) -> None:
        """Subscribe to session events."""
        self._emitter.add(listener)

    def request_stop(self) -> None:
        """Ask the session to stop after the current shot, park and pause (thread-safe)."""
        self._stop.set()

    def status(self) -> RunStatus:
        """A frozen snapshot of where the session is."""
        with self._lock:
            return RunStatus(
                state=self._state,
                reason=self._reason,
                coin_id=self._coin,
                shot=self._shot,
                taken=len(self._submitted),
                skipped=len(self._skipped),
                to_take=sum(len(v) for v in self._todo.values()),
                message=self._message,
            )

    def run(self) -> RunStatus:
        """Run the session to its end; returns the final status (done or paused).

        Raises:
            KeyboardInterrupt: after parking and recording (the session is paused, resumable).
            Exception: anything unexpected, after parking and recording (the session failed).
        """
        started = time.monotonic()
        started_at = utc_now()
        clock = self.rig.extras.get("clock")
        physical_before = physical_s(clock)
        pending: BaseException | None = None
        final = RunState.DONE
        reason, message = FinishReason.COMPLETED, ""
        self._set_state(RunState.PREPARING)
        try:
            self._prepare()
            self._record(RunState.RUNNING, None, "", started_at, started, physical_before)
            self._set_state(RunState.RUNNING)
            self.engine.setup_session()
            for job in self.coins:
                self._run_coin(job)
        except _Stop as stop:
            final, reason, message = RunState.PAUSED, stop.reason, str(stop)
        except DatasetWriteError as exc:
            final, message = RunState.PAUSED, str(exc)
            reason = FinishReason.DISK_FULL if exc.disk_full else FinishReason.ERROR
        except (ConfigError, DatasetError) as exc:
            # Refused before any shot: a plan this rig cannot run, a dataset it cannot resume.
            final, reason, message = RunState.FAILED, FinishReason.ERROR, str(exc)
            pending = exc
        except RigError as exc:
            # A device that failed outside a shot (arm, homing) after its retries.
            final, reason, message = RunState.PAUSED, FinishReason.DEVICE_FAILURE, str(exc)
        except KeyboardInterrupt as exc:
            final, reason, message = RunState.PAUSED, FinishReason.INTERRUPTED, "interrupted"
            pending = exc
        except BaseException as exc:
            final, reason = RunState.FAILED, FinishReason.ERROR
            message = f"{type(exc).__name__}: {exc}"
            log.exception("capture session %s failed", self.session_id)
            pending = exc
        finally:
            final, reason, message = self._finish(final, reason, message)
            unrecorded = self._record(final, reason, message, started_at, started, physical_before)
            self._set_state(final, reason, message)
            if unrecorded is not None:
                # The record on disk still says what its last good write said (`running`):
                # put the real ending in the event log.
                self._emitter.emit(SessionRecordFailed(self.session_id, final, reason, unrecorded))
            if final is RunState.PAUSED:
                self._emitter.emit(SessionPaused(reason, message))
            status = self.status()
            self._emitter.emit(
                SessionDone(final, reason, status.taken, status.skipped, message=message)
            )
            if unrecorded is not None:
                # One more try once everything else is done: a full disk may have room again
                # (another process's temporary files, a quota); an honest record is worth it.
                self._record(final, reason, message, started_at, started, physical_before)
        if pending is not None:
            raise pending
        return self.status()

    # ------------------------------------------------------------ steps
    def _prepare(self) -> None:
        if self.config is not None:
            problems = check_plan(self.plan, self.config)
            if problems:
                raise ConfigError(f"plan {self.plan.name!r} cannot run on this rig: {problems[0]}")
        index = ResumeIndex(self.writer.root)
        for job in self.coins:
            self._todo[job.coin_id] = index.todo(job.coin_id, self.events, self.writer.image_format)
        for device in self.rig.devices():
            try:
                self._devices.append(dataclasses.asdict(device.identity()))
            except Exception as exc:  # identity is informative only; never stop a capture for it
                self._devices.append({"error": str(exc)})
        self._check_calibration()
        total = len(self.events) * len(self.coins)
        to_take = sum(len(v) for v in self._todo.values())
        self._emitter.emit(SessionStarted(self.session_id, len(self.coins), total, to_take))

    def _run_coin(self, job: CoinJob) -> None:
        todo = self._todo[job.coin_id]
        with self._lock:
            self._coin, self._shot = job.coin_id, None
        self._emitter.emit(CoinStarted(job.coin_id, len(self.events), len(todo)))
        info = self.coin_info(job.coin_id) if self.coin_info else {}
        self.writer.add_coin(job.coin_id, **info)
        self._taken = self._skipped_now = 0
        if todo:
            self._check_stop()
            side = self.plan.sides[0]  # coins lie first-side up in the tray
            self.engine.load_coin(job, side)
            self._on_turntable = job.coin_id
            # Shots in flight: exposed, their frames still reading out while the next shots'
            # motions run. Each is collected before the coin is flipped or leaves the table
            # (a frame lost after its exposure is retaken with the right side up), and on the
            # way out of any error (it was exposed: it is a good shot).
            in_flight: deque[_InFlight] = deque()
            try:
                for event in todo:
                    self._check_stop()
                    if event.side != side:
                        self._collect_down_to(in_flight, 0)
                        side = event.side
                        self.engine.flip_coin(job, side)
                    self._shoot(job, event, in_flight)
                self._collect_down_to(in_flight, 0)
                self._check_stop()
                self.engine.unload_coin(job)
                self._on_turntable = None
            except BaseException:
                self._collect_on_the_way_out(in_flight)
                raise
        self._emitter.emit(CoinDone(job.coin_id, self._taken, self._skipped_now))

    def _shoot(self, job: CoinJob, event: ShotEvent, in_flight: deque[_InFlight]) -> None:
        """Set up and expose `event`, collecting earlier frames while the rig was set up."""
        with self._lock:
            self._shot = event.index
        settings = self._setup(event)
        if self._collect_down_to(in_flight, IN_FLIGHT - 1):
            settings = self._setup(event)  # the rig was set up again for a retaken shot
        if isinstance(settings, RigError):
            self._failed(job, event, settings)
            return
        self._check_stop()  # a stop asked for while frames were collected: take no more
        captured_at = utc_now()
        try:
            exposure = self.engine.start_shot(event)
        except RigError as exc:
            self._failed(job, event, exc)
            return
        in_flight.append(_InFlight(job, event, settings, exposure, captured_at))

    def _collect_down_to(self, in_flight: deque[_InFlight], count: int) -> bool:
        """Collect the oldest shots until `count` are left in flight; True if one was retaken."""
        retaken = False
        while len(in_flight) > count:
            retaken |= self._collect(in_flight)
        return retaken

    def _setup(self, event: ShotEvent) -> ShotSettings | RigError:
        """Set the rig up for a shot; a device failure (after retries) is returned, not raised."""
        try:
            return self.engine.setup_shot(event, self._patterns)
        except RigError as exc:
            return exc

    def _collect(self, in_flight: deque[_InFlight], *, retake: bool = True) -> bool:
        """Wait for the oldest shot's frame and queue it for writing; True if it was retaken.

        The shot leaves `in_flight` only once it is queued for writing, skipped or has paused
        the session: an interrupt or a write error before that leaves it for the way out.
        A frame lost after its exposure is taken again from scratch (`retake`), with the
        engine's retries; a shot that still fails is skipped or pauses, as its plan says.
        """
        shot, retaken = in_flight[0], False
        try:
            frame: Frame | None = self.engine.collect(shot.exposure)
        except RigError as exc:
            if not retake:
                raise
            retaken = True
            try:
                frame = self._retake(shot, exc)
            except _Stop:
                in_flight.popleft()  # lost, its retakes failed: _failed has recorded it
                raise
        if frame is None:
            in_flight.popleft()  # skipped
            return retaken
        # Kept as collected: the way out writes it without waiting on the camera again.
        shot.exposure = Collected(frame)
        job, event, settings = shot.job, shot.event, shot.settings
        name = self._file_name(job, event)
        record = shot_metadata(self.session_id, job, event, settings, frame, shot.captured_at)
        image, record["flatfield"], warning = flat_fielded(self.flatfield, frame, event.light)
        if warning is not None and warning not in self._warnings:
            self._warnings.append(warning)
        self.writer.submit(name, image, record, frame.pixel_format)
        in_flight.popleft()  # queued: nothing after this may write it a second time
        with self._lock:
            self._submitted[name] = (job.coin_id, event.index)
        self._taken += 1
        self._emitter.emit(ShotDone(job.coin_id, event.index, name))
        return retaken

    def _retake(self, shot: _InFlight, exc: RigError) -> Frame | None:
        """Take a shot again whose frame was lost after its exposure; None if it was skipped."""
        job, event = shot.job, shot.event
        with self._lock:
            current, self._shot = self._shot, event.index  # retries name this shot
        self._errors.append(f"shot {event.index} of {job.coin_id}: frame lost: {exc}")
        shot.exposure = Collected(error=exc)  # never waited on again, even on the way out
        self._emitter.emit(ShotRetry(job.coin_id, event.index, 1, str(exc)))
        try:
            shot.settings = self.engine.setup_shot(event, self._patterns)
            shot.captured_at = utc_now()
            frame = self.engine.exec_shot(event)
        except RigError as again:
            self._failed(job, event, again)
            return None
        finally:
            with self._lock:
                self._shot = current
        return frame

    def _collect_on_the_way_out(self, in_flight: deque[_InFlight]) -> None:
        """Keep exposed shots while an error unwinds; never move a device, never raise."""
        while in_flight:
            shot = in_flight[0]
            try:
                self._collect(in_flight, retake=False)
            except Exception as exc:
                job, event = shot.job, shot.event
                if in_flight and in_flight[0] is shot:  # not queued for writing
                    in_flight.popleft()
                    self._lost[self._file_name(job, event)] = f"lost after its exposure: {exc}"
                self._errors.append(f"shot {event.index} of {job.coin_id} lost: {exc}")
                log.warning("shot %d of %s lost: %s", event.index, job.coin_id, exc)

    def _failed(self, job: CoinJob, event: ShotEvent, exc: RigError) -> None:
        """A shot that failed after the engine's retries: skip it, or pause the session."""
        error = f"shot {event.index} of {job.coin_id}: {exc}"
        self._errors.append(error)
        if event.on_failure == "skip":
            with self._lock:
                self._skipped[self._file_name(job, event)] = str(exc)
            self._skipped_now += 1
            self._emitter.emit(ShotSkipped(job.coin_id, event.index, str(exc)))
            return
        raise _Stop(FinishReason.DEVICE_FAILURE, error) from exc

    def _check_calibration(self) -> None:
        """Find the calibrations in use; missing or stale ones are warnings, never a stop."""
        if self.calibration is None and self.config is not None:
            try:
                camera = self.rig.camera.identity()
                self.calibration = calibration_for_rig(self.config, camera)
            except Exception as exc:  # like identity: informative, never worth a failed capture
                self._warnings.append(f"calibration not checked: {exc}")
        if self.calibration is not None:
            self._warnings.extend(self.calibration.warnings)

    def _file_name(self, job: CoinJob, event: ShotEvent) -> str:
        return image_name(job.coin_id, event.side, event.index, self.writer.image_format)

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise _Stop(FinishReason.STOP_REQUESTED, "stop requested")

    def _on_retry(self, attempt: int, exc: BaseException) -> None:
        self._errors.append(f"retry {attempt}: {exc}")
        with self._lock:
            coin, shot = self._coin, self._shot
        self._emitter.emit(ShotRetry(coin or "", shot, attempt, str(exc)))

    # ------------------------------------------------------------ ending
    def _finish(
        self, final: RunState, reason: FinishReason, message: str
    ) -> tuple[RunState, FinishReason, str]:
        """Drain the writer and park; a failure here can only make the ending worse."""
        self._set_state(RunState.FINISHING)
        try:
            self.writer.flush()
        except DatasetWriteError as exc:
            self._errors.append(str(exc))
            if final is RunState.DONE:
                final, message = RunState.PAUSED, str(exc)
                reason = FinishReason.DISK_FULL if exc.disk_full else FinishReason.ERROR
        parked = self.engine.park()
        self._errors.extend(f"parking: {p}" for p in parked)
        return final, reason, message

    def _record(
        self,
        state: RunState,
        reason: FinishReason | None,
        message: str,
        started_at: str,
        started: float,
        physical_before: float | None,
    ) -> str | None:
        """Write sessions/SESSION_ID.json; return None, or why it could not be written."""
        counts, missing = shot_tally(
            self._todo,
            len(self.events) * len(self.coins),
            [r["file_name"] for r in self.writer.written],
            self._skipped,
            self._lost,
            self.writer.image_format,
            None if state is RunState.RUNNING else f"not taken ({reason or 'running'})",
        )
        clock = self.rig.extras.get("clock")
        record = {
            "session_id": self.session_id,
            "status": state.value,
            "finish_reason": reason.value if reason else None,
            "message": message,
            "plan": self.plan.model_dump(mode="json"),
            "image_format": self.writer.image_format,
            "rig_config": self.config.model_dump(mode="json") if self.config else None,
            "devices": self._devices,
            "coins": [{"coin_id": j.coin_id, "slot": j.slot} for j in self.coins],
            "counts": counts,
            "timings": session_timings(
                started_at, started, physical_before, clock, self._todo, self.config
            ),
            "on_turntable": self._on_turntable,
            "calibration": self.calibration.summary() if self.calibration is not None else None,
            "warnings": list(self._warnings),
            "errors": list(self._errors),
            "missing": missing,
        }
        try:
            self.writer.write_session(self.session_id, record)
        except DatasetWriteError as exc:
            log.error("could not write the session record: %s", exc)
            return str(exc)
        return None

    def _set_state(
        self, state: RunState, reason: FinishReason | None = None, message: str = ""
    ) -> None:
        with self._lock:
            if state not in TRANSITIONS[self._state]:
                raise AssertionError(f"bad session transition {self._state} → {state}")
            self._state, self._reason, self._message = state, reason, message
        self._emitter.emit(StateChanged(state, reason))


@dataclass
class _InFlight:
    """A shot whose exposure is over and whose frame may still be reading out."""

    job: CoinJob
    event: ShotEvent
    settings: ShotSettings
    exposure: Exposure
    captured_at: str
