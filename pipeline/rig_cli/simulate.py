"""`rig simulate`: the whole capture stack, real drivers included, against emulators and the twin.

It starts the emulators and the digital twin in-process with a procedural coin catalog, lays the
coins in the twin's tray (more coins than slots: one tray load after another, as an operator
refills the tray overnight) and runs each tray load through the very path of
`rig capture --tray` (pipeline.rig_cli.session_run.run_session). It also writes one auction-catalog-style
reference image per coin side (role catalog) and a coins.jsonl line per coin with the twin's
ground truth (ruler, type, catalog reference).

Examples:
    rig simulate
    rig simulate --coins 3 --types 2 --image-size 128 --out /tmp/sim
    rig simulate --coins 48 --plan standard --faults light --out data/sim
    rig simulate --coins 120 --types 12 --shared-reverses 0 --out /tmp/unique  # no shared designs

Rerunning the same command resumes: finished tray loads are skipped, a paused one completes.
Each run draws new emulator faults (its fault seed is printed; `--fault-seed N` replays one).
Exit codes as for `rig capture`: 0 done, 1 failed, 2 bad input, 3 paused or a device
unreachable after its retries (rerun), 130 interrupted.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from capture.engine import CoinJob
from capture.estimate import dry_run
from capture.parallel_sim import leftover_units
from capture.plan import Plan, ShotEvent, expand
from capture.resume import ResumeIndex
from dataset.layout import DatasetError
from dataset.outputs import check_dataset_folder
from dataset.reader import DatasetReader
from pipeline.cli_support import EXIT_INTERRUPTED, UserError, expected_errors
from pipeline.cli_support import settings as cli_settings
from pipeline.rig_cli.session_run import open_writer
from pipeline.rig_cli.simulate_load import SimTally, capture_load, make_catalog
from pipeline.rig_cli.simulate_load import coin_line as coin_line
from pipeline.rig_cli.simulate_load import stage_tray as stage_tray
from pipeline.rig_cli.simulate_load import tray_spin_deg as tray_spin_deg
from pipeline.rig_cli.simulate_units import UnitSettings, capture_unit, render_unit
from pipeline.rig_cli.simulate_workers import (
    MIN_UNIT_COINS,
    adopt_leftover_units,
    plan_units,
    run_parallel,
    unit_images,
)
from rig.assembly import devices_on_hardware
from rig.config import RigConfig, SimCameraConfig, load_config, parse_config
from rig.sim.coins import SIDES, CoinCatalog
from rig.sim.faults import FAULT_PRESETS
from rig.sim.simulation import fresh_fault_seed, reseed_faults

DEFAULT_PLAN = Path("quick")
# coins.jsonl fields that depend on the catalog's seed, types and share of reverse designs (the
# collection names a share other than the default): a mismatch means the folder
# was simulated with other settings, and resuming into it would mix two different coin sets.
_IDENTITY_FIELDS = ("collection", "ruler", "type", "catalog_ref")
SHARED_REVERSES = typer.Option(
    None,
    "--shared-reverses",
    help="Fraction of later types that reuse another ruler's reverse design, 0..1 "
    "(default: the config's, 0.5).",
)

WORKERS = typer.Option(
    0,
    "--workers",
    min=0,
    help=f"Processes, each with its own emulated rig (0: every core, in units of at least "
    f"{MIN_UNIT_COINS} coins; 1: one process).",
)
DIRECT = typer.Option(
    False,
    "--direct",
    help="Render each planned shot straight from the twin: no emulators, drivers or arm "
    "(the rig's frames, for large pretraining collections; no session records).",
)


def simulate(
    coins: int = typer.Option(24, "--coins", min=1, help="Coins in the simulated catalog."),
    types: int = typer.Option(6, "--types", min=1, help="Reverse types (RIC numbers)."),
    seed: int = typer.Option(0, "--seed", help="Catalog seed: same seed, same coins."),
    shared_reverses: float | None = SHARED_REVERSES,
    out: Path = typer.Option(Path("data/sim"), "--out", help="Dataset folder."),
    faults: str = typer.Option("none", "--faults", help="Emulator faults: none, light, heavy."),
    time_scale: float = typer.Option(
        0.0, "--time-scale", min=0.0, help="0 = no waiting, 1 = real time."
    ),
    plan_path: Path = typer.Option(DEFAULT_PLAN, "--plan", help="Capture plan."),
    config_path: Path = typer.Option(Path("sim"), "--config", help="Rig config."),
    image_size: int | None = typer.Option(
        None, "--image-size", min=32, help="Square sim camera frames of N px (default: config)."
    ),
    fault_seed: int | None = typer.Option(
        None, "--fault-seed", min=0, help="Replay a run's faults (default: new ones each run)."
    ),
    workers: int = WORKERS,
    direct: bool = DIRECT,
) -> None:
    """Capture a simulated collection end to end: emulators, real drivers, twin, dataset.

    Examples:
        rig simulate --coins 24 --types 6 --seed 0 --out data/sim
        rig simulate --coins 3 --image-size 128 --faults heavy --out /tmp/sim
    """
    started = time.monotonic()
    with expected_errors(DatasetError):
        if faults not in FAULT_PRESETS:
            raise UserError(f"unknown --faults {faults!r}; choose one of {sorted(FAULT_PRESETS)}")
        if direct and faults != "none":
            raise UserError("--direct runs no emulators: --faults does not apply to it")
        # A rerun must meet new faults: one drawn from the folder's state would repeat for
        # ever after a run that fails before recording anything (at connect).
        fault_seed = fresh_fault_seed() if fault_seed is None else fault_seed
        config = simulation_config(
            load_config(config_path),
            coins=coins,
            types=types,
            seed=seed,
            image_size=image_size,
            shared_reverses=shared_reverses,
            time_scale=time_scale,
            fault_seed=fault_seed,
        )
        plan = Plan.load(plan_path)
        report = dry_run(plan, config, coins=coins)
        if report.problems:
            raise UserError(f"plan {plan.name!r} cannot run on this rig: {report.problems[0]}")
        catalog = make_catalog(config)
        check_dataset_folder(out)  # a foreign folder is refused before anything is written
        check_same_simulation(out, catalog, config)
        batches = tray_batches(catalog.coin_ids(), _tray_slots(config))
    if faults != "none":
        typer.echo(f"faults {faults}, fault seed {fault_seed} (--fault-seed {fault_seed} replays)")
    tally = SimTally()
    physical_s: float | None = None
    try:
        physical_s = _capture_batches(
            config, plan, catalog, batches, out, faults, tally, workers, direct=direct
        )
    except KeyboardInterrupt:
        # A session parks and records itself before this; elsewhere nothing was half-done.
        typer.echo("interrupted: rig parked; rerun the same command to resume", err=True)
        tally.exit_codes.append(EXIT_INTERRUPTED)
    _print_summary(out, tally, physical_s, time.monotonic() - started)
    raise typer.Exit(next((code for code in tally.exit_codes if code != 0), 0))


def simulation_config(
    config: RigConfig,
    *,
    coins: int,
    types: int,
    seed: int,
    image_size: int | None,
    time_scale: float | None = None,
    fault_seed: int = 0,
    shared_reverses: float | None = None,
) -> RigConfig:
    """The rig config with the simulation section (and camera size) the command line asks for.

    `fault_seed` shifts every emulator's fault seed (rig.sim.simulation.reseed_faults);
    `shared_reverses` None keeps the config's share of reverse designs.

    Raises:
        UserError: the config has no simulation section, no simulated camera, or a device on
            hardware (the twin could not know what it did: its ground truth would be wrong).
        ConfigError: the resulting config is invalid.
    """
    if config.simulation is None or not isinstance(config.camera, SimCameraConfig):
        raise UserError("rig simulate needs a config with a `simulation:` section and camera sim")
    real = devices_on_hardware(config)
    if real:
        raise UserError(
            f"rig simulate needs every device emulated; on hardware: {', '.join(real)} "
            "(the twin cannot see a real device: use `rig capture` for a mixed rig)"
        )
    data = config.model_dump(mode="json")
    sim = data["simulation"]
    # The catalog gives every ruler at least one type, so fewer types means fewer rulers.
    sim.update(seed=seed, coins=coins, types=types, rulers=min(sim["rulers"], types))
    if shared_reverses is not None:
        if not 0.0 <= shared_reverses <= 1.0:  # NaN fails too
            raise UserError(f"--shared-reverses must lie in 0..1, got {shared_reverses}")
        sim["shared_reverses"] = shared_reverses
    if time_scale is not None:
        sim["time_scale"] = time_scale  # so the session's config snapshot tells the truth
    if image_size is not None:
        data["camera"].update(width=image_size, height=image_size)
    return reseed_faults(parse_config(data, source="rig simulate settings"), fault_seed)


def tray_batches(coin_ids: Sequence[str], slots: int | None) -> list[list[CoinJob]]:
    """Tray loads of at most `slots` coins (slot = place in the load); None: no arm, one load."""
    if slots is None:
        return [[CoinJob(coin_id) for coin_id in coin_ids]] if coin_ids else []
    return [
        [CoinJob(coin_id, slot) for slot, coin_id in enumerate(coin_ids[i : i + slots])]
        for i in range(0, len(coin_ids), slots)
    ]


def check_same_simulation(root: Path, catalog: CoinCatalog, config: RigConfig) -> None:
    """Refuse to resume into a folder simulated with another seed, types, share or image size.

    Raises:
        UserError: the folder's coins or images disagree with these settings.
    """
    if not (root / "dataset.json").exists():
        return
    reader = DatasetReader(root)
    known = set(catalog.coin_ids())
    for line in reader.coins():
        coin_id = line.get("coin_id")
        if coin_id not in known:
            continue
        expected = catalog.record(coin_id)
        for key in _IDENTITY_FIELDS:
            if key in line and line[key] != expected[key]:
                raise UserError(
                    f"{root}: coin {coin_id} has {key} {line[key]!r} there, not "
                    f"{expected[key]!r}: it was simulated with another --seed, --types or "
                    "--shared-reverses; use another --out folder"
                )
    camera = config.camera
    assert isinstance(camera, SimCameraConfig)
    for record in reader.records():
        if record.get("role") == "capture" and str(record.get("camera", "")).startswith("sim:"):
            size = (record.get("width"), record.get("height"))
            if size != (camera.width, camera.height):
                raise UserError(
                    f"{root}: holds {size[0]}x{size[1]} px captures, not "
                    f"{camera.width}x{camera.height}; use the same --image-size or another --out"
                )
            break


def batch_complete(
    index: ResumeIndex, jobs: Sequence[CoinJob], events: Sequence[ShotEvent], ext: str
) -> bool:
    """Whether every shot and catalog image of a tray load is already on disk, intact.

    Raises:
        DatasetError: the folder holds shots of another plan under the same names.
    """
    for job in jobs:
        if index.todo(job.coin_id, events, ext):
            return False
        if not all(index.intact(f"catalog/{job.coin_id}/{side}.jpg") for side in SIDES):
            return False
    return True


def paused_ending(out: Path) -> str | None:
    """A line for a dataset whose last session paused after its last shot, else None.

    Every image is there, but the pause (an arm error while returning the coin, say) may have
    left a coin on the turntable or the arm: the person should look before the next tray.
    """
    sessions = DatasetReader(out).sessions()
    if not sessions:
        return None
    last = max(sessions, key=lambda s: str(s.get("timings", {}).get("started_at", "")))
    if last.get("status") != "paused":
        return None
    return (
        f"note: session {last.get('session_id')} paused after its last shot "
        f"({last.get('message') or last.get('finish_reason')}); check that every coin is back "
        "in its tray slot"
    )


def _tray_slots(config: RigConfig) -> int | None:
    return config.tray.slots if config.arm is not None and config.tray is not None else None


def _capture_batches(
    config: RigConfig,
    plan: Plan,
    catalog: CoinCatalog,
    batches: list[list[CoinJob]],
    out: Path,
    faults: str,
    tally: SimTally,
    workers: int = 1,
    *,
    direct: bool = False,
) -> float | None:
    """Run every unfinished tray load on one rig; stop at the first that does not finish.

    With `workers` > 1 (0: every core) the loads run as units on processes of their own
    (pipeline.rig_cli.simulate_workers), unless one unit is all there is; `direct` renders
    them straight from the twin, always on worker processes (pipeline.rig_cli.simulate_units).
    """
    from rig.assembly import open_rig  # the emulators are only needed past argument checks

    seed = catalog.seed
    ext = config.storage.image_format
    with expected_errors(DatasetError, OSError):
        if leftover_units(out):  # a killed --workers run's images come first
            adopted = adopt_leftover_units(lambda: open_writer(out, config))
            typer.echo(f"{out}: adopted {adopted} image(s) a killed run left in its units")
        index, events = ResumeIndex(out), expand(plan)
        pending = [jobs for jobs in batches if not batch_complete(index, jobs, events, ext)]
        units = plan_units(
            index, events, ext, pending, workers, complete=batch_complete, always=direct
        )
    tally.batches_skipped = len(batches) - len(pending)
    if len(units) > 1 or (units and direct):  # simulate_workers; else on one rig, in place
        settings = UnitSettings(config, plan, faults, cli_settings.debug)
        with expected_errors(DatasetError, OSError):
            outcome = run_parallel(
                out, lambda: open_writer(out, config), units, workers,
                render_unit if direct else capture_unit, settings,
                images=unit_images(index, units, events, ext),
                what="rendering from the twin" if direct else "each with its own emulated rig",
            )  # fmt: skip
        tally.processes, tally.batches_run = outcome.processes, len(outcome.results)
        tally.captures += sum(r.captures for r in outcome.results)
        tally.catalog_images += sum(r.catalog_images for r in outcome.results)
        tally.exit_codes.append(outcome.exit_code())
        return None if direct else sum(r.physical_s or 0.0 for r in outcome.results)
    if not pending:
        # Opening a writer still takes the lock and tidies what a crash after the last shot
        # can leave (a session record's temporary file).
        with expected_errors(DatasetError, OSError), open_writer(out, config):
            pass
        typer.echo(f"{out}: every tray load is already captured; nothing to do")
        ending = paused_ending(out)
        if ending:
            typer.echo(ending)
        return 0.0
    with ExitStack() as stack:
        with expected_errors(DatasetError):
            rig = stack.enter_context(open_rig(config, faults=faults, catalog=catalog))
        for number, jobs in enumerate(pending, start=1):
            typer.echo(f"tray load {number} of {len(pending)}: {len(jobs)} coin(s)")
            code = capture_load(rig, config, plan, catalog, jobs, out, seed, tally)
            tally.exit_codes.append(code)
            tally.batches_run += 1
            if code != 0:
                break  # a paused load is resumed by the rerun before any later one starts
        twin = rig.twin
        return float(twin.clock.physical_duration_s()) if twin is not None else None


def _print_summary(out: Path, tally: SimTally, physical_s: float | None, wall_s: float) -> None:
    reader = DatasetReader(out) if (out / "dataset.json").exists() else None
    records = reader.records() if reader is not None else []
    captures = sum(1 for r in records if r.get("role") == "capture")
    table = Table(title=f"rig simulate: {out}")
    table.add_column("")
    table.add_column("this run", justify="right")
    table.add_column("dataset", justify="right")
    table.add_row("capture images", str(tally.captures), str(captures))
    table.add_row("catalog images", str(tally.catalog_images), str(len(records) - captures))
    table.add_row(
        "tray loads",
        f"{tally.batches_run} run, {tally.batches_skipped} already done",
        "",
    )
    if tally.processes > 1:  # the tray loads ran as units (slices) on processes of their own
        table.add_row("processes (a rig each; units run above)", str(tally.processes), "")
    table.add_row("physical duration (twin ledger)", _duration(physical_s), "")
    table.add_row("wall time", _duration(wall_s), "")
    Console(soft_wrap=True).print(table)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(seconds, 60.0)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{secs:04.1f} ({seconds:.1f} s)"
