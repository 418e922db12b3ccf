"""Progress display for `rig capture`: rich bars (per tray, per coin) on a terminal, else lines."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from capture.events import (
    CoinDone,
    CoinStarted,
    Event,
    SessionDone,
    SessionPaused,
    SessionRecordFailed,
    ShotDone,
    ShotRetry,
    ShotSkipped,
)


class PlainProgress:
    """One line per notable event, for logs and pipes (no cursor tricks)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Nothing to tear down."""

    def __call__(self, event: Event) -> None:
        """Print the event as one line."""
        line = _describe(event)
        if line:
            print(line, file=self.stream, flush=True)


class RichProgress:
    """Two bars: coins of the tray, shots of the current coin; warnings printed above them."""

    def __init__(self, coins: int, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self._tray: TaskID = self._progress.add_task("tray", total=coins)
        self._coin: TaskID | None = None

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop redrawing (idempotent)."""
        self._progress.stop()

    def __call__(self, event: Event) -> None:
        """Advance the bars."""
        progress = self._progress
        if isinstance(event, CoinStarted):
            if self._coin is not None:
                progress.remove_task(self._coin)
            self._coin = progress.add_task(f"coin {event.coin_id}", total=event.to_take)
        elif isinstance(event, ShotDone | ShotSkipped) and self._coin is not None:
            progress.advance(self._coin)
        elif isinstance(event, CoinDone):
            progress.advance(self._tray)
        line = _describe(event)
        if line and not isinstance(event, ShotDone | CoinStarted | CoinDone):
            progress.console.print(line, markup=False, highlight=False)


def _describe(event: Event) -> str:
    if isinstance(event, CoinStarted):
        return f"coin {event.coin_id}: {event.to_take} of {event.total} shots to take"
    if isinstance(event, ShotDone):
        return f"  shot {event.shot:04d} -> {event.file_name}"
    if isinstance(event, ShotRetry):
        return f"  retry {event.attempt} (shot {event.shot}): {event.error}"
    if isinstance(event, ShotSkipped):
        return f"  skipped shot {event.shot:04d}: {event.error}"
    if isinstance(event, CoinDone):
        return f"coin {event.coin_id}: {event.taken} taken, {event.skipped} skipped"
    if isinstance(event, SessionPaused):
        return f"paused ({event.reason}): {event.message}"
    if isinstance(event, SessionDone):
        return f"session {event.state}: {event.taken} taken, {event.skipped} skipped"
    if isinstance(event, SessionRecordFailed):
        return (
            f"warning: sessions/{event.session_id}.json not updated ({event.error}); "
            f"the session ended {event.state} ({event.reason})"
        )
    return ""


def make_progress(coins: int) -> PlainProgress | RichProgress:
    """Rich bars when stdout is a terminal, plain lines otherwise."""
    return RichProgress(coins) if sys.stdout.isatty() else PlainProgress()
