"""The physical time of a whole session, coin handling included, and the dry run that shows it.

A session runs its coins one after another. Serially (`rig.config.Staging` absent or
`overlap: false`) each coin costs its load, its shots, its flip and its unload, one after the
other, the arm parking after each. Overlapped, the estimate walks the schedule the session runs
(`capture.staging.staged_schedule`): the shots wait for the arm's blocking work (swapping coins,
the flip), and the arm's background work (taking the previous coin back, fetching the next)
runs beside a side's shots, so that stretch costs the longer of the two. That is how the twin's
ledger counts the same session (`rig.sim.clock`: the maximum over its actors between
synchronisation points), which keeps the dry run and the ledger within a few per cent.

The shots' own time comes from `capture.plan` (moves, switches, exposures), carried from one
coin to the next: the turntable starts a coin where the last one left it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from capture.kinematics import (
    BY_HAND_S,
    Kinematics,
    reach_problems,
    schedule_times,
    serial_handling_s,
)
from capture.plan import Plan, RigState, ShotEvent, ShotRow, Side, check_plan, expand, shot_row
from capture.staging import Job, overlap_wanted, staged_schedule
from rig.config import RigConfig

Schedule = Literal["serial", "overlapped"]


@dataclass(frozen=True)
class DryRun:
    """What `rig capture --dry-run` reports: the events, the problems, the physical duration."""

    events: list[ShotEvent]
    problems: list[str]
    duration_per_coin_s: float
    coins: int
    schedule: Schedule = "serial"

    @property
    def duration_s(self) -> float:
        """Physical time for every coin."""
        return self.duration_per_coin_s * self.coins


@dataclass(frozen=True)
class _Coin:
    coin_id: str
    slot: int | None


def dry_run(
    plan: Plan, config: RigConfig, *, coins: int = 1, slots: Sequence[int | None] | None = None
) -> DryRun:
    """Expand, check and time a plan for `coins` coins against a rig config; touches no device.

    The coins lie in tray slots `slots` (default: one tray load after another from slot 0, as
    `rig simulate` lays them out; no slots on a rig without an arm), each load one session.
    The problems include every pose of the arm's layout its firmware would refuse
    (`capture.kinematics.reach_problems`), so an unreachable layout is refused before a byte
    is sent.
    """
    events = expand(plan)
    loads = _tray_loads(config, coins, slots)
    total = sum(
        estimate_session_s([(job, events) for job in load], config, plan.sides[0]) for load in loads
    )
    overlapped = bool(loads) and overlap_wanted(config, loads[0])
    per_coin = total / coins if coins else 0.0
    schedule: Schedule = "overlapped" if overlapped else "serial"
    problems = check_plan(plan, config) + reach_problems(config)
    return DryRun(events, problems, per_coin, coins, schedule)


def _tray_loads(
    config: RigConfig, coins: int, slots: Sequence[int | None] | None
) -> list[list[_Coin]]:
    if slots is not None:
        return [[_Coin(f"coin-{i}", slot) for i, slot in enumerate(slots)]]
    size = config.tray.slots if config.arm is not None and config.tray is not None else None
    if size is None:
        return [[_Coin(f"coin-{i}", None) for i in range(coins)]]
    return [
        [_Coin(f"coin-{i}", i - start) for i in range(start, min(coins, start + size))]
        for start in range(0, coins, size)
    ]


def estimate_session_s(
    coins: Sequence[tuple[Job, Sequence[ShotEvent]]],
    config: RigConfig,
    first_side: Side,
    *,
    overlapped: bool | None = None,
) -> float:
    """Physical seconds for one session to shoot each coin's events, handling included.

    Coins with no events are never put on the turntable. `first_side` is the side coins lie
    with up in the tray (the plan's first); `overlapped` None: as the config asks
    (`capture.staging.overlap_wanted`).
    """
    loaded = [(job, list(events)) for job, events in coins if events]
    if not loaded:
        return 0.0
    jobs = [job for job, _ in loaded]
    parts = [_split(events, first_side) for _, events in loaded]
    if overlapped is None:
        overlapped = overlap_wanted(config, jobs)
    if overlapped:
        return _overlapped_s(config, jobs, parts)
    return _serial_s(config, jobs, parts)


def _split(events: Sequence[ShotEvent], first_side: Side) -> tuple[list[ShotRow], list[ShotRow]]:
    """A coin's shots before its flip (first side up) and after it."""
    rows = [shot_row(event) for event in events]
    cut = next((i for i, row in enumerate(rows) if row[0] != first_side), len(rows))
    return rows[:cut], rows[cut:]


def _shots_s(rows: list[ShotRow], state: RigState, k: Kinematics) -> tuple[float, RigState]:
    """The shots of one side, from the rig's state; the flip is the handling's to time."""
    total = 0.0
    if rows:
        state = replace(state, side=rows[0][0])
    for row in rows:
        total += state.step_s(row, k)
        state = state.after(row)
    return total, state


def _serial_s(
    config: RigConfig, jobs: list[Job], parts: list[tuple[list[ShotRow], list[ShotRow]]]
) -> float:
    k = Kinematics.from_config(config)
    state, total = RigState.start(), 0.0
    for job, (before, after) in zip(jobs, parts, strict=True):
        load, flip, unload = k.load_s, k.flip_s, k.unload_s
        if config.arm is not None and job.slot is not None:
            load, flip, unload = serial_handling_s(config.arm, config.tray, job.slot)
        elif config.arm is not None:
            load = flip = unload = BY_HAND_S  # no slot: the engine asks an operator
        first, state = _shots_s(before, state, k)
        second, state = _shots_s(after, state, k)
        total += load + first + (flip + second if after else 0.0) + unload
    return total


def _overlapped_s(
    config: RigConfig, jobs: list[Job], parts: list[tuple[list[ShotRow], list[ShotRow]]]
) -> float:
    arm, tray = config.arm, config.tray
    assert arm is not None and tray is not None  # overlap_wanted checked both
    k = Kinematics.from_config(config)
    schedule = staged_schedule(jobs, [bool(after) for _, after in parts])
    state, total = RigState.start(), 0.0
    for times, (before, after) in zip(schedule_times(arm, tray, schedule), parts, strict=True):
        first, state = _shots_s(before, state, k)
        total += times.bring.blocking_s + max(first, times.bring.background_s)
        if times.flip is not None:
            second, state = _shots_s(after, state, k)
            total += times.flip.blocking_s + max(second, times.flip.background_s)
        total += times.leave.blocking_s
    return total
