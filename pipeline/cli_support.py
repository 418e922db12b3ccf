"""Shared command-line plumbing: exit codes, one-line errors, the log file, --debug, --version.

Exit codes of every command: 0 done, 1 failed, 2 bad input (nothing moved), 3 paused or a
device unreachable after its retries (rerun the same command), 130 interrupted.

Log records go to a log file (`log_file()`); the terminal shows only this project's own
warnings and errors, never a library's chatter (pymodbus' frame dumps, its retry notes).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, TextIO

import typer

from rig.errors import DeviceUnreachable, RigError

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_RERUN = 3  # paused, or a device unreachable after its retries: rerun the same command
EXIT_INTERRUPTED = 130

# The packages whose warnings reach the terminal; any other logger writes to the log file only.
OWN_PACKAGES = ("rig", "capture", "pipeline", "training", "dataset")
LOG_ENV = "COINRIG_LOG"


class UserError(Exception):
    """A mistake in what the user asked for (bad path, bad value); shown as one line."""


class _Settings:
    debug: bool = False


settings = _Settings()


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print one line on stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@contextmanager
def expected_errors(*extra: type[BaseException]) -> Iterator[None]:
    """Turn expected failures into one stderr line and exit 2 (re-raise with --debug).

    A device unreachable after its connect retries exits 3: a rerun may find it.
    """
    handled: tuple[type[BaseException], ...] = (RigError, UserError, *extra)
    try:
        yield
    except handled as exc:
        if settings.debug:
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, DeviceUnreachable):
            raise fail(f"{message}; rerun the same command", EXIT_RERUN) from None
        raise fail(message) from None


def set_debug(value: bool) -> None:
    """Enable tracebacks for expected errors."""
    settings.debug = value
    if value:
        sys.tracebacklimit = 1000


def log_file() -> Path:
    """The log file: $COINRIG_LOG, else $XDG_STATE_HOME (~/.local/state)/coinrig/rig.log."""
    explicit = os.environ.get(LOG_ENV)
    if explicit:
        return Path(explicit)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "coinrig" / "rig.log"


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (a test runner swaps it per command)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        """The current sys.stderr."""
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # always the current sys.stderr


def _own(record: logging.LogRecord) -> bool:
    return record.name.split(".", 1)[0] in OWN_PACKAGES


def setup_logging(debug: bool = False) -> Path:
    """Log everything to the log file, and only this project's warnings to the terminal.

    Idempotent: a second call replaces the handlers of the first. Returns the log file.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_coinrig", False)]:
        root.removeHandler(handler)
        handler.close()
    path = log_file()
    handlers: list[logging.Handler] = []
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # delay: no file until something is logged (a refused command leaves nothing behind)
        to_file = logging.handlers.RotatingFileHandler(
            path, maxBytes=5_000_000, backupCount=2, delay=True, encoding="utf-8"
        )
        to_file.setFormatter(
            logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
        )
        handlers.append(to_file)
    except OSError:
        pass  # an unwritable state folder must not stop a capture; the terminal still warns
    terminal = _Stderr()
    terminal.setLevel(logging.WARNING)
    terminal.addFilter(_own)
    terminal.setFormatter(logging.Formatter("%(message)s"))
    handlers.append(terminal)
    for handler in handlers:
        handler._coinrig = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    return path


def software_name() -> str:
    """`coinrig X.Y.Z` as recorded in datasets and calibration records (`coinrig` uninstalled)."""
    try:
        return f"coinrig {version('coinrig')}"
    except PackageNotFoundError:
        return "coinrig"


def print_version(value: bool) -> None:
    """The eager `--version` callback: print `coinrig X.Y.Z` and exit.

    Raises:
        typer.Exit: always, once the version is printed (when the option is given).
    """
    if value:
        name = software_name()
        typer.echo(name if name != "coinrig" else "coinrig (not installed)")
        raise typer.Exit()


# The options every command root takes: one definition, so `rig` and `pipeline` cannot drift.
DebugOption = Annotated[bool, typer.Option("--debug", help="Show tracebacks for expected errors.")]
VersionOption = Annotated[
    bool,
    typer.Option(
        "--version", callback=print_version, is_eager=True, help="Print the version and exit."
    ),
]
