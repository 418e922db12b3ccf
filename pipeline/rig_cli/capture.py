"""`rig capture`, `rig simulate`, `rig dataset ...`: thin commands over capture's library.

Examples:
    rig capture --coin SIM-0001 --slot 0 --plan quick --out data/demo
    rig capture --tray tray.csv --config sim --out data/demo
    rig capture --coin SIM-0001 --dry-run
    rig simulate --coins 3 --image-size 128 --out data/sim-demo   (see pipeline.rig_cli.simulate)
    rig dataset verify data/demo
    rig dataset summary data/demo
    rig dataset sheet data/demo --coin SIM-0001

Exit codes: 0 done, 1 failed, 2 bad input (nothing moved), 3 paused or a device unreachable
after its connect retries (rerun the same command to resume), 130 interrupted (parked,
resumable).
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import typer

from capture.calibration.flatfield import FlatFieldCorrector
from capture.calibration.store import CalibrationUse, calibration_for_rig
from capture.engine import CoinJob
from capture.estimate import dry_run
from capture.plan import Plan
from capture.tray import TrayError, read_tray
from dataset.layout import DatasetError, validate_coin_id
from dataset.outputs import check_dataset_folder
from pipeline.cli_support import UserError, expected_errors
from pipeline.rig_cli.session_run import check_twin_knows, open_writer, run_session, stage_twin
from rig.config import RigConfig, load_config


def register(app: typer.Typer) -> None:
    """Add `capture` to the `rig` command."""
    app.command("capture")(capture)


def capture(
    coin: str | None = typer.Option(None, "--coin", help="Coin id, e.g. SAW-0107."),
    slot: int | None = typer.Option(None, "--slot", min=0, help="Tray slot the arm picks from."),
    tray: Path | None = typer.Option(None, "--tray", help="CSV of slot,coin_id rows."),
    config_path: Path = typer.Option(Path("sim"), "--config", help="Rig config."),
    plan_path: Path = typer.Option(Path("standard"), "--plan", help="Capture plan."),
    out: Path | None = typer.Option(None, "--out", help="Dataset folder (default: storage.root)."),
    dry: bool = typer.Option(False, "--dry-run", help="List and check the shots; move nothing."),
    faults: str | None = typer.Option(None, "--faults", help="Emulator fault preset."),
    fault_seed: int | None = typer.Option(
        None, "--fault-seed", min=0, help="Replay a run's faults (default: new ones each run)."
    ),
    time_scale: float | None = typer.Option(None, "--time-scale", help="Sim clock scale."),
    flatfield: bool = typer.Option(
        False, "--flatfield", help="Flat-field and white-balance frames (rig calibrate flatfield)."
    ),
) -> None:
    """Photograph coins following a plan; a rerun resumes where the last one stopped.

    Examples:
        rig capture --coin SIM-0001 --slot 0 --plan quick --out data/demo
        rig capture --tray tray.csv --out data/demo --flatfield
        rig capture --coin SIM-0001 --dry-run
    """
    with expected_errors(DatasetError, TrayError):
        if (coin is None) == (tray is None):
            raise UserError("give exactly one of --coin or --tray")
        if tray is not None and slot is not None:
            raise UserError("--slot goes with --coin; a tray file lists its own slots")
        # Coin ids are checked first: a bad id must be refused before anything is touched.
        jobs = (
            read_tray(tray) if tray is not None else [CoinJob(validate_coin_id(coin or ""), slot)]
        )
        config = load_config(config_path)
        plan = Plan.load(plan_path)
        _check_slots(config, jobs)
        report = dry_run(plan, config, coins=len(jobs), slots=[job.slot for job in jobs])
        if dry:
            _print_dry_run(report, plan, jobs)
        if report.problems:
            raise UserError(f"plan {plan.name!r} cannot run on this rig: {report.problems[0]}")
        if dry:
            return
        root = out if out is not None else config.storage.root
        check_dataset_folder(root)  # a foreign folder is refused before anything is written
    if faults not in (None, "none") and _emulates_something(config):
        from rig.sim.simulation import fresh_fault_seed, reseed_faults

        # each rerun meets new emulator faults, as a real rig's do not repeat on cue
        fault_seed = fresh_fault_seed() if fault_seed is None else fault_seed
        config = reseed_faults(config, fault_seed)
        typer.echo(f"faults {faults}, fault seed {fault_seed} (--fault-seed {fault_seed} replays)")
    raise typer.Exit(_run_capture(config, plan, jobs, root, faults, time_scale, flatfield))


def _emulates_something(config: RigConfig) -> bool:
    from rig.assembly import needs_backend  # imported here: only a fault preset needs it

    return needs_backend(config)


def _check_slots(config: RigConfig, jobs: list[CoinJob]) -> None:
    for job in jobs:
        if job.slot is not None:
            if config.tray is None:
                raise UserError("--slot needs a rig with a `tray:` section")
            config.tray.slot_pose(job.slot)  # raises ConfigError naming the valid slots


def _print_dry_run(report: Any, plan: Plan, jobs: list[CoinJob]) -> None:
    typer.echo(f"plan {plan.name}: {len(report.events)} shots per coin, {len(jobs)} coin(s)")
    for event in report.events:
        tilt = "" if event.tilt_deg is None else f" tilt {event.tilt_deg:g}°"
        exposure = "" if event.exposure_us is None else f" {event.exposure_us:g} µs"
        ref = " [reference]" if event.reference else ""
        typer.echo(
            f"  {event.index:04d} {event.side:<8} {event.turntable_deg:7.2f}°{tilt} "
            f"{event.light}{exposure}{ref}"
        )
    for problem in report.problems:
        typer.echo(f"problem: {problem}", err=True)
    typer.echo(
        f"estimated physical time: {report.duration_per_coin_s:.1f} s per coin, "
        f"{report.duration_s / 60:.1f} min in all"
    )


def _run_capture(
    config: RigConfig,
    plan: Plan,
    jobs: list[CoinJob],
    root: Path,
    faults: str | None,
    time_scale: float | None,
    flatfield: bool = False,
) -> int:
    from rig.assembly import open_rig  # imported here: `--dry-run` and `dataset` never need it

    with ExitStack() as stack:
        with expected_errors(DatasetError):
            writer = stack.enter_context(open_writer(root, config))
            rig = stack.enter_context(open_rig(config, faults=faults, time_scale=time_scale))
            if rig.twin is not None and rig.twin.mixed_warning is not None:
                typer.echo(f"warning: {rig.twin.mixed_warning}", err=True)
            check_twin_knows(rig, jobs)
            calibration = calibration_for_rig(config, rig.camera.identity())
            corrector = _flatfield_corrector(calibration) if flatfield else None
        stage_twin(rig, jobs, plan)
        return run_session(
            rig, writer, config, plan, jobs, calibration=calibration, flatfield=corrector
        )


def _flatfield_corrector(calibration: CalibrationUse) -> FlatFieldCorrector:
    """The flat field `--flatfield` asks for; refused (nothing moved) when there is none."""
    stored = calibration.records.get("flatfield")
    if stored is None:
        raise UserError(
            "--flatfield: this rig has no flat-field calibration; run `rig calibrate flatfield`"
        )
    return FlatFieldCorrector(stored)
