"""One tray load of `rig simulate`: the coins' lines and catalog images, the tray, the session.

The same in the command's own process and in a `--workers` process (simulate_units), on the
load's rig: the catalog-style reference images and coins.jsonl lines first (their own writer,
so the session record counts the session's images only), then the coins laid in the twin's
tray and the session of `rig capture --tray` (pipeline.rig_cli.session_run.run_session).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from capture.engine import CoinJob
from capture.plan import Plan, Side
from capture.resume import ResumeIndex
from capture.writer import DatasetWriteError, DatasetWriter
from dataset.layout import DatasetError
from pipeline.cli_support import expected_errors
from pipeline.rig_cli.session_run import EXIT_PAUSED, open_writer, run_session
from rig.config import RigConfig
from rig.devices import Rig
from rig.sim.coins import SIDES, CoinCatalog, stable_rng
from rig.sim.simulation import catalog_of


@dataclass
class SimTally:
    """What one `rig simulate` run did, for its closing summary."""

    captures: int = 0
    catalog_images: int = 0
    batches_run: int = 0
    batches_skipped: int = 0
    exit_codes: list[int] = field(default_factory=list)
    processes: int = 1


def make_catalog(config: RigConfig) -> CoinCatalog:
    """The twin's coin catalog for a simulation config."""
    sim = config.simulation
    assert sim is not None  # simulation_config guarantees it
    return catalog_of(sim)


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


def capture_load(
    rig: Rig,
    config: RigConfig,
    plan: Plan,
    catalog: CoinCatalog,
    jobs: list[CoinJob],
    out: Path,
    seed: int,
    tally: SimTally,
) -> int:
    """Reference images, then the tray load through `rig capture --tray`'s session path.

    Returns the exit code: 0 done, 3 paused (disk full, a device), 130 interrupted, 1 failed.
    """
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
