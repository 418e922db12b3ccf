"""`rig simulate --faults heavy`, rerun as the README says, ends in a finished, truthful dataset.

Issue 16 item 5: a run that failed while connecting left the folder as it was, so the rerun drew
the same faults and failed the same way for ever (exit 2, pymodbus' frame dumps on the terminal).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from simulate_support import (
    assert_complete_once,
    ground_truth_mismatches,
    verify_errors,
    write_config,
    write_plan,
)
from typer.testing import CliRunner

import rig.assembly
from dataset.reader import DatasetReader
from pipeline.rig_cli import simulate as simulate_cli
from pipeline.rig_cli.app import app
from rig.config import RigConfig
from rig.errors import DeviceUnreachable
from rig.sim.coins import CoinCatalog

# Two angles under two lights, one side: 4 shots a coin. The arm still loads and returns every
# coin (its `E1` faults are what pause a run); flipping under heavy faults is the 2-coin test's
# (test_simulate_e2e). Wall time is mostly the arm driver's motion timeouts on lost replies.
PLAN = "name: tiny\nsides: [obverse]\nangle_count: 2\nlights: [raking_n, diffuse]\n"
ARGS = ["--coins", "8", "--types", "3", "--seed", "13", "--image-size", "32", "--faults", "heavy"]
MAX_RUNS = 25


def run(out: Path, *args: str) -> tuple[int, str]:
    """`rig simulate` in-process: (exit code, output)."""
    result = CliRunner().invoke(app, ["simulate", "--out", str(out), *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def emulator_seeds(config: RigConfig) -> tuple[int, ...]:
    """Every emulator's fault seed in a config."""
    devices = (config.turntable, config.lightbox, config.arm)
    return tuple(d.emulate.seed for d in devices if d is not None and d.emulate is not None)


def test_a_run_that_fails_while_connecting_does_not_doom_its_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, ...]] = []

    @contextmanager
    def unreachable(config: RigConfig, **_: Any) -> Iterator[None]:
        seen.append(emulator_seeds(config))
        raise DeviceUnreachable("lightbox unreachable after 5 connect attempts", "lightbox", 5)
        yield  # pragma: no cover

    monkeypatch.setattr(rig.assembly, "open_rig", unreachable)
    plan = write_plan(tmp_path / "plan.yaml", PLAN)
    out = tmp_path / "sim"
    outputs = [run(out, *ARGS, "--plan", str(plan)) for _ in range(3)]
    for code, output in outputs:
        assert code == 3, output  # a device that may come back: rerun, not "bad input"
        assert "rerun the same command" in output
    assert len(set(seen)) == 3, seen  # nothing was recorded, yet every rerun drew new faults
    # the seed is printed, and --fault-seed replays a run's faults exactly
    printed = outputs[0][1].split("fault seed ")[1].split()[0]
    run(out, *ARGS, "--plan", str(plan), "--fault-seed", printed)
    assert seen[-1] == seen[0]


@pytest.mark.slow
@pytest.mark.timeout(900)  # ~1 min on a 2-core box: six runs of 8 coins
def test_heavy_faults_finish_an_8_coin_run_within_bounded_reruns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault seeds 1, 2, 3...: the draws of a real rerun, but the same in every test run.
    seeds = itertools.count(1)
    monkeypatch.setattr(simulate_cli, "fresh_fault_seed", lambda: next(seeds))
    # Short reply timeouts keep lost replies cheap in wall time; the faults are the preset's.
    config = write_config(
        tmp_path / "rig.yaml",
        turntable={"reply_timeout_s": 0.1},
        arm={"reply_timeout_s": 0.1},
        lightbox={"timeout_s": 0.1},
    )
    plan = write_plan(tmp_path / "plan.yaml", PLAN)
    out = tmp_path / "sim"
    codes: list[int] = []
    output = ""
    for _ in range(MAX_RUNS):
        code, output = run(out, *ARGS, "--config", str(config), "--plan", str(plan))
        codes.append(code)
        assert code in (0, 3), output  # done, or paused / unreachable: rerun
        assert ">>>>>" not in output and "No response received" not in output  # pymodbus' own
        if code == 0:
            break
    assert codes[-1] == 0, f"not finished after {MAX_RUNS} runs: exit codes {codes}"

    coins = [f"SIM-{i:04d}" for i in range(8)]
    assert_complete_once(out, plan, coins)  # every shot present once, nothing else
    assert verify_errors(out) == []
    assert ground_truth_mismatches(out) == []  # coin, side, lights, angle: the twin's truth
    catalog = CoinCatalog(seed=13, rulers=3, types=3, coins=8)
    for line in DatasetReader(out).coins():
        record = catalog.record(line["coin_id"])
        assert {k: line[k] for k in record} == record
    sessions = DatasetReader(out).sessions()
    statuses = [s["status"] for s in sessions]
    if "done" in statuses:
        assert statuses.count("done") == 1 and statuses[-1] == "done"
    else:  # the last pause came after the last shot: the rerun had nothing left but to say so
        assert "nothing to do" in output and "paused after its last shot" in output
        assert "check that every coin is back in its tray slot" in output
    assert set(statuses[:-1]) == {"paused"}
    seeds_used = {json.dumps(s["rig_config"]["lightbox"]["emulate"]) for s in sessions}
    assert len(seeds_used) == len(sessions)  # each session met faults of its own
    print(f"exit codes of the reruns: {codes}")


def test_rig_capture_with_a_fault_preset_draws_new_faults_each_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, ...]] = []

    @contextmanager
    def unreachable(config: RigConfig, **_: Any) -> Iterator[None]:
        seen.append(emulator_seeds(config))
        raise DeviceUnreachable("arm unreachable after 5 connect attempts", "arm", 5)
        yield  # pragma: no cover

    monkeypatch.setattr(rig.assembly, "open_rig", unreachable)
    plan = write_plan(tmp_path / "plan.yaml", PLAN)
    args = ["capture", "--coin", "SIM-0000", "--slot", "0", "--plan", str(plan)]
    args += ["--out", str(tmp_path / "data"), "--faults", "heavy"]
    codes = [CliRunner().invoke(app, args).exit_code for _ in range(2)]
    assert codes == [3, 3]
    assert len(set(seen)) == 2
