"""Running one capture session from a command: the writer, progress, log, exit codes, twin helpers.

Shared by `rig capture` and `rig simulate`; the sequencing itself is capture.session's.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from capture.calibration.flatfield import FlatFieldCorrector
from capture.calibration.store import CalibrationUse
from capture.engine import CoinJob, OperatorRequest, Prompt
from capture.events import JsonlLog, RunState
from capture.plan import Plan
from capture.progress import make_progress
from capture.session import SessionRunner, new_session_id
from capture.writer import DatasetWriter
from dataset.layout import DatasetError
from pipeline.cli_support import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_RERUN,
    UserError,
    software_name,
)
from rig.config import RigConfig
from rig.devices import Rig

EXIT_PAUSED = EXIT_RERUN


def open_writer(root: Path, config: RigConfig) -> DatasetWriter:
    """A DatasetWriter for `root` with the rig config's storage settings (not yet opened)."""
    return DatasetWriter(
        root,
        software=software_name(),
        queue_size=config.storage.writer_queue,
        image_format=config.storage.image_format,
        png_compression=config.storage.png_compression,
    )


def run_session(
    rig: Rig,
    writer: DatasetWriter,
    config: RigConfig,
    plan: Plan,
    jobs: list[CoinJob],
    *,
    calibration: CalibrationUse | None = None,
    flatfield: FlatFieldCorrector | None = None,
) -> int:
    """Run one session of `jobs` (the `rig capture --tray` path) with progress and a log.

    The rig and the writer are open and the coins lie where the jobs say; returns the exit
    code: 0 done, 3 paused, 130 interrupted, 1 failed (2 for a dataset that cannot be resumed).
    """
    session_id = new_session_id()
    progress = make_progress(len(jobs))
    log = JsonlLog(writer.root / "sessions" / f"{session_id}.events.jsonl")
    try:
        with progress:
            runner = SessionRunner(
                rig,
                plan,
                writer,
                jobs,
                config=config,
                session_id=session_id,
                prompt=_operator(rig),
                listeners=[log, progress],
                coin_info=lambda coin_id: _coin_info(rig, coin_id),
                calibration=calibration,
                flatfield=flatfield,
            )
            try:
                status = runner.run()
            except KeyboardInterrupt:
                progress.stop()
                typer.echo(
                    f"interrupted: rig parked, session {session_id} paused; rerun to resume",
                    err=True,
                )
                return EXIT_INTERRUPTED
            except Exception as exc:
                progress.stop()
                typer.echo(f"error: session {session_id} failed: {exc}", err=True)
                return EXIT_FAILED if not isinstance(exc, DatasetError) else EXIT_BAD_INPUT
    finally:
        log.close()
    if status.state is RunState.DONE:
        typer.echo(f"session {session_id} done: {status.taken} images, {status.skipped} skipped")
        return 0
    typer.echo(
        f"session {session_id} paused ({status.reason}): {status.message}; "
        "rerun the same command to resume",
        err=True,
    )
    return EXIT_PAUSED


def stage_twin(rig: Rig, jobs: list[CoinJob], plan: Plan) -> None:
    """In simulation, lay the listed coins in the twin's tray (the operator's job on a real rig)."""
    if rig.twin is None:
        return
    from rig.sim.world import CoinPlacement

    slots = {j.slot: CoinPlacement(j.coin_id, plan.sides[0]) for j in jobs if j.slot is not None}
    if slots:
        rig.twin.world.load_tray(slots)


def _operator(rig: Rig) -> Prompt | None:
    """Who handles coins when the arm cannot: the twin in simulation, else a person at a tty."""
    if rig.twin is not None:
        from rig.sim.world import CoinPlacement

        world = rig.twin.world

        def twin(request: OperatorRequest) -> None:
            if request.action == "remove" or request.side_up is None:
                world.place_on_turntable(None)
                return
            current = world.snapshot().on_turntable
            if request.action == "flip" and current is not None:
                world.place_on_turntable(replace(current, side_up=request.side_up))
            else:
                world.place_on_turntable(CoinPlacement(request.coin_id, request.side_up))

        return twin
    if not sys.stdin.isatty():
        return None

    def person(request: OperatorRequest) -> None:
        typer.prompt(f"{request.message}, then press Enter", default="", show_default=False)

    return person


def _coin_info(rig: Rig, coin_id: str) -> dict[str, Any]:
    """What the twin's catalog knows of a coin (its coins.jsonl line); {} on a real rig.

    Also {} on a mixed rig whose real devices move the coin: the twin's labels would name a
    coin the real arm never put in front of the camera.
    """
    if rig.twin is None or not rig.twin.ground_truth:
        return {}
    info = dict(rig.twin.catalog.record(coin_id))
    info.pop("coin_id", None)
    return info


def check_twin_knows(rig: Rig, jobs: list[CoinJob]) -> None:
    """In simulation, every coin must be one the twin can render (else refuse before moving).

    Raises:
        UserError: a coin the twin's catalog does not hold.
    """
    if rig.twin is None:
        return
    for job in jobs:
        try:
            rig.twin.catalog.coin(job.coin_id)
        except LookupError as exc:
            raise UserError(str(exc)) from None
