"""The overlapped schedule on the twin: real drivers, emulators, world and ledger (issue 16)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from simulate_support import QUICK, SIM, assert_complete_once, ground_truth_mismatches
from typer.testing import CliRunner

from capture.engine import CaptureEngine, CoinJob
from capture.estimate import dry_run
from capture.events import ShotDone
from capture.plan import Plan
from capture.session import SessionRunner
from capture.staging import Task, Transfer
from capture.writer import DatasetWriter
from dataset.reader import DatasetReader
from pipeline.rig_cli.app import app
from pipeline.rig_cli.simulate import make_catalog, simulation_config, stage_tray
from rig.arm.gcode_arm import GcodeArm
from rig.assembly import open_rig
from rig.config import Pose, RigConfig, load_config, xy_distance_mm
from rig.devices import Rig
from rig.errors import DeviceFault
from rig.sim.world import World

PLAN = Plan.load(QUICK)
# the serial schedule parks straight up from every slot: 4, 5 and 18 were out of the uArm's
# reach there on the old layout (E22); every slot is checked now (tests/test_arm_reach.py)
SERIAL_SLOTS = [0, 4, 5, 11, 18, 23]


def _config(coins: int, *, overlap: bool = True) -> RigConfig:
    config = simulation_config(load_config(SIM), coins=coins, types=3, seed=0, image_size=32)
    data = config.model_dump()
    data["arm"]["staging"]["overlap"] = overlap
    return RigConfig.model_validate(data)


@contextmanager
def _twin(config: RigConfig, jobs: list[CoinJob]) -> Iterator[Rig]:
    with open_rig(config, time_scale=0.0, catalog=make_catalog(config)) as rig:
        stage_tray(rig, jobs, PLAN.sides[0], seed=0)
        yield rig


def _jobs(slots: list[int]) -> list[CoinJob]:
    return [CoinJob(f"SIM-{i:04d}", slot) for i, slot in enumerate(slots)]


def _run(
    root: Path, config: RigConfig, rig: Rig, jobs: list[CoinJob], listeners: Sequence[Any] = ()
) -> tuple[SessionRunner, float]:
    """Run a session; returns the runner and the ledger's physical seconds after homing."""
    assert rig.twin is not None
    clock = rig.twin.clock
    homed: list[float] = []

    def mark(event: Any) -> None:
        if not homed and type(event).__name__ == "CoinStarted":
            homed.append(clock.physical_duration_s())

    writer = DatasetWriter(root).open()
    runner = SessionRunner(rig, PLAN, writer, jobs, config=config, listeners=[mark, *listeners])
    try:
        runner.run()
    finally:
        writer.close()
    return runner, clock.physical_duration_s() - homed[0]


def test_rig_simulate_overlapped_shoots_each_coin_right_side_up_once(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    args = ["simulate", "--coins", "5", "--types", "3", "--image-size", "32"]
    result = CliRunner().invoke(app, [*args, "--plan", str(QUICK), "--out", str(out)])
    assert result.exit_code == 0, result.output
    coins = [f"SIM-{i:04d}" for i in range(5)]
    assert_complete_once(out, QUICK, coins)
    # the twin's truth at each exposure: the right coin, the right side up, alone
    assert ground_truth_mismatches(out) == []
    (session,) = DatasetReader(out).sessions()
    assert session["on_turntable"] is None and session["staged"] == {}
    assert session["rig_config"]["arm"]["staging"]["overlap"] is True


def _count_coins(world: World) -> int:
    snap = world.snapshot()
    loose = [snap.on_turntable, snap.held, snap.flip_chute]
    return len(snap.tray) + len(snap.pads) + sum(coin is not None for coin in loose)


def test_one_coin_per_place_and_the_arm_keeps_clear_while_the_camera_shoots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _jobs([0, 5, 11, 17, 23])
    config = _config(len(jobs))
    arm = config.arm
    assert arm is not None and arm.staging is not None
    counts: list[int] = []
    beside: list[Pose] = []
    with _twin(config, jobs) as rig:
        assert rig.twin is not None
        world = rig.twin.world
        for name in ("take", "release"):
            original = getattr(world, name)

            def counted(*args: Any, _original: Callable[..., Any] = original) -> Any:
                result = _original(*args)
                counts.append(_count_coins(world))
                return result

            monkeypatch.setattr(world, name, counted)
        move_to = GcodeArm.move_to

        def recorded(self: GcodeArm, pose: Pose) -> None:
            if threading.current_thread().name.startswith("arm"):
                beside.append(pose)  # commanded beside the shots
            move_to(self, pose)

        monkeypatch.setattr(GcodeArm, "move_to", recorded)
        runner, _ = _run(tmp_path, config, rig, jobs)
        assert runner.status().state.value == "done"
        assert world.collisions() == []
        snap = world.snapshot()
        assert {slot: c.coin_id for slot, c in snap.tray.items()} == {
            j.slot: j.coin_id for j in jobs
        }
        assert snap.on_turntable is None and snap.pads == {} and snap.held is None
    assert counts and set(counts) == {len(jobs)}  # never a coin lost, never one in two places
    assert beside  # the arm did work beside the shots, and all of it outside the keep-out
    assert min(xy_distance_mm(p, arm.turntable_pose) for p in beside) >= arm.staging.keep_out_mm


def test_the_ledger_matches_the_dry_run_and_beats_the_serial_schedule(tmp_path: Path) -> None:
    jobs = _jobs(SERIAL_SLOTS)
    seconds: dict[bool, float] = {}
    for overlap in (False, True):
        config = _config(len(jobs), overlap=overlap)
        with _twin(config, jobs) as rig:
            runner, seconds[overlap] = _run(tmp_path / str(overlap), config, rig, jobs)
            assert runner.status().state.value == "done"
            assert rig.twin is not None
            entries = rig.twin.clock.entries()
        estimate = dry_run(PLAN, config, coins=len(jobs), slots=SERIAL_SLOTS)
        assert estimate.schedule == ("overlapped" if overlap else "serial")
        assert seconds[overlap] == pytest.approx(estimate.duration_s, rel=0.02)
        arm_beside = [e for e in entries if e.actor == "arm"]
        assert bool(arm_beside) == overlap
    assert seconds[True] < 0.9 * seconds[False]  # the quick plan: 24 shots, little to hide


def _fail_beside_the_shots(monkeypatch: pytest.MonkeyPatch, failing: Task) -> None:
    perform = CaptureEngine.perform

    def failing_perform(self: CaptureEngine, task: Task) -> None:
        if task == failing:
            raise DeviceFault("arm: E22 (injected)")
        perform(self, task)

    monkeypatch.setattr(CaptureEngine, "perform", failing_perform)


def test_an_arm_failure_beside_the_shots_pauses_and_a_rerun_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _jobs([0, 1, 2])
    config = _config(len(jobs))
    # taking the first coin back to its slot fails while the second coin is being shot
    _fail_beside_the_shots(monkeypatch, Transfer("SIM-0000", "outgoing", 0))
    with _twin(config, jobs) as rig:
        runner, _ = _run(tmp_path, config, rig, jobs)
        assert rig.twin is not None
        assert rig.twin.world.collisions() == []
    status = runner.status()
    assert status.state.value == "paused" and status.reason is not None
    assert status.reason.value == "device_failure"
    record = DatasetReader(tmp_path).sessions()[0]
    assert record["on_turntable"] == "SIM-0001"
    # the failure surfaces before the flip: the third coin was never fetched
    assert record["staged"] == {"outgoing": "SIM-0000"}
    # the second coin's first side was shot beside the failing arm; the rest waits for a rerun
    monkeypatch.undo()
    with _twin(config, jobs) as rig:
        runner, _ = _run(tmp_path, config, rig, jobs)
    assert runner.status().state.value == "done"
    _assert_every_shot_once(tmp_path, jobs)


def _assert_every_shot_once(root: Path, jobs: list[CoinJob]) -> None:
    names = [r["file_name"] for r in DatasetReader(root).records() if r.get("role") == "capture"]
    assert len(names) == len(set(names)) == len(jobs) * 24


def test_ctrl_c_while_the_arm_works_beside_the_shots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _jobs([0, 1, 2])
    config = _config(len(jobs))
    release = threading.Event()
    arm_calls: list[str] = []
    perform = CaptureEngine.perform

    def held_back(self: CaptureEngine, task: Task) -> None:
        if task == Transfer("SIM-0000", "outgoing", 0):
            release.wait()  # the arm is busy beside the second coin's shots when Ctrl-C comes
        perform(self, task)
        arm_calls.append(type(task).__name__)

    park = GcodeArm.park

    def recorded_park(self: GcodeArm) -> None:
        arm_calls.append("park")
        park(self)

    monkeypatch.setattr(CaptureEngine, "perform", held_back)
    monkeypatch.setattr(GcodeArm, "park", recorded_park)

    def interrupt(event: Any) -> None:
        if isinstance(event, ShotDone) and event.coin_id == "SIM-0001" and event.shot == 3:
            release.set()
            raise KeyboardInterrupt

    with _twin(config, jobs) as rig, pytest.raises(KeyboardInterrupt):
        _run(tmp_path, config, rig, jobs, [interrupt])
    record = DatasetReader(tmp_path).sessions()[0]
    assert (record["status"], record["finish_reason"]) == ("paused", "interrupted")
    # the task in progress was finished (never half a move), then the arm parked, last
    assert arm_calls[-1] == "park" and "Transfer" in arm_calls[:-1]
    assert record["staged"] == {} or set(record["staged"]) <= {"incoming", "outgoing"}
    monkeypatch.undo()
    with _twin(config, jobs) as rig:
        runner, _ = _run(tmp_path, config, rig, jobs)
    assert runner.status().state.value == "done"
    _assert_every_shot_once(tmp_path, jobs)
