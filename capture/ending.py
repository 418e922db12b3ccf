"""How a capture session ends: done, paused or failed, and which exception is raised again.

Whatever ended the session, the runner (capture.session) drains the writer and parks the rig
(`wind_down`), records the ending and only then re-raises `Ending.pending`:

- a device that keeps failing (after the engine's retries), a stop request: `paused`;
- disk full: `paused` with reason disk_full;
- a plan the rig cannot run, a dataset it cannot resume: `failed`, re-raised;
- Ctrl-C (KeyboardInterrupt): `paused` (interrupted), re-raised;
- anything unexpected: `failed`, re-raised.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from capture.engine import CaptureEngine
from capture.events import FinishReason, RunState
from capture.tally import SessionTally
from capture.writer import DatasetWriteError, DatasetWriter
from dataset.layout import DatasetError
from rig.errors import ConfigError, RigError

log = logging.getLogger(__name__)


class PauseSession(Exception):
    """End the session in the resumable `paused` state, for `reason`."""

    def __init__(self, reason: FinishReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def stop_if_asked(stop: threading.Event) -> None:
    """Pause the session if a stop was requested.

    Raises:
        PauseSession: `stop` is set.
    """
    if stop.is_set():
        raise PauseSession(FinishReason.STOP_REQUESTED, "stop requested")


@dataclass(frozen=True)
class Ending:
    """A session's final state, why, what to tell, and the exception to raise once recorded."""

    state: RunState
    reason: FinishReason
    message: str = ""
    pending: BaseException | None = None


COMPLETED = Ending(RunState.DONE, FinishReason.COMPLETED)


def ending_for(exc: BaseException, session_id: str) -> Ending:
    """The ending an exception out of a running session leads to."""
    if isinstance(exc, PauseSession):
        return Ending(RunState.PAUSED, exc.reason, str(exc))
    if isinstance(exc, DatasetWriteError):
        reason = FinishReason.DISK_FULL if exc.disk_full else FinishReason.ERROR
        return Ending(RunState.PAUSED, reason, str(exc))
    if isinstance(exc, ConfigError | DatasetError):
        # Refused before any shot: a plan this rig cannot run, a dataset it cannot resume.
        return Ending(RunState.FAILED, FinishReason.ERROR, str(exc), exc)
    if isinstance(exc, RigError):
        # A device that failed outside a shot (arm, homing) after its retries.
        return Ending(RunState.PAUSED, FinishReason.DEVICE_FAILURE, str(exc))
    if isinstance(exc, KeyboardInterrupt):
        return Ending(RunState.PAUSED, FinishReason.INTERRUPTED, "interrupted", exc)
    log.error("capture session %s failed", session_id, exc_info=exc)
    return Ending(RunState.FAILED, FinishReason.ERROR, f"{type(exc).__name__}: {exc}", exc)


def wind_down(
    ending: Ending, writer: DatasetWriter, engine: CaptureEngine, tally: SessionTally
) -> Ending:
    """Drain the writer and park the rig; a failure here can only make the ending worse."""
    try:
        writer.flush()
    except DatasetWriteError as exc:
        tally.errors.append(str(exc))
        if ending.state is RunState.DONE:
            reason = FinishReason.DISK_FULL if exc.disk_full else FinishReason.ERROR
            ending = Ending(RunState.PAUSED, reason, str(exc))
    parked = engine.park()
    tally.errors.extend(f"parking: {p}" for p in parked)
    return ending
