"""The session runner: runs a plan on a Rig for a list of coins, writing to a dataset.

The runner sequences the session (prepare, each coin: bring, shoot, flip, shoot, leave; then
end) over pieces with one job each: coin handling (capture.handling: serial, or overlapped with
the arm working in its own thread while the camera shoots) moves the coins, the engine
(capture.engine) owns the devices, the shot pipeline
(capture.shots) the shots in flight, the tally and recorder (capture.tally) what was done and
sessions/SESSION_ID.json, the ending policy (capture.ending) how the session ends, and
SessionProgress (capture.events) its state and position. Whatever happens, `run()` drains the
writer, parks the rig, records why it finished and only then re-raises:

- a device that keeps failing (after the engine's retries): the shot is skipped when the plan
  says `on_failure: skip`, otherwise the rig is parked and the session ends `paused`;
- disk full: `paused` with reason disk_full; nothing half-written stays behind;
- Ctrl-C (KeyboardInterrupt): no new exposure starts; the shots already exposed (up to
  capture.shots.IN_FLIGHT, their frames perhaps still reading out) are collected and written on
  the way out, the rig parked, the session `paused` (interrupted), and the KeyboardInterrupt
  re-raised;
- anything unexpected: `failed`, parked, re-raised.

Before parking, the arm's work in progress beside the shots is let finish (never half a pick).

An exposed shot whose frame cannot be kept on the way out is listed in the record's `missing`
as lost after its exposure, not as not taken. Every ending but `done` is resumable: a rerun
skips shots already on disk with their checksum.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from capture.calibration.flatfield import FlatFieldCorrector
from capture.calibration.store import CalibrationUse, calibration_for_rig
from capture.ending import COMPLETED, Ending, ending_for, stop_if_asked, wind_down
from capture.engine import CaptureEngine, CoinJob, Prompt
from capture.events import (
    CoinDone,
    CoinStarted,
    Emitter,
    Listener,
    RunState,
    RunStatus,
    SessionDone,
    SessionPaused,
    SessionProgress,
    SessionRecordFailed,
    SessionStarted,
    ShotRetry,
)
from capture.handling import Handling, SerialHandling, choose_handling
from capture.plan import Plan, ShotEvent, check_plan, expand
from capture.resume import ResumeIndex
from capture.shots import ShotPipeline
from capture.tally import SessionRecorder, SessionSpec, SessionTally
from capture.writer import DatasetWriter
from dataset.layout import DatasetError, validate_coin_id
from rig.config import RigConfig
from rig.devices import Rig
from rig.errors import ConfigError

log = logging.getLogger(__name__)


def new_session_id() -> str:
    """A sortable, unique session id: UTC time plus random hex."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def check_jobs(coins: Sequence[CoinJob]) -> None:
    """Refuse bad coin ids and duplicate coins or slots, before anything can move or be written.

    Raises:
        DatasetError: a coin id the dataset cannot hold, or a coin or tray slot listed twice.
    """
    for job in coins:
        validate_coin_id(job.coin_id)
    ids = [job.coin_id for job in coins]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"a coin appears twice in the job list: {ids}")
    slots = [job.slot for job in coins if job.slot is not None]
    if len(set(slots)) != len(slots):
        raise DatasetError(f"a tray slot appears twice in the job list: {slots}")


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
        check_jobs(coins)
        self.rig = rig
        self.writer = writer
        self.spec = SessionSpec(
            session_id or new_session_id(), plan, tuple(expand(plan)), tuple(coins), config
        )
        self.coin_info = coin_info
        # A frame is waited for as long as a grab would be (the camera's grab_timeout_s): a
        # camera that lost a trigger must not hold the session for ever.
        timeout_s = config.camera.grab_timeout_s if config is not None else None
        self.engine = CaptureEngine(
            rig, plan, prompt=prompt, sleep=sleep, backoff_s=backoff_s, frame_timeout_s=timeout_s
        )
        self.engine.on_retry = self._on_retry
        self._emitter = Emitter(list(listeners))
        self._progress = SessionProgress(self._emitter)
        # calibration None: looked up from config.calibration when the session starts
        self._tally = SessionTally(calibration)
        self._stop = threading.Event()
        # the serial schedule until _prepare knows which coins go on the turntable
        self._handling: Handling = SerialHandling(self.engine)
        self._shots = ShotPipeline(
            self.spec,
            self.engine,
            writer,
            self._tally,
            self._progress,
            self._emitter,
            self._stop,
            flatfield,
        )

    # ------------------------------------------------------------ public
    @property
    def session_id(self) -> str:
        """The session's id (its record is sessions/SESSION_ID.json)."""
        return self.spec.session_id

    def add_listener(self, listener: Listener) -> None:
        """Subscribe to session events."""
        self._emitter.add(listener)

    def request_stop(self) -> None:
        """Ask the session to stop after the current shot, park and pause (thread-safe)."""
        self._stop.set()

    def status(self) -> RunStatus:
        """A frozen snapshot of where the session is."""
        return self._progress.status(self._tally.counts)

    def run(self) -> RunStatus:
        """Run the session to its end; returns the final status (done or paused).

        Raises:
            KeyboardInterrupt: after parking and recording (the session is paused, resumable).
            Exception: anything unexpected, after parking and recording (the session failed).
        """
        twin = self.rig.twin
        recorder = SessionRecorder(
            self.spec, self.writer, self._tally, twin.clock if twin is not None else None
        )
        self._progress.move_to(RunState.PREPARING)
        try:
            self._prepare()
            recorder.write(RunState.RUNNING, None, "")
            self._progress.move_to(RunState.RUNNING)
            self.engine.setup_session()
            for job in self.spec.coins:
                self._run_coin(job)
            ending = COMPLETED
        except BaseException as exc:
            ending = ending_for(exc, self.session_id)
        self._settle_handling()
        self._end(ending, recorder)
        if ending.pending is not None:
            raise ending.pending
        return self.status()

    # ------------------------------------------------------------ steps
    def _prepare(self) -> None:
        spec, tally = self.spec, self._tally
        if spec.config is not None:
            problems = check_plan(spec.plan, spec.config)
            if problems:
                raise ConfigError(f"plan {spec.plan.name!r} cannot run on this rig: {problems[0]}")
        index = ResumeIndex(self.writer.root)
        for job in spec.coins:
            todo = index.todo(job.coin_id, spec.events, self.writer.image_format)
            tally.plan_coin(job.coin_id, todo)
        for device in self.rig.devices():
            try:
                tally.devices.append(dataclasses.asdict(device.identity()))
            except Exception as exc:  # identity is informative only; never stop a capture for it
                tally.devices.append({"error": str(exc)})
        twin = self.rig.twin
        if twin is not None and twin.mixed_warning is not None:
            tally.warn_once(twin.mixed_warning)  # real and emulated devices in one record
        self._check_calibration()
        coins = [(job, tally.todo[job.coin_id]) for job in spec.coins]
        self._handling = choose_handling(
            self.engine, self.rig, spec.config, coins, spec.plan.sides[0]
        )
        total = len(spec.events) * len(spec.coins)
        _, _, to_take = tally.counts()
        self._emitter.emit(SessionStarted(self.session_id, len(spec.coins), total, to_take))

    def _check_calibration(self) -> None:
        """Find the calibrations in use; missing or stale ones are warnings, never a stop."""
        tally, config = self._tally, self.spec.config
        if tally.calibration is None and config is not None:
            try:
                camera = self.rig.camera.identity()
                tally.calibration = calibration_for_rig(config, camera)
            except Exception as exc:  # like identity: informative, never worth a failed capture
                tally.warnings.append(f"calibration not checked: {exc}")
        if tally.calibration is not None:
            tally.warnings.extend(tally.calibration.warnings)

    def _run_coin(self, job: CoinJob) -> None:
        todo = self._tally.todo[job.coin_id]
        self._progress.at_coin(job.coin_id)
        self._emitter.emit(CoinStarted(job.coin_id, len(self.spec.events), len(todo)))
        info = self.coin_info(job.coin_id) if self.coin_info else {}
        self.writer.add_coin(job.coin_id, **info)
        self._tally.start_coin()
        if todo:
            self._shoot_coin(job, todo)
        self._emitter.emit(CoinDone(job.coin_id, self._tally.coin_taken, self._tally.coin_skipped))

    def _shoot_coin(self, job: CoinJob, todo: list[ShotEvent]) -> None:
        """Load the coin, take its shots (flipping it between sides), return it."""
        stop_if_asked(self._stop)
        side = self.spec.plan.sides[0]  # coins lie first-side up in the tray
        self._handling.bring(job, side)
        self._tally.on_turntable = job.coin_id
        try:
            for event in todo:
                stop_if_asked(self._stop)
                if event.side != side:
                    # a frame lost after its exposure is retaken with the right side up
                    self._shots.collect_all()
                    side = event.side
                    self._handling.flip(job, side)
                self._shots.shoot(job, event)
            self._shots.collect_all()
            stop_if_asked(self._stop)
            self._handling.leave(job)  # overlapped: it stays until the next coin swaps it out
            self._tally.on_turntable = self._handling.on_turntable()
        except BaseException:
            self._shots.keep_on_the_way_out()
            raise

    def _settle_handling(self) -> None:
        """Let the arm finish its task in progress (never half a pick); note where coins lie."""
        tally = self._tally
        tally.errors.extend(self._handling.settle())
        tally.on_turntable = self._handling.on_turntable()
        tally.staged = self._handling.staged()

    def _on_retry(self, attempt: int, exc: BaseException) -> None:
        self._tally.errors.append(f"retry {attempt}: {exc}")
        coin, shot = self._progress.where()
        self._emitter.emit(ShotRetry(coin or "", shot, attempt, str(exc)))

    # ------------------------------------------------------------ ending
    def _end(self, ending: Ending, recorder: SessionRecorder) -> None:
        """Wind down, record the ending, announce it; the caller re-raises what is pending."""
        self._progress.move_to(RunState.FINISHING)
        ending = wind_down(ending, self.writer, self.engine, self._tally)
        state, reason, message = ending.state, ending.reason, ending.message
        unrecorded = recorder.write(state, reason, message)
        self._progress.move_to(state, reason, message)
        if unrecorded is not None:
            # The record on disk still says what its last good write said (`running`):
            # put the real ending in the event log.
            self._emitter.emit(SessionRecordFailed(self.session_id, state, reason, unrecorded))
        if state is RunState.PAUSED:
            self._emitter.emit(SessionPaused(reason, message))
        status = self.status()
        self._emitter.emit(
            SessionDone(state, reason, status.taken, status.skipped, message=message)
        )
        if unrecorded is not None:
            # One more try once everything else is done: a full disk may have room again
            # (another process's temporary files, a quota); an honest record is worth it.
            recorder.write(state, reason, message)
