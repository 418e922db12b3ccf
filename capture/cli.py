"""`rig capture`, `rig simulate`, `rig dataset ...`: thin commands over capture's library.

Examples:
    rig capture --coin SIM-0001 --slot 0 --plan configs/plans/quick.yaml --out data/demo
    rig capture --tray tray.csv --config configs/sim.yaml --out data/demo
    rig capture --coin SIM-0001 --dry-run
    rig simulate --coins 3 --image-size 128 --out data/sim-demo   (see capture.simulate)
    rig dataset verify data/demo
    rig dataset summary data/demo
    rig dataset sheet data/demo --coin SIM-0001

Exit codes: 0 done, 1 failed, 2 bad input (nothing moved), 3 paused (rerun the same command to
resume), 130 interrupted (parked, resumable).
"""

from __future__ import annotations

import csv
import json
import sys
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from capture.checks import summary, verify
from capture.dataset import DatasetError, DatasetWriter, validate_coin_id
from capture.engine import CoinJob, OperatorRequest, Prompt
from capture.events import JsonlLog, RunState
from capture.plan import Plan, dry_run
from capture.progress import make_progress
from capture.session import SessionRunner, new_session_id
from capture.sheet import write_contact_sheet
from rig.calibration.flatfield import FlatFieldCorrector
from rig.calibration.store import CalibrationUse, calibration_for_rig
from rig.cli_support import EXIT_INTERRUPTED, UserError, expected_errors, fail
from rig.config import RigConfig, load_config
from rig.devices import Rig

EXIT_FAILED = 1
EXIT_PAUSED = 3


def register(app: typer.Typer) -> None:
    """Add `capture`, `simulate` and the `dataset` sub-app to the `rig` command."""
    from capture.simulate import simulate  # imports this module: register it lazily

    app.command("capture")(capture)
    app.command("simulate")(simulate)
    dataset_app = typer.Typer(no_args_is_help=True, help="Verify, summarise and view datasets.")
    dataset_app.command("verify")(dataset_verify)
    dataset_app.command("summary")(dataset_summary)
    dataset_app.command("sheet")(dataset_sheet)
    app.add_typer(dataset_app, name="dataset")


def read_tray(path: Path) -> list[CoinJob]:
    """Parse a tray CSV of `slot,coin_id` rows (a header row is allowed).

    Raises:
        UserError: unreadable file, a bad row, a duplicate slot or coin.
    """
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read tray file: {exc}") from exc
    jobs: list[CoinJob] = []
    for number, row in enumerate(rows, start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if number == 1 and cells[0].lower() == "slot":
            continue
        if len(cells) != 2 or not cells[0].isdigit():
            raise UserError(f"{path}:{number}: expected `slot,coin_id`, got {row}")
        jobs.append(CoinJob(validate_coin_id(cells[1]), int(cells[0])))
    if not jobs:
        raise UserError(f"{path}: no coins listed")
    for what, values in (("slot", [j.slot for j in jobs]), ("coin", [j.coin_id for j in jobs])):
        if len(set(values)) != len(values):
            raise UserError(f"{path}: a {what} is listed twice")
    return jobs


def capture(
    coin: str | None = typer.Option(None, "--coin", help="Coin id, e.g. SAW-0107."),
    slot: int | None = typer.Option(None, "--slot", min=0, help="Tray slot the arm picks from."),
    tray: Path | None = typer.Option(None, "--tray", help="CSV of slot,coin_id rows."),
    config_path: Path = typer.Option(Path("configs/sim.yaml"), "--config", help="Rig config."),
    plan_path: Path = typer.Option(
        Path("configs/plans/standard.yaml"), "--plan", help="Capture plan."
    ),
    out: Path | None = typer.Option(None, "--out", help="Dataset folder (default: storage.root)."),
    dry: bool = typer.Option(False, "--dry-run", help="List and check the shots; move nothing."),
    faults: str | None = typer.Option(None, "--faults", help="Emulator fault preset."),
    time_scale: float | None = typer.Option(None, "--time-scale", help="Sim clock scale."),
    flatfield: bool = typer.Option(
        False, "--flatfield", help="Flat-field and white-balance frames (rig calibrate flatfield)."
    ),
) -> None:
    """Photograph coins following a plan; a rerun resumes where the last one stopped.

    Examples:
        rig capture --coin SIM-0001 --slot 0 --plan configs/plans/quick.yaml --out data/demo
        rig capture --tray tray.csv --out data/demo --flatfield
        rig capture --coin SIM-0001 --dry-run
    """
    with expected_errors(DatasetError):
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
        report = dry_run(plan, config, coins=len(jobs))
        if dry:
            _print_dry_run(report, plan, jobs)
        if report.problems:
            raise UserError(f"plan {plan.name!r} cannot run on this rig: {report.problems[0]}")
        if dry:
            return
    root = out if out is not None else config.storage.root
    raise typer.Exit(_run_capture(config, plan, jobs, root, faults, time_scale, flatfield))


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
    from rig.backend import open_rig  # imported here: `--dry-run` and `dataset` never need it

    with ExitStack() as stack:
        with expected_errors(DatasetError):
            writer = stack.enter_context(open_writer(root, config))
            rig = stack.enter_context(open_rig(config, faults=faults, time_scale=time_scale))
            check_twin_knows(rig, jobs)
            calibration = calibration_for_rig(config, rig.camera.identity())
            corrector = _flatfield_corrector(calibration) if flatfield else None
        _stage_twin(rig, jobs, plan)
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


def open_writer(root: Path, config: RigConfig) -> DatasetWriter:
    """A DatasetWriter for `root` with the rig config's storage settings (not yet opened)."""
    return DatasetWriter(
        root,
        software=_software(),
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
                return EXIT_FAILED if not isinstance(exc, DatasetError) else 2
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


def _software() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"coinrig {version('coinrig')}"
    except PackageNotFoundError:
        return "coinrig"


def _stage_twin(rig: Rig, jobs: list[CoinJob], plan: Plan) -> None:
    """In simulation, lay the listed coins in the twin's tray (the operator's job on a real rig)."""
    world = rig.extras.get("world")
    if world is None:
        return
    from rig.sim.world import CoinPlacement

    slots = {j.slot: CoinPlacement(j.coin_id, plan.sides[0]) for j in jobs if j.slot is not None}
    if slots:
        world.load_tray(slots)


def _operator(rig: Rig) -> Prompt | None:
    """Who handles coins when the arm cannot: the twin in simulation, else a person at a tty."""
    world = rig.extras.get("world")
    if world is not None:
        from rig.sim.world import CoinPlacement

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
    """What the twin's catalog knows of a coin (its coins.jsonl line); {} on a real rig."""
    catalog = rig.extras.get("catalog")
    record = getattr(catalog, "record", None)
    if record is None:
        return {}
    info = dict(record(coin_id))
    info.pop("coin_id", None)
    return info


def check_twin_knows(rig: Rig, jobs: list[CoinJob]) -> None:
    """In simulation, every coin must be one the twin can render (else refuse before moving).

    Raises:
        UserError: a coin the twin's catalog does not hold.
    """
    catalog = rig.extras.get("catalog")
    lookup = getattr(catalog, "coin", None)
    if lookup is None:
        return
    for job in jobs:
        try:
            lookup(job.coin_id)
        except LookupError as exc:
            raise UserError(str(exc)) from None


# ---------------------------------------------------------------- dataset sub-commands


def dataset_verify(
    root: Path = typer.Argument(..., help="Dataset folder."),
    strict: bool = typer.Option(False, "--strict", help="Warnings fail too."),
) -> None:
    """Check every file against its checksum, find orphans, account for every planned shot.

    Example: rig dataset verify data/demo
    """
    if not (root / "dataset.json").exists():
        raise fail(f"{root}: not a dataset folder (no dataset.json)")
    problems = verify(root)
    for problem in problems:
        typer.echo(str(problem))
    errors = [p for p in problems if p.severity == "error"]
    warnings = len(problems) - len(errors)
    typer.echo(f"{root}: {len(errors)} error(s), {warnings} warning(s)")
    if errors or (strict and problems):
        raise typer.Exit(1)


def dataset_summary(
    root: Path = typer.Argument(..., help="Dataset folder."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Coins and images per side, light and angle.

    Example: rig dataset summary data/demo
    """
    if not (root / "dataset.json").exists():
        raise fail(f"{root}: not a dataset folder (no dataset.json)")
    counts = summary(root)
    if as_json:
        typer.echo(json.dumps(counts, indent=2))
        return
    typer.echo(f"{root}: {counts['coins']} coin(s), {counts['images']} capture image(s)")
    typer.echo(f"  catalog images: {counts['catalog_images']}")
    for key in ("by_side", "by_light", "by_angle", "by_coin", "sessions"):
        cells = ", ".join(f"{k}: {v}" for k, v in counts[key].items())
        typer.echo(f"  {key.replace('_', ' ')}: {cells or '-'}")


def dataset_sheet(
    root: Path = typer.Argument(..., help="Dataset folder."),
    coin: str = typer.Option(..., "--coin", help="Coin id."),
    out: Path | None = typer.Option(None, "--out", help="PNG path (default: COIN-sheet.png)."),
    thumb_px: int = typer.Option(128, "--thumb", min=16, max=1024, help="Thumbnail size."),
) -> None:
    """Write a contact sheet PNG of one coin: rows side × light, columns by angle.

    Example: rig dataset sheet data/demo --coin SIM-0001
    """
    with expected_errors(DatasetError):
        validate_coin_id(coin)
        path = write_contact_sheet(root, coin, out or Path(f"{coin}-sheet.png"), thumb_px=thumb_px)
    typer.echo(f"wrote {path}")
