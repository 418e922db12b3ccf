"""What a `rig simulate --workers` process runs for one unit: capture it, or render it directly.

Module-level functions of a picklable task (pipeline.rig_cli.simulate_workers starts the
processes and adopts what they write). `capture_unit` opens an emulated rig of its own, with
faults drawn for the unit, and captures the unit's coins as one tray load (simulate_load);
`render_unit` (`--direct`) writes the same catalog images and lines, then renders the plan's
shots straight from the twin (capture.twin_render), with no rig at all.
"""

from __future__ import annotations

import functools
from contextlib import ExitStack
from dataclasses import dataclass

import typer

from capture.plan import Plan
from capture.session import new_session_id
from capture.twin_render import TwinShots
from capture.writer import DatasetWriteError
from dataset.layout import DatasetError
from pipeline.cli_support import EXIT_RERUN, expected_errors, set_debug, setup_logging
from pipeline.rig_cli.session_run import open_writer
from pipeline.rig_cli.simulate_load import (
    SimTally,
    capture_load,
    make_catalog,
    tray_spin_deg,
    write_catalog_images,
)
from pipeline.rig_cli.simulate_workers import UnitResult, UnitTask
from rig.config import RigConfig
from rig.sim.simulation import reseed_faults


@dataclass(frozen=True)
class UnitSettings:
    """What a `--workers` process needs of the command line to capture its units."""

    config: RigConfig
    plan: Plan
    faults: str
    debug: bool


def capture_unit(task: UnitTask) -> UnitResult:
    """Capture one unit in a worker process: a rig of its own (its own faults), its staging set."""
    from rig.assembly import open_rig

    settings: UnitSettings = task.settings
    set_debug(settings.debug)
    setup_logging(settings.debug)
    config = reseed_faults(settings.config, task.unit.index)
    catalog = make_catalog(config)
    tally = SimTally()
    physical_s = None
    try:
        with ExitStack() as stack:
            with expected_errors(DatasetError):
                rig = stack.enter_context(open_rig(config, faults=settings.faults, catalog=catalog))
            jobs, seed = list(task.unit.jobs), catalog.seed
            code = capture_load(rig, config, settings.plan, catalog, jobs, task.root, seed, tally)
            if rig.twin is not None:
                physical_s = float(rig.twin.clock.physical_duration_s())
    except typer.Exit as exc:
        code = exc.exit_code
    return UnitResult(task.unit.index, code, tally.captures, tally.catalog_images, physical_s)


def render_unit(task: UnitTask) -> UnitResult:
    """`--direct`: one unit's catalog images, then its planned shots rendered from the twin."""
    settings: UnitSettings = task.settings
    set_debug(settings.debug)
    setup_logging(settings.debug)
    catalog = make_catalog(settings.config)
    coin_ids = task.unit.coin_ids
    spin = functools.partial(tray_spin_deg, catalog.seed)
    shots = TwinShots(settings.config, settings.plan, catalog, spin)
    catalog_images = captures = 0
    code = 0
    try:
        with expected_errors(DatasetError, OSError), open_writer(task.root, settings.config) as w:
            try:
                catalog_images = write_catalog_images(w, catalog, coin_ids)
                captures = shots.write(w, coin_ids, f"direct-{new_session_id()}")
            except DatasetWriteError as exc:  # the disk filled: what is written stays whole
                typer.echo(f"paused: {exc}; rerun the same command to resume", err=True)
                code = EXIT_RERUN
    except typer.Exit as exc:
        code = int(exc.exit_code)
    finally:
        shots.close()
    return UnitResult(task.unit.index, code, captures, catalog_images)
