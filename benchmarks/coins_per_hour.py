"""Benchmark coin handling: coins per hour for a tray, serial schedule vs overlapped (issue 16).

A whole session runs on the sim rig at time scale 0 (real drivers, emulators, twin) for one
tray load (default 24 coins, slots 0..23, capture/plans/standard.yaml), twice: with the
serial schedule (`arm.staging.overlap: false`: load, shoot, flip, shoot, unload, the arm
parking after each) and with the overlapped one (the arm returns the previous coin and fetches
the next while the camera shoots). Each is timed twice: by the twin's ledger (its makespan,
from the first coin on: homing is not counted) and by the dry run (`capture.estimate`).

    .venv/bin/python benchmarks/coins_per_hour.py
    .venv/bin/python benchmarks/coins_per_hour.py --coins 8 --plan quick

A serial coin whose parking rises out of the arm's reach (the uArm cannot lift straight up to
the safe pose's height above the tray slots nearest its base) pauses that session: the table
then says so instead of a figure.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from capture.engine import CoinJob
from capture.estimate import dry_run
from capture.events import CoinStarted
from capture.plan import Plan
from capture.session import SessionRunner
from capture.writer import DatasetWriter
from pipeline.rig_cli.simulate import make_catalog, simulation_config, stage_tray
from rig.assembly import open_rig
from rig.config import RigConfig, load_config

ROOT = Path(__file__).resolve().parents[1]


def with_overlap(config: RigConfig, overlap: bool) -> RigConfig:
    """The config with the overlapped schedule switched on or off."""
    data = config.model_dump()
    if data["arm"] is None or data["arm"]["staging"] is None:
        raise SystemExit("the rig config has no arm with staging pads")
    data["arm"]["staging"]["overlap"] = overlap
    return RigConfig.model_validate(data)


def ledger_s(config: RigConfig, plan: Plan, jobs: list[CoinJob]) -> tuple[float, str]:
    """The twin ledger's physical seconds for a session of `jobs`, and how the session ended."""
    homed: list[float] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        open_rig(config, time_scale=0.0, catalog=make_catalog(config)) as rig,
    ):
        assert rig.twin is not None  # opened on the simulation backend
        clock = rig.twin.clock

        def mark(event: Any) -> None:
            if isinstance(event, CoinStarted) and not homed:
                homed.append(clock.physical_duration_s())

        stage_tray(rig, jobs, plan.sides[0], seed=0)
        writer = DatasetWriter(Path(tmp)).open()
        try:
            status = SessionRunner(rig, plan, writer, jobs, config=config, listeners=[mark]).run()
        finally:
            writer.close()
        ending = status.state.value
        if status.reason is not None and status.state.value != "done":
            ending += f" ({status.reason.value}: {status.message})"
        return clock.physical_duration_s() - homed[0], ending


def main() -> None:
    """Run both schedules and print coins per hour with their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, default=ROOT / "capture" / "plans" / "standard.yaml")
    parser.add_argument("--config", type=Path, default=ROOT / "rig" / "config" / "presets" / "sim.yaml")
    parser.add_argument("--coins", type=int, default=24, help="one tray load (at most its slots)")
    args = parser.parse_args()
    plan = Plan.load(args.plan)
    # tiny frames: only the ledger matters here, not the pixels
    base = simulation_config(
        load_config(args.config), coins=args.coins, types=3, seed=0, image_size=32
    )
    jobs = [CoinJob(f"SIM-{i:04d}", i) for i in range(args.coins)]
    slots = [job.slot for job in jobs]
    print(f"plan {plan.name}, {args.coins} coins in slots 0..{args.coins - 1}, rig {base.name}")
    print(
        f"{'schedule':<11} {'ledger':>9} {'s/coin':>7} {'coins/h':>8}   "
        f"{'dry run':>9} {'s/coin':>7} {'coins/h':>8}   {'dry/ledger':>10}"
    )
    rates: dict[str, tuple[float, float]] = {}
    for name, overlap in (("serial", False), ("overlapped", True)):
        config = with_overlap(base, overlap)
        seconds, ending = ledger_s(config, plan, jobs)
        estimate = dry_run(plan, config, coins=args.coins, slots=slots).duration_s
        if ending != "done":
            print(f"{name:<11} session {ending}")
            continue
        rates[name] = (3600 * args.coins / seconds, 3600 * args.coins / estimate)
        print(
            f"{name:<11} {seconds:8.1f}s {seconds / args.coins:6.1f}s {rates[name][0]:8.1f}   "
            f"{estimate:8.1f}s {estimate / args.coins:6.1f}s {rates[name][1]:8.1f}   "
            f"{estimate / seconds:10.4f}"
        )
    if len(rates) == 2:
        ledger_ratio = rates["overlapped"][0] / rates["serial"][0]
        dry_ratio = rates["overlapped"][1] / rates["serial"][1]
        print(f"overlapped / serial: {ledger_ratio:.2f}x (ledger), {dry_ratio:.2f}x (dry run)")


if __name__ == "__main__":
    main()
