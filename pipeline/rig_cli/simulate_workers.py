"""`rig simulate --workers N`: units of tray loads on N processes, each with its own emulated rig.

A unit is a tray load, or a slice of one when there are fewer loads than processes (each coin
keeps its slot). Each unit runs in a worker process on an emulated rig of its own (its own
emulators, twin and ledger; faults drawn per unit) into a staging dataset of its own; the parent
adopts the units' files and lines into the one dataset (capture.parallel_sim) in a fixed order:
load by load, the catalog images, then the captures, unit by unit, as one process writes them.
The twin renders a coin's shots the same in any process (its noise is drawn per view), so the
images and their lines are those of one process; only what names a run (session ids, capture
times, session records) differs.

Crash safety: the staging datasets are written by the crash-safe writer and the parent adopts
as the writer writes (file, then line); a killed run leaves staging folders that the next run
adopts first, and the workers die with the parent (a thread watches it). Ctrl-C reaches the
parent, which interrupts each worker once: their sessions park and record themselves, and what
they took is adopted before the command exits with 130. A paused or failed unit stops the dispatch of the
others, as a paused tray load stops one process; the exit code is the first unit's that did not
finish.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import typer

from capture.engine import CoinJob
from capture.parallel_sim import (
    Adopter,
    adopt_leftovers,
    count_lines,
    leftover_units,
    remove_units,
    seed_unit,
    unit_root,
)
from capture.plan import ShotEvent
from capture.resume import ResumeIndex
from capture.writer import DatasetWriter
from dataset.layout import SIDES, DatasetError, catalog_name
from dataset.reader import FileIndex
from pipeline.cli_support import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_RERUN
from training.parallel import progress_bar

# Coins per unit when --workers is left to its default: a worker process starts in about 2 s
# and opens its rig in about 0.6 s, while a coin takes 1-2 s at 64-512 px with the quick plan;
# units of 8 or more coins keep that overhead near a tenth. An explicit --workers N splits
# down to single coins.
MIN_UNIT_COINS = 8
# how often the parent wakes to update the progress bar and see whether a worker died
POLL_S = 0.25


@dataclass(frozen=True)
class Unit:
    """Coins one worker captures on one rig: all or part of tray load `load`."""

    index: int
    load: int
    jobs: tuple[CoinJob, ...]

    @property
    def coin_ids(self) -> list[str]:
        """The unit's coins, in tray order."""
        return [job.coin_id for job in self.jobs]


@dataclass(frozen=True)
class UnitTask:
    """What a worker gets: the unit, its staging dataset, and the command's settings."""

    unit: Unit
    root: Path
    settings: Any  # the command's own (pickled to the worker as they are)


@dataclass(frozen=True)
class UnitResult:
    """What a unit did, as its worker reports it."""

    index: int
    code: int
    captures: int = 0
    catalog_images: int = 0
    physical_s: float | None = None
    messages: str = ""


RunUnit = Callable[[UnitTask], UnitResult]


@dataclass
class ParallelOutcome:
    """Every unit's result (in unit order), what the parent adopted, and how the run ended."""

    results: list[UnitResult] = field(default_factory=list)
    adopted: int = 0
    processes: int = 0
    interrupted: bool = False
    adoption_error: str | None = None
    never_ran: int = 0

    def exit_code(self) -> int:
        """The first unit's code that is not 0; else 130, 3 or 1 for a run cut short; else 0."""
        code = next((r.code for r in self.results if r.code != 0), 0)
        if code == 0 and self.interrupted:
            code = EXIT_INTERRUPTED
        if code == 0 and self.adoption_error is not None:
            code = EXIT_RERUN
        if code == 0 and self.never_ran:
            code = EXIT_FAILED
        return code


def default_workers() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's share)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def split_units(loads: Sequence[Sequence[CoinJob]], workers: int, min_coins: int) -> list[Unit]:
    """Units for `workers` processes: whole loads, split into slices of >= `min_coins` coins.

    Every load is one unit at least; while there are fewer units than processes, the load whose
    slices are largest is cut into one slice more, as long as its slices keep `min_coins`. A
    load's slices are consecutive coins (each keeps its slot), their sizes differing by one.
    """
    loads = [list(jobs) for jobs in loads if jobs]
    parts = [1] * len(loads)
    floor = max(1, min_coins)
    while sum(parts) < workers:
        can = [i for i, jobs in enumerate(loads) if len(jobs) // (parts[i] + 1) >= floor]
        if not can:
            break
        biggest = max(can, key=lambda i: (len(loads[i]) / parts[i], -i))
        parts[biggest] += 1
    units: list[Unit] = []
    for number, (jobs, count) in enumerate(zip(loads, parts, strict=True)):
        size, extra = divmod(len(jobs), count)
        start = 0
        for part in range(count):
            end = start + size + (1 if part < extra else 0)
            units.append(Unit(len(units), number, tuple(jobs[start:end])))
            start = end
    return units


Complete = Callable[[ResumeIndex, Sequence[CoinJob], Sequence[ShotEvent], str], bool]


def plan_units(
    index: ResumeIndex,
    events: Sequence[ShotEvent],
    ext: str,
    loads: Sequence[Sequence[CoinJob]],
    workers: int,
    *,
    complete: Complete,
    always: bool = False,
) -> list[Unit]:
    """The unfinished coins of `loads` as units for `workers` processes (0: every core).

    `complete` says whether jobs are captured already. An explicit count splits down to single
    coins; the default takes a process per MIN_UNIT_COINS coins at most (so a small run stays
    in one process, where a worker's start-up would cost more than it saves). No units for one
    process, unless `always`.
    """
    if workers == 1 and not always:
        return []
    todo = [[job for job in jobs if not complete(index, [job], events, ext)] for jobs in loads]
    count = workers or min(default_workers(), sum(map(len, todo)) // MIN_UNIT_COINS)
    if count <= 1 and not always:
        return []
    return split_units(todo, max(1, count), 1 if workers else MIN_UNIT_COINS)


def unit_images(
    index: ResumeIndex, units: Sequence[Unit], events: Sequence[ShotEvent], ext: str
) -> int:
    """How many images the units will write: shots still to take, catalog images missing."""
    return sum(
        len(index.todo(job.coin_id, events, ext))
        + sum(not index.intact(catalog_name(job.coin_id, side)) for side in SIDES)
        for unit in units
        for job in unit.jobs
    )


def adopt_leftover_units(open_writer: Callable[[], DatasetWriter]) -> int:
    """Adopt and remove the staging folders a killed run left (before anything else runs).

    Returns the number of lines adopted. `open_writer` opens the main dataset's writer.

    Raises:
        DatasetError: a unit is still locked by a live process, or adopting failed.
    """
    with open_writer() as writer:
        if not leftover_units(writer.root):
            return 0
        return adopt_leftovers(writer)


# ---------------------------------------------------------------- the worker process


def _die_with_parent() -> None:
    """Kill this worker the moment the command's process dies (a kill -9 of the command).

    A watch thread waits on the parent's sentinel (a pipe the parent's death closes): a worker
    forked from the forkserver would otherwise go on with its units, the lock of its staging
    folder held, while the rerun waits to adopt it.
    """
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _interrupt_once(signum: int, frame: object) -> None:
    """The parent's Ctrl-C, forwarded once: a KeyboardInterrupt where the worker is."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    raise KeyboardInterrupt


def _run_captured(run_unit: RunUnit, task: UnitTask) -> UnitResult:
    """Run one unit with its terminal output kept for the parent (its errors are reported)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            result = run_unit(task)
    except KeyboardInterrupt:
        result = UnitResult(task.unit.index, EXIT_INTERRUPTED)
    except BaseException as exc:  # a bug: the parent reports it, the other units go on
        err.write("".join(traceback.format_exception_only(exc)))
        result = UnitResult(task.unit.index, EXIT_FAILED)
    return replace(result, messages=err.getvalue())


def _worker(run_unit: RunUnit, tasks: Any, results: Any, stop: Event) -> None:
    """A worker process: units from `tasks` until None; none started once `stop` is set."""
    _die_with_parent()
    # Ctrl-C at a terminal reaches the whole process group: only the parent acts on it and
    # forwards it once (SIGUSR1), so a session never sees a second interrupt while it parks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, _interrupt_once)
    try:
        while (task := tasks.get()) is not None:
            if stop.is_set():
                continue  # drain: the parent stops dispatching after a unit that did not finish
            results.put(("start", task.unit.index, os.getpid()))
            results.put(("done", _run_captured(run_unit, task)))
    except KeyboardInterrupt:
        pass  # interrupted between units: nothing was half-done


# ---------------------------------------------------------------- the parent


class _Run:
    """The parent's side of one parallel run: results, and adoption in load order."""

    def __init__(self, root: Path, units: list[Unit], writer: DatasetWriter) -> None:
        self.root = root
        self.units = units
        self.adopter = Adopter(writer)
        self.results: dict[int, UnitResult] = {}
        self.running: dict[int, int] = {}  # unit index -> worker pid
        self.seeded: dict[int, int] = {}  # unit index -> lines seeded from the main dataset
        self.loads = sorted({u.load for u in units})
        self.adoption_error: str | None = None
        self.interrupted = False
        self._next_load = 0
        self._counted: dict[int, int] = {}  # lines of finished units (their files stop growing)

    def adopt_ready(self, final: bool = False) -> None:
        """Adopt finished loads in load order; `final`: whatever is left, in the same order."""
        while self._next_load < len(self.loads):
            units = [u for u in self.units if u.load == self.loads[self._next_load]]
            done = all(u.index in self.results and self.results[u.index].code == 0 for u in units)
            if not (done or final):
                return
            folders = [unit_root(self.root, u.index) for u in units]
            self.adopter.adopt_in_order([f for f in folders if f.is_dir()])
            if done:
                remove_units(self.root, folders)
            for unit in units:  # their lines now count as adopted
                self._counted[unit.index] = self.seeded.get(unit.index, 0)
            self._next_load += 1

    def images(self) -> int:
        """Images written so far: adopted, or in a unit's folder (seeded ones not counted)."""
        staged = 0
        for unit in self.units:
            lines = self._counted.get(unit.index)
            if lines is None:
                lines = count_lines(unit_root(self.root, unit.index))
                if unit.index in self.results:
                    self._counted[unit.index] = lines
            staged += max(0, lines - self.seeded.get(unit.index, 0))
        return self.adopter.adopted + staged


def run_parallel(
    root: Path,
    open_writer: Callable[[], DatasetWriter],
    units: list[Unit],
    workers: int,
    run_unit: RunUnit,
    settings: Any,
    *,
    images: int,
    what: str = "each with its own emulated rig",
) -> ParallelOutcome:
    """Capture `units` on `workers` processes into the dataset at `root`; adopt them in order.

    `images` is how many images the units will write (the progress bar's total); `what` says
    what the processes do, for the line printed first.

    Raises:
        DatasetError: the main dataset cannot be opened (locked, not a dataset).
    """
    outcome = ParallelOutcome(processes=min(workers or default_workers(), len(units)))
    with open_writer() as writer:
        run = _Run(root, units, writer)
        index = FileIndex(root)
        held = {str(r.get("coin_id")) for r in map(index.record, index.names()) if r}
        for unit in units:
            if held.intersection(unit.coin_ids):
                run.seeded[unit.index] = seed_unit(
                    index, unit_root(root, unit.index), unit.coin_ids
                )
        plural = "es" if outcome.processes > 1 else ""
        typer.echo(
            f"{len(units)} unit(s) of {len(run.loads)} tray load(s) on {outcome.processes} "
            f"process{plural}, {what}"
        )
        _dispatch(run, outcome.processes, run_unit, settings, images)
        if run.adoption_error is None:
            try:
                run.adopt_ready(final=True)
                remove_units(root, [unit_root(root, u.index) for u in units])
            except DatasetError as exc:  # the disk filled: the rerun adopts what is left
                run.adoption_error = str(exc)
        outcome.adopted = run.adopter.adopted
    outcome.results = [run.results[u.index] for u in units if u.index in run.results]
    outcome.never_ran = len(units) - len(outcome.results)
    outcome.interrupted = run.interrupted
    outcome.adoption_error = run.adoption_error
    if run.adoption_error is not None:
        typer.echo(f"paused: {run.adoption_error}; rerun the same command to resume", err=True)
    return outcome


def _context() -> Any:
    """The start method: forkserver where there is one (workers fork ready to run), else spawn."""
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if context.get_start_method() == "forkserver":
        context.set_forkserver_preload(["pipeline.rig_cli.simulate"])
    return context


def _dispatch(run: _Run, processes: int, run_unit: RunUnit, settings: Any, images: int) -> None:
    """Start the workers, collect their results, adopt loads as they finish, relay Ctrl-C."""
    context = _context()
    tasks: Any = context.Queue()
    results: Any = context.Queue()
    stop = context.Event()
    for unit in run.units:
        tasks.put(UnitTask(unit, unit_root(run.root, unit.index), settings))
    for _ in range(processes):
        tasks.put(None)
    workers = [
        context.Process(target=_worker, args=(run_unit, tasks, results, stop), daemon=True)
        for _ in range(processes)
    ]
    for process in workers:
        process.start()
    shown = 0
    with progress_bar(images, "capturing") as advance:
        while True:
            try:
                finished = _collect(run, results, stop, workers)
            except KeyboardInterrupt:
                finished = False
                if not run.interrupted:
                    run.interrupted = True
                    _interrupt(workers, stop)
            now = min(run.images(), images)
            advance(max(0, now - shown))
            shown = max(shown, now)
            if finished:
                break
    for process in workers:
        process.join()


def _interrupt(workers: list[Any], stop: Event) -> None:
    """Stop dispatching and interrupt every live worker once (their sessions park)."""
    stop.set()
    for process in workers:
        if process.pid is not None and process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGUSR1)
    typer.echo("interrupted: parking every rig", err=True)


def _collect(run: _Run, results: Any, stop: Event, workers: list[Any]) -> bool:
    """Take the workers' messages (waiting up to POLL_S); adopt what is ready.

    Returns whether every worker has exited and all they sent is taken.
    """
    # Who was alive before the queue is read: whatever a dead worker sent is in it by now.
    alive = {p.pid for p in workers if p.is_alive()}
    timeout: float | None = POLL_S if alive else None
    while True:
        try:
            message = results.get(timeout=timeout) if timeout else results.get_nowait()
        except queue.Empty:
            break
        timeout = None
        if message[0] == "start":
            run.running[message[1]] = message[2]
            continue
        result: UnitResult = message[1]
        run.running.pop(result.index, None)
        run.results[result.index] = result
        if result.messages.strip():
            sys.stderr.write(result.messages)
        if result.code != 0:
            stop.set()
    for index, pid in list(run.running.items()):
        if pid not in alive:  # died without a word (killed, out of memory)
            run.running.pop(index)
            run.results[index] = UnitResult(index, EXIT_FAILED, messages="worker died\n")
            sys.stderr.write(f"error: the worker of unit {index} died\n")
            stop.set()
    if run.adoption_error is None:
        try:
            run.adopt_ready()
        except DatasetError as exc:  # the disk filled: stop here, the rerun adopts the rest
            run.adoption_error = str(exc)
            stop.set()
    return not alive
