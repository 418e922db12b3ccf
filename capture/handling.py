"""Who puts coins on the turntable, turns them over and takes them away, and when.

The session runner asks for three things per coin: `bring` it before its first shot, `flip` it
between its sides, `leave` it after its last shot. Two schedules answer:

- `SerialHandling` (no staging pads, `overlap: false`, an operator): the engine loads, flips
  and unloads while the shots wait, parking the arm after each, as the rig always has.
- `OverlappedHandling`: the schedule of `capture.staging`. At each of the three points the
  runner's thread first waits for the arm's background work (and the shots are over: it is the
  runner's own thread), does the blocking part itself, then hands the background part to the
  arm's own thread and returns, so the next side's shots run while the arm works. The arm thread
  talks to the arm only, through the engine's arm lock; the shots talk to the turntable, lights
  and camera: no device is commanded from two threads at once.

A failure of the arm's background work reaches the runner at the next of those points, as if it
had happened there (the session pauses). On the way out of any error `settle` waits for the task
in progress (half a pick is never abandoned) and starts nothing new; coins then lie where the
session record says (`on_turntable`, `staged`), as after a pause on the serial schedule. On a
simulated rig the arm's background time goes on its own timeline of the twin's ledger, and each
of those points is a synchronisation point (`rig.sim.clock`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from capture.engine import CaptureEngine, CoinJob
from capture.kinematics import reach_problems
from capture.plan import ShotEvent, Side
from capture.staging import (
    CoinActs,
    Layout,
    ScheduleError,
    Task,
    keep_out_problems,
    overlap_wanted,
    staged_schedule,
)
from rig.config import RigConfig
from rig.devices import Rig, StagingArm
from rig.errors import ConfigError

log = logging.getLogger(__name__)

#: the ledger actor the arm's background work is booked on
ARM_ACTOR = "arm"


class Handling(Protocol):
    """What the runner asks of coin handling (see the module docstring)."""

    def bring(self, job: CoinJob, side: Side) -> None:
        """Put the coin on the turntable, `side` up, before its first shot."""

    def flip(self, job: CoinJob, side: Side) -> None:
        """Turn the coin over so that `side` is up."""

    def leave(self, job: CoinJob) -> None:
        """The coin's shots are done (it leaves the turntable now or at the next `bring`)."""

    def on_turntable(self) -> str | None:
        """The coin lying on the turntable once the handling so far is done."""

    def staged(self) -> dict[str, str]:
        """Coins waiting on staging pads: pad → coin."""

    def settle(self) -> list[str]:
        """Wait for arm work in progress, start nothing new; returns what failed. Never raises."""


def choose_handling(
    engine: CaptureEngine,
    rig: Rig,
    config: RigConfig | None,
    coins: Sequence[tuple[CoinJob, Sequence[ShotEvent]]],
    first_side: Side,
) -> Handling:
    """The overlapped schedule when the rig's config asks for it and allows it, else the serial.

    `coins` are the session's coins with the shots each still needs (a coin with none is never
    put on the turntable); they lie `first_side` up in their slots.

    Raises:
        ConfigError: a pose of the arm's layout is out of its reach, or the overlapped schedule
            would take the arm into the camera's keep-out cylinder while it shoots (both checked
            before anything moves).
    """
    if config is not None and rig.arm is not None:
        unreachable = reach_problems(config)
        if unreachable:
            more = f" (and {len(unreachable) - 1} more)" if len(unreachable) > 1 else ""
            raise ConfigError(f"arm layout: {unreachable[0]}{more}")
    loaded = [(job, todo) for job, todo in coins if todo]
    if config is None or not overlap_wanted(config, [job for job, _ in loaded]):
        return SerialHandling(engine)
    if not isinstance(rig.arm, StagingArm):
        log.warning("the config has staging pads but the arm cannot use them: serial schedule")
        return SerialHandling(engine)
    flips = [any(event.side != first_side for event in todo) for _, todo in loaded]
    schedule = staged_schedule([job for job, _ in loaded], flips)
    problems = keep_out_problems(config, schedule)
    if problems:
        raise ConfigError(f"the overlapped schedule would enter the camera's view: {problems[0]}")
    return OverlappedHandling(engine, schedule, rig)


class SerialHandling:
    """Load, shoot, flip, shoot, unload: the shots wait for every arm action."""

    def __init__(self, engine: CaptureEngine) -> None:
        self.engine = engine
        self._on_turntable: str | None = None

    def bring(self, job: CoinJob, side: Side) -> None:
        """Load the coin from its slot (or ask the operator)."""
        self.engine.load_coin(job, side)
        self._on_turntable = job.coin_id

    def flip(self, job: CoinJob, side: Side) -> None:
        """Flip it on the turntable."""
        self.engine.flip_coin(job, side)

    def leave(self, job: CoinJob) -> None:
        """Return it to its slot (or ask the operator to take it)."""
        self.engine.unload_coin(job)
        self._on_turntable = None

    def on_turntable(self) -> str | None:
        """The coin loaded and not yet unloaded."""
        return self._on_turntable

    def staged(self) -> dict[str, str]:
        """No pads: nothing is staged."""
        return {}

    def settle(self) -> list[str]:
        """Nothing runs beside the shots."""
        return []


class ArmTimeline:
    """On a simulated rig, books the arm's work on its own actor of the twin's ledger."""

    def __init__(self, rig: Rig) -> None:
        twin = rig.twin
        emulator = twin.emulators.get("arm") if twin is not None else None
        self._clock = twin.clock if twin is not None and emulator is not None else None
        self._device = emulator.name if emulator is not None else ""

    def start(self) -> None:
        """The arm gets its own timeline (a synchronisation point)."""
        if self._clock is not None:
            self._clock.assign(self._device, ARM_ACTOR)

    def sync(self) -> None:
        """A synchronisation point: the shots and the arm wait for each other."""
        if self._clock is not None:
            self._clock.sync()

    def stop(self) -> None:
        """Back on the one timeline (a synchronisation point)."""
        if self._clock is not None:
            self._clock.assign(self._device, None)


class OverlappedHandling:
    """The overlapped schedule: the arm fetches and returns coins while the camera shoots."""

    def __init__(self, engine: CaptureEngine, schedule: Sequence[CoinActs], rig: Rig) -> None:
        self.engine = engine
        self._acts = {coin.job.coin_id: coin for coin in schedule}
        self._layout = Layout([coin.job for coin in schedule])
        self._layout_lock = threading.Lock()
        self._timeline = ArmTimeline(rig)
        self._arm_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="arm")
        self._pending: Future[None] | None = None
        self._started = False

    @property
    def schedule(self) -> list[CoinActs]:
        """The schedule it runs."""
        return list(self._acts.values())

    def bring(self, job: CoinJob, side: Side) -> None:
        """Swap the coin in (the previous one out to its pad), then take that one back beside."""
        self._act(self._coin(job).bring.blocking, self._coin(job).bring.background)

    def flip(self, job: CoinJob, side: Side) -> None:
        """Flip it, then fetch the next coin beside the second side's shots."""
        act = self._coin(job).flip
        if act is None:
            raise ScheduleError(f"{job.coin_id} was scheduled without a flip")
        self._act(act.blocking, act.background)

    def leave(self, job: CoinJob) -> None:
        """The last coin goes back to its slot; any other waits for the next coin's swap."""
        act = self._coin(job).leave
        self._act(act.blocking, act.background)

    def on_turntable(self) -> str | None:
        """The coin on the turntable as far as the arm's finished tasks go."""
        with self._layout_lock:
            return self._layout.on_turntable()

    def staged(self) -> dict[str, str]:
        """Coins on the pads as far as the arm's finished tasks go."""
        with self._layout_lock:
            return self._layout.staged()

    def settle(self) -> list[str]:
        """Wait for the arm's task in progress, start nothing new, close the arm's thread."""
        problems: list[str] = []
        try:
            self._join()
        except BaseException as exc:  # on the way out of an error: note it, never raise
            log.error("arm work beside the shots failed: %s", exc)
            problems.append(f"arm work beside the shots: {exc}")
        finally:
            self._arm_thread.shutdown(wait=True)
            if self._started:
                self._timeline.stop()
                self._started = False
        return problems

    def _coin(self, job: CoinJob) -> CoinActs:
        try:
            return self._acts[job.coin_id]
        except KeyError:
            raise ScheduleError(f"{job.coin_id} is not in the overlapped schedule") from None

    def _act(self, blocking: tuple[Task, ...], background: tuple[Task, ...]) -> None:
        """Wait for the arm, do the blocking tasks, start the background ones; then return."""
        if not self._started:
            self._timeline.start()
            self._started = True
        self._join()
        self._timeline.sync()  # the shots before this point are over, and so is the arm
        for task in blocking:
            self._do(task)
        self._timeline.sync()  # the next shots start once the arm is clear
        if background:
            self._pending = self._arm_thread.submit(self._do_all, background)

    def _join(self) -> None:
        """Wait for the background work; its failure is raised here, in the runner's thread."""
        pending = self._pending
        if pending is None:
            return
        try:
            pending.result()
        finally:
            # an interrupt of the wait itself leaves the task to be waited for again
            if pending.done():
                self._pending = None

    def _do_all(self, tasks: tuple[Task, ...]) -> None:
        for task in tasks:
            self._do(task)

    def _do(self, task: Task) -> None:
        """Check a task against where the coins lie, do it, record its outcome."""
        with self._layout_lock:
            self._layout.check(task)
        self.engine.perform(task)
        with self._layout_lock:
            self._layout.apply(task)
