"""Simulated time: a scale (0 = no waiting, 1 = real time) and a ledger of physical durations."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class LedgerEntry:
    """One physical action: which device, what, and how long it takes on real hardware."""

    device: str
    action: str
    duration_s: float


class SimClock:
    """Turns physical durations into wall-clock waits and records them in a ledger.

    Emulators ask `deadline(duration_s)` when an action starts and report the device busy while
    `now() < deadline`; with scale 0 every action is finished as soon as it is asked, but the
    ledger still knows how long the real rig would have taken.
    """

    def __init__(self, scale: float = 0.0) -> None:
        if scale < 0:
            raise ValueError("time scale must be >= 0")
        self.scale = scale
        self._lock = threading.Lock()
        self._entries: list[LedgerEntry] = []

    def now(self) -> float:
        """Monotonic wall time in seconds."""
        return time.monotonic()

    def record(self, device: str, action: str, duration_s: float) -> float:
        """Record a physical action and return the wall-clock deadline at which it completes."""
        with self._lock:
            self._entries.append(LedgerEntry(device, action, max(0.0, duration_s)))
        return self.now() + max(0.0, duration_s) * self.scale

    def sleep_physical(self, device: str, action: str, duration_s: float) -> None:
        """Record an action and wait its scaled duration (for actions with no status to poll)."""
        deadline = self.record(device, action, duration_s)
        remaining = deadline - self.now()
        if remaining > 0:
            time.sleep(remaining)

    def entries(self) -> list[LedgerEntry]:
        """A copy of the ledger."""
        with self._lock:
            return list(self._entries)

    def physical_duration_s(self, device: str | None = None) -> float:
        """Total physical time recorded (for one device, or all)."""
        with self._lock:
            return sum(e.duration_s for e in self._entries if device is None or e.device == device)

    def reset(self) -> None:
        """Forget the ledger."""
        with self._lock:
            self._entries.clear()
