"""benchmarks/coins_per_hour.py on a small tray: the dry run against the ledger, the breakdown.

The benchmark's figures (README, Speed) come from these functions on a tray of 24 with the
standard plan; here three coins with the quick plan keep it to seconds.
"""

from __future__ import annotations

import pytest
from simulate_support import QUICK, SIM, load_benchmark

from capture.engine import CoinJob
from capture.estimate import dry_run
from capture.plan import Plan
from pipeline.rig_cli.simulate import simulation_config
from rig.config import load_config

SLOTS = [0, 9, 23]


@pytest.fixture(scope="module")
def measured() -> dict[str, dict[str, float]]:
    bench = load_benchmark("coins_per_hour")
    plan = Plan.load(QUICK)
    base = simulation_config(load_config(SIM), coins=3, types=3, seed=0, image_size=32)
    jobs = [CoinJob(f"SIM-{i:04d}", slot) for i, slot in enumerate(SLOTS)]
    parts: dict[str, dict[str, float]] = {}
    for name, overlap in (("serial", False), ("overlapped", True)):
        config = bench.with_overlap(base, overlap)
        ledger = bench.run_session(config, plan, jobs)
        assert ledger.ending == "done"
        estimate = dry_run(plan, config, coins=len(jobs), slots=SLOTS)
        assert estimate.schedule == name
        parts[name] = bench.breakdown(ledger, len(jobs))
        parts[name]["dry run"] = estimate.duration_per_coin_s
    floor, pick_place, moves = bench.handling_floor_s(base)
    parts["floor"] = {"total": floor, "pick/places": pick_place, "moves": moves}
    return parts


def test_the_dry_run_is_within_2_percent_of_the_ledger(
    measured: dict[str, dict[str, float]],
) -> None:
    for name in ("serial", "overlapped"):
        assert measured[name]["dry run"] == pytest.approx(measured[name]["cycle"], rel=0.02)
    assert measured["overlapped"]["cycle"] < measured["serial"]["cycle"]


def test_the_breakdown_accounts_for_every_second(measured: dict[str, dict[str, float]]) -> None:
    for name in ("serial", "overlapped"):
        parts = measured[name]
        assert parts["shots"] + parts["shots wait for the arm"] == pytest.approx(parts["cycle"])
        shots = ("turntable moves", "light switches", "exposures")
        assert sum(parts.get(key, 0.0) for key in shots) == pytest.approx(parts["shots"])
        arm = [value for key, value in parts.items() if key.startswith("arm ") and "," in key]
        assert sum(arm) == pytest.approx(parts["arm busy"])
    serial, overlapped = measured["serial"], measured["overlapped"]
    # serially the shots wait for every second of arm work; overlapped, some runs beside them
    assert serial["shots wait for the arm"] == pytest.approx(serial["arm busy"])
    assert not any(v for k, v in serial.items() if k.endswith(", beside"))
    beside = sum(v for k, v in overlapped.items() if k.endswith(", beside"))
    assert beside > 0
    assert overlapped["shots wait for the arm"] == pytest.approx(overlapped["arm busy"] - beside)


def test_the_handling_floor_is_below_what_the_shots_wait(
    measured: dict[str, dict[str, float]],
) -> None:
    floor = measured["floor"]
    # 8 pick/places of 25 mm down, a 0.3 s dwell and 25 mm up at 100 mm/s and 500 mm/s²
    assert floor["pick/places"] == pytest.approx(8 * (2 * 0.45 + 0.3))
    assert floor["total"] == pytest.approx(floor["pick/places"] + floor["moves"])
    assert floor["total"] <= measured["overlapped"]["shots wait for the arm"]
