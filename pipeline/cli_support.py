"""Shared command-line plumbing: one-line errors with exit code 2, --debug, --version."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version

import typer

from rig.errors import RigError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


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
    """Turn expected failures into one stderr line and exit 2 (re-raise with --debug)."""
    handled: tuple[type[BaseException], ...] = (RigError, UserError, *extra)
    try:
        yield
    except handled as exc:
        if settings.debug:
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise fail(message) from None


def set_debug(value: bool) -> None:
    """Enable tracebacks for expected errors."""
    settings.debug = value
    if value:
        sys.tracebacklimit = 1000


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
