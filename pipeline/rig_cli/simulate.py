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

Rerunning the same command resumes: finished tray loads are skipped, a paused one completes.
Each run draws new emulator faults (its fault seed is printed; `--fault-seed N` replays one).
Exit codes as for `rig capture`: 0 done, 1 failed, 2 bad input, 3 paused or a device
unreachable after its retries (rerun), 130 interrupted.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from capture.engine import CoinJob
from capture.estimate import dry_run
from capture.plan import Plan, ShotEvent, Side, expand
from capture.resume import ResumeIndex
from capture.writer import DatasetWriteError, DatasetWriter
from dataset.layout import DatasetError
from dataset.reader import DatasetReader
from pipeline.cli_support import EXIT_INTERRUPTED, UserError, expected_errors
from pipeline.rig_cli.session_run import EXIT_PAUSED, open_writer, run_session
from rig.assembly import devices_on_hardware
from rig.config import RigConfig, SimCameraConfig, load_config, parse_config
from rig.devices import Rig
from rig.sim.coins import SIDES, CoinCatalog, stable_rng
from rig.sim.faults import FAULT_PRESETS
from rig.sim.simulation import fresh_fault_seed, reseed_faults

DEFAULT_PLAN = Path("quick")
# coins.jsonl fields that depend on the catalog's seed and types: a mismatch means the folder
# was simulated with other settings, and resuming into it would mix two different coin sets.
_IDENTITY_FIELDS = ("collection", "ruler", "type", "catalog_ref")


@dataclass
class SimTally:
    """What one `rig simulate` run did, for its closing summary."""

    captures: int = 0
    catalog_images: int = 0
    batches_run: int = 0
    batches_skipped: int = 0
    exit_codes: list[int] = field(default_factory=list)


def simulate(
    coins: int = typer.Option(24, "--coins", min=1, help="Coins in the simulated catalog."),
    types: int = typer.Option(6, "--types", min=1, help="Reverse types (RIC numbers)."),
    seed: int = typer.Option(0, "--seed", help="Catalog seed: same seed, same coins."),
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
        # A rerun must meet new faults: one drawn from the folder's state would repeat for
        # ever after a run that fails before recording anything (at connect).
        fault_seed = fresh_fault_seed() if fault_seed is None else fault_seed
        config = simulation_config(
            load_config(config_path),
            coins=coins,
            types=types,
            seed=seed,
            image_size=image_size,
            time_scale=time_scale,
            fault_seed=fault_seed,
        )
        plan = Plan.load(plan_path)
        report = dry_run(plan, config, coins=coins)
        if report.problems:
            raise UserError(f"plan {plan.name!r} cannot run on this rig: {report.problems[0]}")
        catalog = make_catalog(config)
        check_same_simulation(out, catalog, config)
        batches = tray_batches(catalog.coin_ids(), _tray_slots(config))
    if faults != "none":
        typer.echo(f"faults {faults}, fault seed {fault_seed} (--fault-seed {fault_seed} replays)")
    tally = SimTally()
    physical_s: float | None = None
    try:
        physical_s = _capture_batches(config, plan, catalog, batches, out, faults, tally)
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
) -> RigConfig:
    """The rig config with the simulation section (and camera size) the command line asks for.

    `fault_seed` shifts every emulator's fault seed (rig.sim.simulation.reseed_faults).

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
    if time_scale is not None:
        sim["time_scale"] = time_scale  # so the session's config snapshot tells the truth
    if image_size is not None:
        data["camera"].update(width=image_size, height=image_size)
    return reseed_faults(parse_config(data, source="rig simulate settings"), fault_seed)


def make_catalog(config: RigConfig) -> CoinCatalog:
    """The twin's coin catalog for a simulation config."""
    sim = config.simulation
    assert sim is not None  # simulation_config guarantees it
    return CoinCatalog(
        seed=sim.seed,
        rulers=sim.rulers,
        types=sim.types,
        coins=sim.coins,
        dies_per_design=sim.dies_per_design,
    )


def tray_batches(coin_ids: Sequence[str], slots: int | None) -> list[list[CoinJob]]:
    """Tray loads of at most `slots` coins (slot = place in the load); None: no arm, one load."""
    if slots is None:
        return [[CoinJob(coin_id) for coin_id in coin_ids]] if coin_ids else []
    return [
        [CoinJob(coin_id, slot) for slot, coin_id in enumerate(coin_ids[i : i + slots])]
        for i in range(0, len(coin_ids), slots)
    ]


def tray_spin_deg(seed: int, coin_id: str) -> float:
    """How a coin happens to lie in its slot: random, but the same for a coin on every rerun."""
    return float(stable_rng(seed, "tray-spin", coin_id).uniform(0.0, 360.0))


def stage_tray(rig: Rig, jobs: Sequence[CoinJob], side_up: Side, seed: int) -> None:
    """Fill the twin's tray with one load of coins, `side_up` up (the operator's job)."""
    from rig.sim.world import CoinPlacement

    assert rig.twin is not None, "rig simulate opens the rig on the simulation backend"
    rig.twin.world.load_tray(
        {
            job.slot: CoinPlacement(job.coin_id, side_up, tray_spin_deg(seed, job.coin_id))
            for job in jobs
            if job.slot is not None
        }
    )


def coin_line(catalog: CoinCatalog, coin_id: str) -> dict[str, Any]:
    """The coins.jsonl fields of a simulated coin: the catalog record plus label indices."""
    coin = catalog.coin(coin_id)
    info = dict(catalog.record(coin_id))
    info.pop("coin_id")
    # Names can repeat across rulers; training wants unambiguous integer labels.
    info.update(ruler_index=coin.ruler, type_index=coin.type_index)
    return info


def check_same_simulation(root: Path, catalog: CoinCatalog, config: RigConfig) -> None:
    """Refuse to resume into a folder simulated with another seed, other types or image size.

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
                    f"{expected[key]!r}: it was simulated with another --seed or --types; "
                    "use another --out folder"
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


def write_catalog_images(
    writer: DatasetWriter, catalog: CoinCatalog, coin_ids: Sequence[str]
) -> int:
    """Write each coin's missing catalog-style reference images and coins.jsonl lines.

    Returns how many images were queued.

    Raises:
        DatasetWriteError: a write failed (disk full); the dataset stays consistent.
    """
    from rig.sim.catalog_style import render_catalog_image

    index = ResumeIndex(writer.root)
    queued = 0
    for coin_id in coin_ids:
        info = coin_line(catalog, coin_id)
        writer.add_coin(coin_id, **info)
        for side in SIDES:
            name = f"catalog/{coin_id}/{side}.jpg"
            if index.intact(name):
                continue
            # the twin's own JPEG, stored as it is: an auction photo is compressed once
            _, jpeg = render_catalog_image(catalog, coin_id, side)
            writer.write_catalog_image(
                coin_id,
                side,
                jpeg,
                ext="jpg",
                source="rig.sim.catalog_style",
                catalog_ref=info["catalog_ref"],
            )
            queued += 1
    writer.flush()
    return queued


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
) -> float | None:
    """Run every unfinished tray load on one rig; stop at the first that does not finish."""
    from rig.assembly import open_rig  # the emulators are only needed past argument checks

    seed = catalog.seed
    ext = config.storage.image_format
    with expected_errors(DatasetError):
        index, events = ResumeIndex(out), expand(plan)
        pending = [jobs for jobs in batches if not batch_complete(index, jobs, events, ext)]
    tally.batches_skipped = len(batches) - len(pending)
    if not pending:
        # Opening a writer still takes the lock and tidies what a crash after the last shot
        # can leave (a session record's temporary file).
        with expected_errors(DatasetError, OSError), open_writer(out, config):
            pass
        typer.echo(f"{out}: every tray load is already captured; nothing to do")
        return 0.0
    with ExitStack() as stack:
        with expected_errors(DatasetError):
            rig = stack.enter_context(open_rig(config, faults=faults, catalog=catalog))
        for number, jobs in enumerate(pending, start=1):
            typer.echo(f"tray load {number} of {len(pending)}: {len(jobs)} coin(s)")
            code = _capture_batch(rig, config, plan, catalog, jobs, out, seed, tally)
            tally.exit_codes.append(code)
            tally.batches_run += 1
            if code != 0:
                break  # a paused load is resumed by the rerun before any later one starts
        twin = rig.twin
        return float(twin.clock.physical_duration_s()) if twin is not None else None


def _capture_batch(
    rig: Rig,
    config: RigConfig,
    plan: Plan,
    catalog: CoinCatalog,
    jobs: list[CoinJob],
    out: Path,
    seed: int,
    tally: SimTally,
) -> int:
    """Reference images, then the tray load through `rig capture --tray`'s session path."""
    # Two writers: the session record's counts must be the session's own images only.
    with expected_errors(DatasetError, OSError), open_writer(out, config) as writer:
        try:
            tally.catalog_images += write_catalog_images(
                writer, catalog, [job.coin_id for job in jobs]
            )
        except DatasetWriteError as exc:
            typer.echo(f"paused: {exc}; rerun the same command to resume", err=True)
            return EXIT_PAUSED
    stage_tray(rig, jobs, plan.sides[0], seed)
    with expected_errors(DatasetError, OSError), open_writer(out, config) as writer:
        code = run_session(rig, writer, config, plan, jobs)
        tally.captures += sum(1 for r in writer.written if r.get("role") == "capture")
    return code


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
    table.add_row("physical duration (twin ledger)", _duration(physical_s), "")
    table.add_row("wall time", _duration(wall_s), "")
    Console(soft_wrap=True).print(table)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(seconds, 60.0)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{secs:04.1f} ({seconds:.1f} s)"
