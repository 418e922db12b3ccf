"""Preprocessing on every core: an ordered map over a process pool, with bounded memory.

Decoding, finding and cropping coins is CPU work in numpy and OpenCV, one image at a time, so
it scales with processes. The pool starts its workers with `forkserver` (or `spawn` where
there is none), never `fork`: the parent may hold torch threads, CUDA or a faiss index, which
a forked child inherits in an unusable state. Each worker runs OpenCV and torch on one thread:
the pool is the parallelism, and N workers × N threads would only fight for the cores.

Results come back in task order and the parent handles them (writes rows, warns, fails on the
first bad image) exactly as with one worker, so the output is byte-identical whatever the
worker count. At most `window` tasks are in flight, so memory is bounded by the window, not by
the size of the job.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from training.errors import SettingsError

T = TypeVar("T")
R = TypeVar("R")
# Modules the forkserver loads once before forking workers, which then start without
# importing numpy, OpenCV and PIL anew. (A worker still runs a main *script* again, as spawn
# does: for the `pipeline` command that is a few seconds per pool, in parallel, not per image.)
PRELOAD = ("training.search_prep",)
# tasks in flight per worker: one running, one queued, so a worker never waits for the parent
IN_FLIGHT_PER_WORKER = 2


def default_workers() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's share)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | None) -> int:
    """The worker count to use: `workers`, or every core for None or 0.

    Raises:
        SettingsError: a negative count.
    """
    if workers is None or workers == 0:
        return default_workers()
    if workers < 0:
        raise SettingsError(f"--workers must be 0 (every core) or more, got {workers}")
    return workers


def start_method() -> str:
    """`forkserver` where the platform has it (fast starts, no inherited threads), else spawn."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


# Settings that tasks read from the environment. A forkserver keeps the environment it started
# with, and its workers inherit that, not the parent's environment of the moment: so each pool
# hands its workers the parent's current values (a test that set one for a while, then restored
# it, left later pools cutting images differently from the parent).
MIRRORED_ENV = ("COINRIG_SEGMENTER", "COINRIG_MAX_IMAGE_PIXELS")


def _parent_env() -> dict[str, str | None]:
    """The parent's current values of MIRRORED_ENV (None: unset)."""
    return {name: os.environ.get(name) for name in MIRRORED_ENV}


def _one_thread(env: dict[str, str | None] | None = None) -> None:
    """Pool initializer: the parent's settings, OpenCV (and torch) on one thread each."""
    import cv2

    for name, value in (env or {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

    cv2.setNumThreads(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def ordered_map(
    fn: Callable[[T], R], tasks: Iterable[T], workers: int, *, window: int | None = None
) -> Generator[R, None, None]:
    """`fn` over `tasks`, results in task order; on a process pool when `workers` > 1.

    `fn` must be a module-level function and tasks and results picklable. With one worker
    everything runs here, in this process. Closing the iterator early (an exception in the
    consumer) cancels the tasks not yet started.
    """
    if workers <= 1:
        yield from map(fn, tasks)
        return
    context = multiprocessing.get_context(start_method())
    if context.get_start_method() == "forkserver":
        # the server imports these once; every worker forks from it ready to work
        context.set_forkserver_preload(list(PRELOAD))
    limit = window or IN_FLIGHT_PER_WORKER * workers
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_one_thread, initargs=(_parent_env(),)
    )
    pending: deque[Future[R]] = deque()
    todo = iter(tasks)
    try:
        for task in todo:
            pending.append(pool.submit(fn, task))
            if len(pending) >= limit:
                break
        while pending:
            result = pending.popleft().result()
            for task in todo:  # keep the window full before handing the result over
                pending.append(pool.submit(fn, task))
                break
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def progress_bar(
    total: int, description: str, enabled: bool = True
) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr, shown only on a terminal; yields `advance(n)`.

    On stderr so that `--json` output stays clean; off when stderr is a file or a pipe, where
    a bar would only leave control characters in a log.
    """
    console = Console(stderr=True)
    progress = Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=console,
        disable=not (enabled and console.is_terminal),
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total, rate="")

        def advance(n: int) -> None:
            progress.advance(task, n)
            speed = progress.tasks[0].speed
            if speed:
                progress.update(task, rate=f"{speed:.0f} img/s")

        yield advance
