"""One planned GRBL move as the emulator runs it: its duration, and where the axes are meanwhile.

Each axis follows a trapezoidal profile at min(feed, its max rate $110+) and its acceleration
($120+); the move lasts as long as its slowest axis, and every axis is interpolated linearly
along it (GRBL's planner keeps the axes in step); during a feed hold the emulator asks for
the position at the moment of the hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rig.motion import trapezoid_duration_s


@dataclass
class Motion:
    """One planned move: where from and to (machine units), and when it runs (wall clock)."""

    target: list[float]
    feed_units_per_min: float | None  # None: rapid (G0) at each axis's max rate
    homing: bool = False
    alarm_code: int | None = None
    start: list[float] | None = None
    started_at: float = 0.0
    deadline: float = 0.0
    held_at: float | None = None

    def duration_s(self, start: list[float], settings: Mapping[int, float]) -> float:
        """Seconds from `start` to the target: the slowest axis's trapezoid ($110+, $120+)."""
        duration = 0.0
        for i, (begin, end) in enumerate(zip(start, self.target, strict=True)):
            distance = end - begin
            if distance == 0.0:
                continue
            max_rate = settings[110 + i]
            rate = (
                max_rate
                if self.feed_units_per_min is None
                else min(self.feed_units_per_min, max_rate)
            )
            duration = max(duration, trapezoid_duration_s(distance, rate / 60.0, settings[120 + i]))
        return duration

    def position_at(self, now: float) -> list[float]:
        """The axes' position at `now` (clamped to the move), linearly from start to target."""
        assert self.start is not None
        span = self.deadline - self.started_at
        fraction = 1.0 if span <= 0 else min(1.0, max(0.0, (now - self.started_at) / span))
        return [a + (b - a) * fraction for a, b in zip(self.start, self.target, strict=True)]

    def halfway(self) -> list[float]:
        """The midpoint of the move, where an injected limit alarm stops the axes."""
        assert self.start is not None
        return [(a + b) / 2.0 for a, b in zip(self.start, self.target, strict=True)]
