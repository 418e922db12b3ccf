"""The `$H` homing cycle as the emulator runs it (limits.c limits_go_home, mc_homing_cycle).

Each homed axis seeks its switch at $25 for at most 1.5 × $130 (HOMING_AXIS_SEARCH_SCALAR; not
found: ALARM:9), pulls off $27 at $25, locates the switch again at $24, and pulls off once more;
every phase ends with the $26 debounce delay. The machine position is then set to −$27, or to
−$130 + $27 when $23 homes the axis toward negative (HOMING_FORCE_SET_ORIGIN is off in the
stock config.h). The seek and locate phases stop at the switch at full speed, as GRBL's axis
lock does.

Simplifications, stated here and in docs/fidelity-grbl.md: each axis's switch sits at the
physical position 0 of the twin (angle 0); every driven axis homes in one cycle (the stock
config.h homes Z first, then X and Y together); axes move at the homing rate each and the cycle
lasts as long as its slowest axis.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from rig.sim.grbl_motion import Profile

#: limits.c: the seek phase searches 1.5 × max travel; the locate phase 5 × pull-off.
SEARCH_SCALAR = 1.5


@dataclass(frozen=True)
class HomingOutcome:
    """What a homing cycle did: how long it took, where it left the axes, and any alarm."""

    duration_s: float
    alarm_code: int | None  # 9: a switch was not found within the search distance
    physical: dict[int, float]  # axis index → physical position (units) at the end
    machine: dict[int, float]  # axis index → machine position (units) GRBL sets at the end


def _abrupt_s(distance: float, speed: float, accel: float) -> float:
    """Seconds to cover `distance` from rest at up to `speed`, stopping dead at the end."""
    if distance <= 0:
        return 0.0
    ramp = speed * speed / (2.0 * accel)
    if distance <= ramp:
        return math.sqrt(2.0 * distance / accel)
    return speed / accel + (distance - ramp) / speed


def home_axes(
    axes: list[int], physical: Mapping[int, float], settings: Mapping[int, float]
) -> HomingOutcome:
    """Run the homing cycle of `axes` from their physical positions (units, switch at 0)."""
    seek, feed = settings[25] / 60.0, settings[24] / 60.0
    pulloff, debounce = settings[27], settings[26] / 1000.0
    search = SEARCH_SCALAR * max(settings[130 + i] for i in axes)
    durations: list[float] = []
    end_physical: dict[int, float] = {}
    end_machine: dict[int, float] = {}
    alarm: int | None = None
    for i in axes:
        accel = settings[120 + i]
        toward = -1.0 if int(settings[23]) >> i & 1 else 1.0
        distance = -physical[i] * toward  # to the switch, in the seek direction
        if distance < 0 or distance > search:
            # the search block runs to its end and decelerates there (limits.c: cycle stop)
            alarm = 9
            durations.append(Profile.rest_to_rest(search, seek, accel).duration_s())
            end_physical[i] = physical[i] + toward * search
            continue
        pull = Profile.rest_to_rest(pulloff, seek, accel).duration_s()
        seconds = _abrupt_s(distance, seek, accel) + pull + _abrupt_s(pulloff, feed, accel) + pull
        durations.append(seconds + 4 * debounce)
        end_physical[i] = -toward * pulloff
        end_machine[i] = -pulloff if toward > 0 else -settings[130 + i] + pulloff
    return HomingOutcome(max(durations, default=0.0), alarm, end_physical, end_machine)
