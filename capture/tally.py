"""A session's books: what it was asked to do, what it did, and its sessions/SESSION_ID.json.

The runner (capture.session) and its shot pipeline (capture.shots) note here every shot kept,
skipped or lost, every error and warning; the recorder turns that into the session record
(fields: docs/dataset-format.md) whenever the session's state changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from capture.calibration.store import CalibrationUse
from capture.engine import CoinJob
from capture.events import FinishReason, RunState, utc_now
from capture.plan import Plan, ShotEvent
from capture.records import physical_s, session_timings, shot_tally
from capture.writer import DatasetWriteError, DatasetWriter
from rig.config import RigConfig

if TYPE_CHECKING:  # only a simulated rig has a twin clock
    from rig.sim.clock import SimClock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionSpec:
    """What a session runs: its id, plan (and the shots it expands to), rig config and coins."""

    session_id: str
    plan: Plan
    events: Sequence[ShotEvent]
    coins: Sequence[CoinJob]
    config: RigConfig | None = None


class SessionTally:
    """What a session found and did; the counts a status snapshot shows are read under a lock."""

    def __init__(self, calibration: CalibrationUse | None = None) -> None:
        self._lock = threading.Lock()
        self.todo: dict[str, list[ShotEvent]] = {}  # coin → shots still to take, from resume
        self.kept: dict[str, tuple[str, int]] = {}  # file name → (coin, shot), queued to write
        self.skipped: dict[str, str] = {}  # file name → the device error
        self.lost: dict[str, str] = {}  # exposed, then not kept: file name → why
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.devices: list[dict[str, Any]] = []
        self.calibration = calibration
        self.on_turntable: str | None = None
        self.staged: dict[str, str] = {}  # staging pad → the coin left on it
        self.coin_taken = self.coin_skipped = 0  # of the current coin

    def plan_coin(self, coin_id: str, todo: list[ShotEvent]) -> None:
        """The shots of a coin still to take."""
        with self._lock:
            self.todo[coin_id] = todo

    def start_coin(self) -> None:
        """A coin begins: its own counts start at zero."""
        self.coin_taken = self.coin_skipped = 0

    def shot_kept(self, file_name: str, coin_id: str, shot: int) -> None:
        """A shot was queued for writing."""
        with self._lock:
            self.kept[file_name] = (coin_id, shot)
        self.coin_taken += 1

    def shot_skipped(self, file_name: str, error: str) -> None:
        """A shot failed for good and its plan says skip."""
        with self._lock:
            self.skipped[file_name] = error
        self.coin_skipped += 1

    def warn_once(self, warning: str) -> None:
        """Add a warning unless it was given already."""
        if warning not in self.warnings:
            self.warnings.append(warning)

    def counts(self) -> tuple[int, int, int]:
        """Shots taken, skipped and (in all) to take, as one consistent reading."""
        with self._lock:
            to_take = sum(len(v) for v in self.todo.values())
            return len(self.kept), len(self.skipped), to_take


class SessionRecorder:
    """Writes sessions/SESSION_ID.json from the tally; timings count from its construction."""

    def __init__(
        self,
        spec: SessionSpec,
        writer: DatasetWriter,
        tally: SessionTally,
        clock: SimClock | None,
    ) -> None:
        self.spec = spec
        self.writer = writer
        self.tally = tally
        self.clock = clock
        self.started = time.monotonic()
        self.started_at = utc_now()
        self.physical_before = physical_s(clock)

    def write(self, state: RunState, reason: FinishReason | None, message: str) -> str | None:
        """Write the record as of now; return None, or why it could not be written."""
        try:
            self.writer.write_session(self.spec.session_id, self.record(state, reason, message))
        except DatasetWriteError as exc:
            log.error("could not write the session record: %s", exc)
            return str(exc)
        return None

    def record(self, state: RunState, reason: FinishReason | None, message: str) -> dict[str, Any]:
        """The session record: what ran, how it ended, its counts, timings and missing shots."""
        spec, tally = self.spec, self.tally
        counts, missing = shot_tally(
            tally.todo,
            len(spec.events) * len(spec.coins),
            [r["file_name"] for r in self.writer.written],
            tally.skipped,
            tally.lost,
            self.writer.image_format,
            None if state is RunState.RUNNING else f"not taken ({reason or 'running'})",
        )
        timings = session_timings(
            self.started_at,
            self.started,
            self.physical_before,
            self.clock,
            tally.todo,
            spec.config,
            spec.coins,
            spec.plan.sides[0],
        )
        calibration = tally.calibration
        return {
            "session_id": spec.session_id,
            "status": state.value,
            "finish_reason": reason.value if reason else None,
            "message": message,
            "plan": spec.plan.model_dump(mode="json"),
            "image_format": self.writer.image_format,
            "rig_config": spec.config.model_dump(mode="json") if spec.config else None,
            "devices": tally.devices,
            "coins": [{"coin_id": j.coin_id, "slot": j.slot} for j in spec.coins],
            "counts": counts,
            "timings": timings,
            "on_turntable": tally.on_turntable,
            "staged": dict(tally.staged),
            "calibration": calibration.summary() if calibration is not None else None,
            "warnings": list(tally.warnings),
            "errors": list(tally.errors),
            "missing": missing,
        }
