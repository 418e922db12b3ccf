"""GRBL 1.1's motion as the emulator runs it: planner blocks in whole steps and their speed profiles.

- A block (planner.c plan_buffer_line) rounds its target to whole steps (`lroundf(target × $10x)`),
  runs along the straight line between step positions, and is limited by $110+ (rate) and $120+
  (acceleration), each scaled by the axis's share of the direction (limit_value_by_axis_maximum).
  A block whose rounded target is where the planner already is has no steps and is dropped
  (PLAN_EMPTY_BLOCK): such a move never leaves Idle.
- A feed (G1) is capped at the block's rapid rate (plan_compute_profile_nominal_speed) and never
  below MINIMUM_FEED_RATE; a rapid (G0) runs at the rapid rate.
- Simplification: every block starts and ends at rest. GRBL's look-ahead joins consecutive blocks
  at a junction speed from $11; the turntable driver sends one move at a time, which starts from
  rest anyway, so only streamed multi-block programs would run faster on the real firmware.
- A feed hold brakes from the current speed at the block's acceleration (protocol.c
  EXEC_FEED_HOLD → stepper.c st_update_plan_block_parameters); a resume re-plans the rest of the
  block from rest (protocol.c EXEC_CYCLE_STOP → planner.c plan_cycle_reinitialize).
- The reported position is the step counter over $10x (system.c system_convert_axis_steps_to_mpos),
  so it advances in whole steps.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from rig.sim.clock import SimClock

#: config.h MINIMUM_FEED_RATE (units/min): the slowest nominal speed the planner uses.
MINIMUM_FEED_RATE = 1.0


def lround(value: float) -> int:
    """C's lroundf: to the nearest integer, halves away from zero (Python's round() halves to even)."""
    return math.floor(abs(value) + 0.5) * (1 if value >= 0 else -1)


@dataclass(frozen=True)
class Profile:
    """Distance over time along a path: from `start_speed` up to `top_speed`, then down to rest.

    A block is rest to rest (trapezoid, or triangle when too short to reach its speed); a hold
    starts at its braking speed and only decelerates. Speeds in units/s, acceleration units/s².
    """

    length: float
    start_speed: float
    top_speed: float
    accel: float

    @classmethod
    def rest_to_rest(cls, length: float, speed: float, accel: float) -> Profile:
        """A block's profile: accelerate, cruise at `speed` if there is room, decelerate."""
        return cls(length, 0.0, min(speed, math.sqrt(accel * length)), accel)

    @classmethod
    def braking(cls, speed: float, accel: float) -> Profile:
        """A feed hold's profile: from `speed` straight down to rest."""
        return cls(speed * speed / (2.0 * accel) if accel > 0 else 0.0, speed, speed, accel)

    def phases(self) -> tuple[float, float, float]:
        """Seconds accelerating, cruising and decelerating."""
        if self.length <= 0 or self.accel <= 0:
            return 0.0, 0.0, 0.0
        v0, top, a = self.start_speed, self.top_speed, self.accel
        rise = (top * top - v0 * v0) / (2 * a)
        fall = top * top / (2 * a)
        cruise = max(0.0, self.length - rise - fall)
        return (top - v0) / a, (cruise / top if top > 0 else 0.0), top / a

    def duration_s(self) -> float:
        """Seconds from start to rest."""
        return sum(self.phases())

    def distance_at(self, t: float) -> float:
        """Path distance covered `t` seconds after the start (clamped to the profile)."""
        t_acc, t_cruise, t_dec = self.phases()
        if t >= t_acc + t_cruise + t_dec:
            return self.length
        v0, top, a = self.start_speed, self.top_speed, self.accel
        if t <= t_acc:
            return v0 * t + 0.5 * a * t * t
        rise = v0 * t_acc + 0.5 * a * t_acc * t_acc
        if t <= t_acc + t_cruise:
            return rise + top * (t - t_acc)
        t -= t_acc + t_cruise
        return rise + top * t_cruise + top * t - 0.5 * a * t * t

    def speed_at(self, t: float) -> float:
        """Path speed `t` seconds after the start (0 once at rest)."""
        t_acc, t_cruise, _ = self.phases()
        if t <= t_acc:
            return self.start_speed + self.accel * max(0.0, t)
        if t <= t_acc + t_cruise:
            return self.top_speed
        return max(0.0, self.top_speed - self.accel * (t - t_acc - t_cruise))


@dataclass(frozen=True)
class Block:
    """One planned line (planner.c plan_block_t), its geometry fixed when it was planned."""

    start: tuple[int, ...]
    target: tuple[int, ...]
    unit: tuple[float, ...]  # direction, in units
    length: float  # units along the path
    accel: float  # units/s² along the path
    nominal: float  # units/s
    alarm_code: int | None = None  # fault injection: a limit switch trips halfway


@dataclass
class Segment:
    """The block the steppers are executing, and the profile it follows now."""

    block: Block
    profile: Profile
    began_at: float  # wall time the current profile began
    done: float = 0.0  # path distance covered before the current profile (a resume)
    braking: bool = False  # the profile is a feed hold's

    def steps_at(self, distance: float) -> tuple[int, ...]:
        """Step counters once `distance` of the path is covered (whole steps, toward the start)."""
        block = self.block
        fraction = 1.0 if block.length <= 0 else min(1.0, max(0.0, distance / block.length))
        return tuple(
            s + math.trunc((t - s) * fraction)
            for s, t in zip(block.start, block.target, strict=True)
        )


def plan_block(
    start: tuple[int, ...],
    target: tuple[int, ...],
    rate: float | None,
    settings: Mapping[int, float],
    alarm_code: int | None = None,
) -> Block:
    """A block's direction, length, acceleration and speed (planner.c plan_buffer_line)."""
    units = [
        (t - s) / settings[100 + i] for i, (s, t) in enumerate(zip(start, target, strict=True))
    ]
    length = math.sqrt(sum(u * u for u in units))
    unit = tuple(u / length for u in units)
    # each axis's limit, scaled by its share of the direction (limit_value_by_axis_maximum)
    accel = min(settings[120 + i] / abs(u) for i, u in enumerate(unit) if u)
    rapid = min(settings[110 + i] / abs(u) for i, u in enumerate(unit) if u)
    feed = rapid if rate is None else min(rate, rapid)
    nominal = max(feed, MINIMUM_FEED_RATE) / 60.0
    return Block(start, target, unit, length, accel, nominal, alarm_code)


class Planner:
    """The planner queue and the steppers: what is planned, and where the axes are, in steps."""

    def __init__(self, n_axes: int, clock: SimClock, name: str) -> None:
        self.clock = clock
        self.name = name
        self.position = [0] * n_axes  # sys_position: where the steppers are
        self.planned = [0] * n_axes  # pl.position: where the last planned block ends
        self.blocks: deque[Block] = deque()
        self.active: Segment | None = None

    # ------------------------------------------------------------------ planning
    def plan(self, target_units: list[float], rate: float | None, settings: Mapping[int, float],
             alarm_code: int | None = None) -> bool:  # fmt: skip
        """Queue a line to `target_units`; False when it rounds to no step (dropped)."""
        target = tuple(lround(v * settings[100 + i]) for i, v in enumerate(target_units))
        if target == tuple(self.planned):
            return False
        self.blocks.append(plan_block(tuple(self.planned), target, rate, settings, alarm_code))
        self.planned = list(target)
        return True

    def has_blocks(self) -> bool:
        """Whether anything is planned or executing (plan_get_current_block() != NULL)."""
        return self.active is not None or bool(self.blocks)

    def sync(self) -> None:
        """Forget every block; the planner starts from where the steppers are (plan_sync_position)."""
        self.blocks.clear()
        self.active = None
        self.planned = list(self.position)

    # ------------------------------------------------------------------ execution
    def start(self, now: float) -> None:
        """Begin the next block, or re-plan a held one from rest (cycle start)."""
        segment = self.active
        if segment is not None:
            block, done = segment.block, self._distance(segment, now)
            rest = Profile.rest_to_rest(block.length - done, block.nominal, block.accel)
            self._follow(segment, rest, now, done, braking=False, action="resume")
            return
        if not self.blocks:
            return
        block = self.blocks.popleft()
        profile = Profile.rest_to_rest(block.length, block.nominal, block.accel)
        self.active = Segment(block, profile, now)
        self._follow(self.active, profile, now, 0.0, braking=False, action="move")

    def hold(self, now: float) -> None:
        """Brake the executing block from its current speed to rest (a feed hold)."""
        segment = self.active
        if segment is None or segment.braking:
            return
        elapsed = self._elapsed(segment, now)
        speed = segment.profile.speed_at(elapsed)
        done = segment.done + segment.profile.distance_at(elapsed)
        brake = Profile.braking(speed, segment.block.accel)
        self._follow(segment, brake, now, done, braking=True, action="hold")

    def advance(self, now: float) -> tuple[bool, int | None]:
        """Run the steppers up to `now`: (a feed hold has come to rest, an alarm code that fired)."""
        while self.active is not None:
            segment = self.active
            if segment.block.alarm_code is not None and not segment.braking:
                halfway = segment.profile.duration_s() / 2.0
                if self._elapsed(segment, now) >= halfway:
                    return False, segment.block.alarm_code
            if self._elapsed(segment, now) < segment.profile.duration_s():
                return False, None
            end = segment.done + segment.profile.length
            self.position = list(segment.steps_at(end))
            if segment.braking:
                segment.done, segment.profile = end, Profile(0.0, 0.0, 0.0, 1.0)
                return True, None
            self.active = None
            # the next block starts when this one ended, not when the emulator looked
            ended = segment.began_at + segment.profile.duration_s() * self.clock.scale
            self.start(min(now, ended) if self.clock.scale > 0 else now)
        return False, None

    def kill(self, now: float) -> tuple[float, tuple[float, ...]]:
        """Stop the steppers at once (a reset or a limit): the speed they had, and its direction."""
        segment = self.active
        if segment is None:
            return 0.0, ()
        elapsed = self._elapsed(segment, now)
        speed = segment.profile.speed_at(elapsed)
        if segment.block.alarm_code is not None and not segment.braking:
            elapsed = min(elapsed, segment.profile.duration_s() / 2.0)
            speed = segment.profile.speed_at(elapsed)
        self.position = list(segment.steps_at(segment.done + segment.profile.distance_at(elapsed)))
        self.sync()
        return speed, segment.block.unit

    # ------------------------------------------------------------------ readings
    def steps_now(self, now: float) -> tuple[int, ...]:
        """The step counters now (sys_position)."""
        segment = self.active
        if segment is None:
            return tuple(self.position)
        return segment.steps_at(self._distance(segment, now))

    def speed_now(self, now: float) -> float:
        """The path speed now, in units/min (st_get_realtime_rate)."""
        segment = self.active
        if segment is None:
            return 0.0
        return segment.profile.speed_at(self._elapsed(segment, now)) * 60.0

    def next_event_s(self, now: float) -> float | None:
        """Wall seconds until the executing profile ends (None: nothing executing)."""
        segment = self.active
        if segment is None or self.clock.scale <= 0:
            return None if segment is None else 0.0
        remaining = segment.profile.duration_s() - self._elapsed(segment, now)
        return max(0.0, remaining * self.clock.scale)

    # ------------------------------------------------------------------ helpers
    def _follow(self, segment: Segment, profile: Profile, now: float, done: float, *,
                braking: bool, action: str) -> None:  # fmt: skip
        segment.profile, segment.began_at, segment.done = profile, now, done
        segment.braking = braking
        # the ledger holds the physical time the real axis would take for this profile
        self.clock.record(self.name, f"{action} {segment.block.target}", profile.duration_s())

    def _elapsed(self, segment: Segment, now: float) -> float:
        """Physical seconds since the segment's profile began (infinite when time is not scaled)."""
        if self.clock.scale <= 0:
            return math.inf
        return max(0.0, (now - segment.began_at) / self.clock.scale)

    def _distance(self, segment: Segment, now: float) -> float:
        return segment.done + segment.profile.distance_at(self._elapsed(segment, now))
