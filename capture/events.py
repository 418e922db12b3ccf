"""Session state machine, the events a session emits, and the JSONL session log.

Events are small frozen dataclasses; listeners (the progress bar, the JSONL log) receive them in
the runner's thread. A listener that raises is logged and otherwise ignored: a broken progress bar
must never stop a capture.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)


class RunState(StrEnum):
    """Where a session is in its life."""

    IDLE = "idle"
    PREPARING = "preparing"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHING = "finishing"
    DONE = "done"
    FAILED = "failed"


class FinishReason(StrEnum):
    """Why a session stopped; every state but DONE/completed is resumable."""

    COMPLETED = "completed"
    DEVICE_FAILURE = "device_failure"
    INTERRUPTED = "interrupted"
    STOP_REQUESTED = "stop_requested"
    DISK_FULL = "disk_full"
    ERROR = "error"


# The transitions the runner may make; anything else is a bug in the runner.
TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.IDLE: frozenset({RunState.PREPARING}),
    RunState.PREPARING: frozenset({RunState.RUNNING, RunState.FAILED, RunState.FINISHING}),
    RunState.RUNNING: frozenset({RunState.FINISHING, RunState.FAILED}),
    RunState.FINISHING: frozenset({RunState.DONE, RunState.PAUSED, RunState.FAILED}),
    RunState.PAUSED: frozenset(),
    RunState.DONE: frozenset(),
    RunState.FAILED: frozenset(),
}


def utc_now() -> str:
    """The current time as UTC ISO-8601 with a `Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Event:
    """Base of every session event."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with the event's kind."""
        data = dataclasses.asdict(self)
        data["event"] = type(self).__name__
        return data


@dataclass(frozen=True)
class StateChanged(Event):
    """The session moved to a new state."""

    state: RunState
    reason: FinishReason | None = None


@dataclass(frozen=True)
class SessionStarted(Event):
    """The session begins: how many coins and shots are to be taken."""

    session_id: str
    coins: int
    shots_total: int
    shots_to_take: int


@dataclass(frozen=True)
class CoinStarted(Event):
    """A coin is about to be loaded; `to_take` shots of `total` remain for it."""

    coin_id: str
    total: int
    to_take: int


@dataclass(frozen=True)
class ShotDone(Event):
    """A shot was captured and handed to the writer."""

    coin_id: str
    shot: int
    file_name: str


@dataclass(frozen=True)
class ShotRetry(Event):
    """A device command failed and is retried."""

    coin_id: str
    shot: int | None
    attempt: int
    error: str


@dataclass(frozen=True)
class ShotSkipped(Event):
    """A shot failed for good and was skipped (recorded as missing; a resume retries it)."""

    coin_id: str
    shot: int
    error: str


@dataclass(frozen=True)
class CoinDone(Event):
    """A coin is finished (or was already complete)."""

    coin_id: str
    taken: int
    skipped: int


@dataclass(frozen=True)
class SessionPaused(Event):
    """The session stopped in a resumable state."""

    reason: FinishReason
    message: str


@dataclass(frozen=True)
class SessionDone(Event):
    """The session ended; `state` is done, paused or failed."""

    state: RunState
    reason: FinishReason
    taken: int
    skipped: int
    message: str = ""


@dataclass(frozen=True)
class SessionRecordFailed(Event):
    """sessions/SESSION_ID.json could not be updated (a full disk?).

    The file still holds the last record that was written (often `running`); `state` and
    `reason` are how the session really ended, so the event log tells the truth.
    """

    session_id: str
    state: RunState
    reason: FinishReason | None
    error: str


Listener = Callable[[Event], None]


class Emitter:
    """Delivers events to listeners; a listener that throws is logged, never fatal."""

    def __init__(self, listeners: list[Listener] | None = None) -> None:
        self._listeners: list[Listener] = list(listeners or [])

    def add(self, listener: Listener) -> None:
        """Subscribe a listener."""
        self._listeners.append(listener)

    def emit(self, event: Event) -> None:
        """Send an event to every listener."""
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event listener %r failed on %r", listener, event)


class JsonlLog:
    """A listener that appends each event, timestamped, as one JSON line (flushed per line)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._file: IO[str] | None = path.open("a", encoding="utf-8")

    def __call__(self, event: Event) -> None:
        """Write one event."""
        line = json.dumps({"time": utc_now(), **event.to_json()}, default=str)
        with self._lock:
            if self._file is None:
                return
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


@dataclass(frozen=True)
class RunStatus:
    """A frozen snapshot of a session for display: state, position and counts."""

    state: RunState
    reason: FinishReason | None
    coin_id: str | None
    shot: int | None
    taken: int
    skipped: int
    to_take: int
    message: str = ""


class SessionProgress:
    """Where a session is (state, coin, shot), thread-safe; every state change is checked and sent.

    The runner's thread moves it along; any thread may take a snapshot (`status`).
    """

    def __init__(self, emitter: Emitter) -> None:
        self._emitter = emitter
        self._lock = threading.Lock()
        self._state = RunState.IDLE
        self._reason: FinishReason | None = None
        self._message = ""
        self._coin: str | None = None
        self._shot: int | None = None

    def move_to(
        self, state: RunState, reason: FinishReason | None = None, message: str = ""
    ) -> None:
        """Enter `state` and emit StateChanged.

        Raises:
            AssertionError: TRANSITIONS does not allow the move (a bug in the runner).
        """
        with self._lock:
            if state not in TRANSITIONS[self._state]:
                raise AssertionError(f"bad session transition {self._state} → {state}")
            self._state, self._reason, self._message = state, reason, message
        self._emitter.emit(StateChanged(state, reason))

    def at_coin(self, coin_id: str) -> None:
        """A coin begins: no shot of it yet."""
        with self._lock:
            self._coin, self._shot = coin_id, None

    def at_shot(self, shot: int | None) -> int | None:
        """The shot now being taken (named by retries); returns the one before."""
        with self._lock:
            before, self._shot = self._shot, shot
        return before

    def where(self) -> tuple[str | None, int | None]:
        """The current coin and shot."""
        with self._lock:
            return self._coin, self._shot

    def status(self, counts: Callable[[], tuple[int, int, int]]) -> RunStatus:
        """A frozen snapshot; `counts()` (taken, skipped, to take) is read under the same lock.

        So a snapshot never mixes one moment's state with another's counts; `counts` must not
        call back into this object.
        """
        with self._lock:
            taken, skipped, to_take = counts()
            return RunStatus(
                state=self._state,
                reason=self._reason,
                coin_id=self._coin,
                shot=self._shot,
                taken=taken,
                skipped=skipped,
                to_take=to_take,
                message=self._message,
            )
