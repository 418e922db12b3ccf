"""Retry a device command with exponential backoff (serial links lose bytes; zero retries is a bug)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from rig.errors import DeviceTimeout, TransportError

T = TypeVar("T")
log = logging.getLogger(__name__)


def with_retries(
    action: Callable[[], T],
    *,
    attempts: int,
    backoff_s: float = 0.05,
    retry_on: tuple[type[BaseException], ...] = (DeviceTimeout, TransportError),
    sleep: Callable[[float], None] | None = None,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """Call `action` up to `attempts` times, doubling the wait between tries; re-raise the last error."""
    import time

    pause = sleep or time.sleep
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except retry_on as exc:
            if attempt == attempts:
                raise
            log.warning("attempt %d/%d failed: %s", attempt, attempts, exc)
            if on_retry is not None:
                on_retry(attempt, exc)
            pause(backoff_s * (2 ** (attempt - 1)))
    raise AssertionError("unreachable")
