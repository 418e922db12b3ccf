"""Motion logic shared by turntable and arm drivers and their emulators: limits and timing."""

from __future__ import annotations

import math

from rig.errors import SafetyError


def check_within(value: float, low: float, high: float, *, what: str, unit: str) -> float:
    """Return value if it is finite and within [low, high].

    Raises:
        SafetyError: the value is NaN/inf or outside the limits (nothing must be sent then).
    """
    if not math.isfinite(value):
        raise SafetyError(f"{what} {value} {unit} is not a finite number")
    if value < low or value > high:
        raise SafetyError(
            f"{what} {value:g} {unit} is outside the limits [{low:g}, {high:g}] {unit}"
        )
    return value


def trapezoid_duration_s(distance: float, max_speed: float, accel: float) -> float:
    """Time to travel `distance` from rest to rest with a trapezoidal (or triangular) profile."""
    distance = abs(distance)
    if distance == 0.0:
        return 0.0
    if max_speed <= 0 or accel <= 0:
        raise ValueError("max_speed and accel must be positive")
    ramp_distance = max_speed * max_speed / accel  # accelerate plus decelerate
    if distance <= ramp_distance:
        return 2.0 * math.sqrt(distance / accel)
    return 2.0 * max_speed / accel + (distance - ramp_distance) / max_speed


def motion_timeout_s(
    distance: float, max_speed: float, accel: float, *, margin: float = 1.5, floor_s: float = 2.0
) -> float:
    """A generous timeout for a motion: its expected duration times a margin, never below a floor."""
    return max(floor_s, margin * trapezoid_duration_s(distance, max_speed, accel))
