"""The overlapped coin handling as data: which arm tasks run when, and where every coin lies.

With staging pads beside the turntable (`rig.config.Staging`) the arm works while the camera
shoots. For each coin, in order:

- bring: the shots wait while the arm lifts the previous coin off the turntable onto the
  outgoing pad, puts this coin from the incoming pad on the turntable (the first coin comes
  straight from its slot) and goes clear; then, beside the first side's shots, it takes the
  previous coin back to its slot (and fetches the next coin when this one has no flip);
- flip: the shots wait while the arm turns the coin over through the flip station and goes
  clear; beside the second side's shots it fetches the next coin from its slot to the incoming
  pad;
- leave: the last coin goes from the turntable straight back to its slot and the arm parks
  from there (every rise of the layout is checked against the arm's reach before the session
  starts: capture.kinematics.reach_problems); any other coin stays on the turntable until the
  next coin's bring swaps it out.

So the turntable never holds two coins, a pad never holds two, and the arm never holds two: the
`Layout` checks every task against those rules, the executor applies it as the arm works and
the tests walk whole schedules through it. Work beside the shots is checked before the session
starts to keep out of the cylinder about the turntable that the camera needs clear
(`keep_out_problems`). The session runner executes this schedule (`capture.handling`) and the
dry run times it (`capture.estimate`), so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from rig.arm import choreography
from rig.arm.choreography import Step
from rig.config import GcodeArmConfig, Pose, RigConfig, TrayConfig
from rig.devices import Spot


class Job(Protocol):
    """A coin to handle (capture.engine.CoinJob): its id and the tray slot it lies in."""

    @property
    def coin_id(self) -> str:
        """The coin's id."""

    @property
    def slot(self) -> int | None:
        """Its tray slot (None: no slot, handed over by an operator)."""


@dataclass(frozen=True)
class Transfer:
    """Move one coin: pick it at `source`, put it down at `target`."""

    coin_id: str
    source: Spot
    target: Spot


@dataclass(frozen=True)
class FlipOver:
    """Turn the coin on the turntable over through the flip station."""

    coin_id: str


@dataclass(frozen=True)
class WaitClear:
    """Go to the waiting pose above the incoming pad, out of the camera's view."""


@dataclass(frozen=True)
class Park:
    """Go to the safe pose."""


#: one arm task of the schedule
Task = Transfer | FlipOver | WaitClear | Park


@dataclass(frozen=True)
class Act:
    """Arm work at one point of the schedule: what the shots wait for, then what runs beside them."""

    blocking: tuple[Task, ...] = ()
    background: tuple[Task, ...] = ()


@dataclass(frozen=True)
class CoinActs:
    """The arm's work around one coin's shots."""

    job: Job
    bring: Act
    flip: Act | None  # None: the coin is shot on one side only
    leave: Act


def overlap_wanted(config: RigConfig | None, jobs: Sequence[Job]) -> bool:
    """Whether the rig's config asks for the overlapped schedule and these coins allow it.

    It needs an arm with staging pads (`arm.staging`, not switched off with `overlap: false`)
    and a tray slot for every coin; otherwise the serial schedule runs.
    """
    if config is None or config.arm is None or config.tray is None:
        return False
    staging = config.arm.staging
    if staging is None or not staging.overlap:
        return False
    return bool(jobs) and all(job.slot is not None for job in jobs)


def staged_schedule(jobs: Sequence[Job], flips: Sequence[bool]) -> list[CoinActs]:
    """The overlapped schedule for the coins that will be put on the turntable, in order.

    `flips[i]` says whether coin i is turned over between its sides. Every job needs a slot.

    Raises:
        ValueError: a job without a tray slot, or `flips` of another length.
    """
    if len(flips) != len(jobs):
        raise ValueError("one flip flag per coin")
    if any(job.slot is None for job in jobs):
        raise ValueError("the overlapped schedule needs every coin in a tray slot")
    acts: list[CoinActs] = []
    for i, job in enumerate(jobs):
        previous = jobs[i - 1] if i > 0 else None
        following = jobs[i + 1] if i + 1 < len(jobs) else None
        fetch = (Transfer(following.coin_id, _slot(following), "incoming"),) if following else ()
        if previous is None:
            blocking: tuple[Task, ...] = (Transfer(job.coin_id, _slot(job), "turntable"),)
            back: tuple[Task, ...] = ()
        else:
            blocking = (
                Transfer(previous.coin_id, "turntable", "outgoing"),
                Transfer(job.coin_id, "incoming", "turntable"),
            )
            back = (Transfer(previous.coin_id, "outgoing", _slot(previous)),)
        beside = back + (() if flips[i] else fetch)
        bring = Act((*blocking, WaitClear()), _cleared(beside))
        flip = Act((FlipOver(job.coin_id), WaitClear()), _cleared(fetch)) if flips[i] else None
        home = (Transfer(job.coin_id, "turntable", _slot(job)), Park())
        leave = Act() if following else Act(home)
        acts.append(CoinActs(job, bring, flip, leave))
    return acts


def _slot(job: Job) -> int:
    assert job.slot is not None  # checked by staged_schedule
    return job.slot


def _cleared(tasks: tuple[Task, ...]) -> tuple[Task, ...]:
    """Work beside the shots ends at the waiting pose, ready for the next blocking act."""
    return (*tasks, WaitClear()) if tasks else ()


def schedule_tasks(schedule: Sequence[CoinActs]) -> list[tuple[Task, bool]]:
    """Every task of a schedule in the order the arm performs it, with whether it is background."""
    ordered: list[tuple[Task, bool]] = []
    for coin in schedule:
        for act in (coin.bring, coin.flip, coin.leave):
            if act is not None:
                ordered += [(task, False) for task in act.blocking]
                ordered += [(task, True) for task in act.background]
    return ordered


# ---------------------------------------------------------------- where every coin lies


class ScheduleError(RuntimeError):
    """A task that would break the handling rules (two coins in one place, a coin not there)."""


class Layout:
    """Where every coin lies (a tray slot, the turntable, a pad, the cup) as tasks are done.

    One coin per place, one in the cup: `apply` refuses a task that would break that, before
    the arm moves, and the tests walk whole schedules through it.
    """

    def __init__(self, jobs: Sequence[Job]) -> None:
        self.places: dict[Spot, str] = {
            job.slot: job.coin_id for job in jobs if job.slot is not None
        }

    def where(self, coin_id: str) -> Spot | None:
        """The spot a coin lies at (None: held or unknown)."""
        return next((spot for spot, coin in self.places.items() if coin == coin_id), None)

    def check(self, task: Task) -> None:
        """Refuse a task that would break the rules; change nothing.

        Raises:
            ScheduleError: the coin is not where the task takes it from, or its target is taken.
        """
        if isinstance(task, Transfer):
            if self.places.get(task.source) != task.coin_id:
                lying = self.places.get(task.source)
                raise ScheduleError(
                    f"{task.coin_id} is not at {task.source!r} (lying there: {lying or 'nothing'})"
                )
            taken = self.places.get(task.target)
            if taken is not None and task.target != task.source:
                raise ScheduleError(f"{task.target!r} already holds {taken}: not {task.coin_id}")
        elif isinstance(task, FlipOver) and self.places.get("turntable") != task.coin_id:
            raise ScheduleError(f"{task.coin_id} is not on the turntable to be turned over")

    def apply(self, task: Task) -> None:
        """Check a task, then record its outcome.

        Raises:
            ScheduleError: as `check`.
        """
        self.check(task)
        if isinstance(task, Transfer):
            del self.places[task.source]
            self.places[task.target] = task.coin_id

    def on_turntable(self) -> str | None:
        """The coin on the turntable, if any."""
        return self.places.get("turntable")

    def staged(self) -> dict[str, str]:
        """Coins lying on staging pads: pad → coin."""
        return {str(s): c for s, c in self.places.items() if s in ("incoming", "outgoing")}


# ---------------------------------------------------------------- steps and the camera's view


def task_steps(arm: GcodeArmConfig, tray: TrayConfig, task: Task) -> tuple[Step, ...]:
    """The arm's steps for a task: what `GcodeArm` performs and the estimate times."""
    if isinstance(task, Transfer):
        source = choreography.spot_pose(arm, tray, task.source)
        target = choreography.spot_pose(arm, tray, task.target)
        return (*choreography.pick_at(arm, source), *choreography.place_at(arm, target))
    if isinstance(task, FlipOver):
        return choreography.flip_on_turntable(arm)
    if isinstance(task, WaitClear):
        return choreography.wait_clear(arm)
    return choreography.park(arm)


def keep_out_problems(config: RigConfig, schedule: Sequence[CoinActs]) -> list[str]:
    """Every background move of a schedule that would enter the camera's keep-out cylinder.

    Background work starts at the waiting pose (every blocking act ends there) and runs while
    the camera shoots: each of its straight moves, rises included, must keep `keep_out_mm` (in
    x and y) from the turntable.
    """
    arm, tray = config.arm, config.tray
    if arm is None or tray is None or arm.staging is None:
        return ["the overlapped schedule needs an arm, a tray and staging pads"]
    problems: list[str] = []
    for coin in schedule:
        for act in (coin.bring, coin.flip):
            if act is None or not act.background:
                continue
            here: Pose = choreography.wait_pose(arm)
            for task in act.background:
                steps = task_steps(arm, tray, task)
                points = choreography.path(steps, here)
                breach = choreography.keep_out_breach(arm, points)
                if breach is not None:
                    problems.append(f"{_describe(task)}: {breach}")
                here = points[-1]
    return sorted(set(problems))


def _describe(task: Task) -> str:
    if isinstance(task, Transfer):
        return f"moving {task.coin_id} from {task.source!r} to {task.target!r}"
    return type(task).__name__
