"""Simulated time: a scale (0 = no waiting, 1 = real time) and a ledger of physical durations.

The ledger keeps one timeline per actor. An actor is what performs actions one after another:
by default every device belongs to the one actor `MAIN`, so the rig's physical time is the sum
of every action, as when one thread commands the devices in turn. A device given its own actor
(`assign`, e.g. the arm while it works beside the camera) runs on its own timeline; `sync` is a
synchronisation point where every actor waits for the slowest. Between two synchronisation
points the physical time is the maximum over the actors, and `physical_duration_s()` is the
makespan: the end of the latest timeline. An action starts at its actor's current time (the end
of that actor's previous action or of the last sync), which is when the host, having waited for
what came before, can command it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

#: the actor every device belongs to unless assigned another
MAIN = "main"


@dataclass(frozen=True)
class LedgerEntry:
    """One physical action: which device, what, how long it takes, and when on its timeline."""

    device: str
    action: str
    duration_s: float
    start_s: float = 0.0
    actor: str = MAIN

    @property
    def end_s(self) -> float:
        """When the action ends on its actor's timeline."""
        return self.start_s + self.duration_s


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
        self._actor_of: dict[str, str] = {}  # device → actor, for devices not on MAIN
        self._time: dict[str, float] = {MAIN: 0.0}  # actor → the end of its timeline

    def now(self) -> float:
        """Monotonic wall time in seconds."""
        return time.monotonic()

    def record(self, device: str, action: str, duration_s: float) -> float:
        """Record a physical action and return the wall-clock deadline at which it completes."""
        duration = max(0.0, duration_s)
        with self._lock:
            actor = self._actor_of.get(device, MAIN)
            start = self._time.get(actor, self._time[MAIN])
            self._time[actor] = start + duration
            self._entries.append(LedgerEntry(device, action, duration, start, actor))
        return self.now() + duration * self.scale

    def sleep_physical(self, device: str, action: str, duration_s: float) -> None:
        """Record an action and wait its scaled duration (for actions with no status to poll)."""
        deadline = self.record(device, action, duration_s)
        remaining = deadline - self.now()
        if remaining > 0:
            time.sleep(remaining)

    def assign(self, device: str, actor: str | None) -> None:
        """Give `device` its own actor's timeline (None: back to MAIN), at a synchronisation point.

        The device's actions then run beside MAIN's until the next `sync`. Assigning syncs first,
        so the new timeline starts when everything recorded so far has ended.
        """
        with self._lock:
            self._sync_locked()
            if actor is None or actor == MAIN:
                self._actor_of.pop(device, None)
            else:
                self._actor_of[device] = actor
                self._time.setdefault(actor, self._time[MAIN])

    def sync(self) -> float:
        """A synchronisation point: every actor waits for the latest; returns that time."""
        with self._lock:
            return self._sync_locked()

    def _sync_locked(self) -> float:
        latest = max(self._time.values())
        for actor in self._time:
            self._time[actor] = latest
        return latest

    def actor_time_s(self, actor: str = MAIN) -> float:
        """The end of one actor's timeline so far."""
        with self._lock:
            return self._time.get(actor, self._time[MAIN])

    def entries(self) -> list[LedgerEntry]:
        """A copy of the ledger."""
        with self._lock:
            return list(self._entries)

    def physical_duration_s(self, device: str | None = None) -> float:
        """Physical time so far: the makespan over all actors, or one device's busy time."""
        with self._lock:
            if device is None:
                return max(self._time.values())
            return sum(e.duration_s for e in self._entries if e.device == device)

    def reset(self) -> None:
        """Forget the ledger (and every actor's time); assignments stay."""
        with self._lock:
            self._entries.clear()
            self._time = dict.fromkeys(self._time, 0.0)
