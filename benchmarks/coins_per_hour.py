"""Benchmark coin handling: coins per hour for a tray, serial schedule vs overlapped (issue 16).

A whole session runs on the sim rig at time scale 0 (real drivers, emulators, twin) for one
tray load (default 24 coins, slots 0..23, capture/plans/standard.yaml), twice: with the
serial schedule (`arm.staging.overlap: false`: load, shoot, flip, shoot, unload, the arm
parking after each) and with the overlapped one (the arm returns the previous coin and fetches
the next while the camera shoots). Both run on the same layout (rig/config/presets/sim.yaml).
Each is timed twice: by the twin's ledger (its makespan, from the first coin on: homing is not
counted) and by the dry run (`capture.estimate`), which must agree within 2 %.

The ledger also says where the time goes: the shots (turntable moves, light switches,
exposures), the time they wait for the arm, and the arm's own time split into travel, rises
and descents, and suction dwells, beside the shots or with the camera idle. The last lines say
what a 1.6x ratio would need of the arm's work with the camera idle.

    .venv/bin/python benchmarks/coins_per_hour.py
    .venv/bin/python benchmarks/coins_per_hour.py --coins 8 --plan quick
"""

from __future__ import annotations

import argparse
import bisect
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capture.engine import CoinJob
from capture.estimate import dry_run
from capture.events import CoinStarted
from capture.plan import Plan
from capture.session import SessionRunner
from capture.writer import DatasetWriter
from pipeline.rig_cli.simulate import make_catalog, simulation_config, stage_tray
from rig.arm.choreography import SUCTION_SETTLE_MS
from rig.assembly import open_rig
from rig.config import RigConfig, load_config
from rig.config.devices import MIN_PAD_GAP_MM
from rig.motion import trapezoid_duration_s
from rig.sim.clock import MAIN, LedgerEntry

ROOT = Path(__file__).resolve().parents[1]
#: the goal of issue 16: this many times the serial schedule's coins per hour
GOAL = 1.6


def with_overlap(config: RigConfig, overlap: bool) -> RigConfig:
    """The config with the overlapped schedule switched on or off."""
    data = config.model_dump()
    if data["arm"] is None or data["arm"]["staging"] is None:
        raise SystemExit("the rig config has no arm with staging pads")
    data["arm"]["staging"]["overlap"] = overlap
    return RigConfig.model_validate(data)


@dataclass
class Ledger:
    """One session's ledger from the first coin on: its physical seconds and its entries."""

    seconds: float
    ending: str
    entries: list[LedgerEntry] = field(default_factory=list)


def run_session(config: RigConfig, plan: Plan, jobs: list[CoinJob]) -> Ledger:
    """Run one tray load on the twin; the ledger from the first coin on, and how it ended."""
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
        if status.reason is not None and ending != "done":
            ending += f" ({status.reason.value}: {status.message})"
        start = homed[0] if homed else clock.physical_duration_s()
        # the homing is over before the first coin: everything from it on is the tray's
        entries = [e for e in clock.entries() if e.start_s >= start - 1e-9]
        return Ledger(clock.physical_duration_s() - start, ending, entries)


def _category(entry: LedgerEntry) -> str:
    if entry.device.startswith("arm"):
        if entry.action.startswith("dwell"):
            return "arm suction dwells"
        return "arm rises and descents" if entry.action.endswith("vertical") else "arm travel"
    if entry.device == "camera":
        return "exposures"
    if entry.device == "lightbox":
        return "light switches"
    return "turntable moves"


def _busy_intervals(entries: Sequence[LedgerEntry]) -> tuple[list[float], list[float]]:
    """The shots' busy time as sorted, merged intervals (starts, ends)."""
    starts: list[float] = []
    ends: list[float] = []
    for entry in sorted(entries, key=lambda e: e.start_s):
        if entry.duration_s <= 0:
            continue
        if ends and entry.start_s <= ends[-1]:
            ends[-1] = max(ends[-1], entry.end_s)
        else:
            starts.append(entry.start_s)
            ends.append(entry.end_s)
    return starts, ends


def _overlap(start: float, end: float, busy: tuple[list[float], list[float]]) -> float:
    """How much of [start, end] the busy intervals cover."""
    starts, ends = busy
    total = 0.0
    i = max(0, bisect.bisect_right(ends, start))
    while i < len(starts) and starts[i] < end:
        total += max(0.0, min(end, ends[i]) - max(start, starts[i]))
        i += 1
    return total


def breakdown(ledger: Ledger, coins: int) -> dict[str, float]:
    """Seconds per coin by category; the arm's beside the shots and with the camera idle."""
    shots = [e for e in ledger.entries if e.actor == MAIN and not e.device.startswith("arm")]
    arm = [e for e in ledger.entries if e.device.startswith("arm")]
    busy = _busy_intervals(shots)
    parts: dict[str, float] = {"cycle": ledger.seconds}
    for entry in shots:
        key = _category(entry)
        parts[key] = parts.get(key, 0.0) + entry.duration_s
    parts["shots"] = sum(e.duration_s for e in shots)
    parts["shots wait for the arm"] = ledger.seconds - parts["shots"]
    for entry in arm:
        beside = _overlap(entry.start_s, entry.end_s, busy) if entry.actor != MAIN else 0.0
        for where, seconds in (("beside", beside), ("idle", entry.duration_s - beside)):
            key = f"{_category(entry)}, {where}"
            parts[key] = parts.get(key, 0.0) + seconds
    parts["arm busy"] = sum(e.duration_s for e in arm)
    return {key: value / coins for key, value in parts.items()}


ROWS = (
    ("cycle", "cycle"),
    ("shots", "shots (camera side busy)"),
    ("turntable moves", "  turntable moves"),
    ("light switches", "  light switches"),
    ("exposures", "  exposures"),
    ("shots wait for the arm", "shots wait for the arm"),
    ("arm busy", "arm busy"),
    ("arm travel, idle", "  travel, camera idle"),
    ("arm rises and descents, idle", "  rises and descents, camera idle"),
    ("arm suction dwells, idle", "  suction dwells, camera idle"),
    ("arm travel, beside", "  travel, beside the shots"),
    ("arm rises and descents, beside", "  rises and descents, beside the shots"),
    ("arm suction dwells, beside", "  suction dwells, beside the shots"),
)


def print_breakdown(parts: dict[str, dict[str, float]]) -> None:
    """The per-coin table: one column per schedule."""
    names = list(parts)
    print("\nwhere the time goes, seconds per coin (twin ledger, from the first coin on)")
    print(f"{'':<40}" + "".join(f"{name:>12}" for name in names))
    for key, label in ROWS:
        values = [parts[name].get(key, 0.0) for name in names]
        print(f"{label:<40}" + "".join(f"{value:12.2f}" for value in values))


def handling_floor_s(config: RigConfig) -> tuple[float, float, float]:
    """Arm seconds per coin with the camera idle that no layout removes: (total, pick/places, moves).

    Twice a coin (the swap, the flip) the turntable is emptied and refilled: 8 pick/places,
    each a descent and a rise of `clearance_mm` around the suction dwell; and 8 moves between
    the turntable and a place at least `keep_out_mm` from it (a pad; the chute, out of the
    camera's view like the pads), plus the move from one pad to the other (they lie at least
    `MIN_PAD_GAP_MM` apart).
    """
    arm = config.arm
    assert arm is not None and arm.staging is not None  # with_overlap checked both

    def move_s(distance_mm: float) -> float:
        return trapezoid_duration_s(distance_mm, arm.speed_mm_per_s, arm.accel_mm_per_s2)

    pick_place = 2 * move_s(arm.clearance_mm) + SUCTION_SETTLE_MS / 1000
    moves = 8 * move_s(arm.staging.keep_out_mm) + move_s(MIN_PAD_GAP_MM)
    return 8 * pick_place + moves, 8 * pick_place, moves


def print_goal(parts: dict[str, dict[str, float]], config: RigConfig) -> None:
    """What the goal would need of the arm's work with the camera idle, and the floor of it."""
    serial, overlapped = parts["serial"], parts["overlapped"]
    shots = overlapped["shots"]
    target = serial["cycle"] / GOAL
    floor, pick_place, moves = handling_floor_s(config)
    print(
        f"\n{GOAL:g}x needs an overlapped cycle of at most {target:.1f} s per coin: the shots' "
        f"{shots:.1f} s plus at most {target - shots:.1f} s of arm work with the camera idle; "
        f"the shots wait {overlapped['shots wait for the arm']:.1f} s per coin for the arm. "
        f"With one suction cup no layout takes that below {floor:.1f} s: 8 pick/places at the "
        f"turntable, pads and chute ({pick_place:.1f} s) and 9 moves in and out of the "
        f"keep-out radius and between the pads ({moves:.1f} s). So the cycle is at least "
        f"{shots + floor:.1f} s, at most {serial['cycle'] / (shots + floor):.2f}x the serial "
        "schedule's coins per hour on this layout."
    )


def main() -> None:
    """Run both schedules and print coins per hour, their ratio and where the time goes."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--plan", type=Path, default=ROOT / "capture" / "plans" / "standard.yaml")
    parser.add_argument(
        "--config", type=Path, default=ROOT / "rig" / "config" / "presets" / "sim.yaml"
    )
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
    parts: dict[str, dict[str, float]] = {}
    for name, overlap in (("serial", False), ("overlapped", True)):
        config = with_overlap(base, overlap)
        ledger = run_session(config, plan, jobs)
        estimate = dry_run(plan, config, coins=args.coins, slots=slots).duration_s
        if ledger.ending != "done":
            print(f"{name:<11} session {ledger.ending}")
            continue
        seconds = ledger.seconds
        rates[name] = (3600 * args.coins / seconds, 3600 * args.coins / estimate)
        parts[name] = breakdown(ledger, args.coins)
        print(
            f"{name:<11} {seconds:8.1f}s {seconds / args.coins:6.1f}s {rates[name][0]:8.1f}   "
            f"{estimate:8.1f}s {estimate / args.coins:6.1f}s {rates[name][1]:8.1f}   "
            f"{estimate / seconds:10.4f}"
        )
    if len(rates) == 2:
        ledger_ratio = rates["overlapped"][0] / rates["serial"][0]
        dry_ratio = rates["overlapped"][1] / rates["serial"][1]
        print(f"overlapped / serial: {ledger_ratio:.2f}x (ledger), {dry_ratio:.2f}x (dry run)")
        print_breakdown(parts)
        print_goal(parts, base)


if __name__ == "__main__":
    main()
