"""The overlapped schedule as data (capture.staging): its invariants, poses and config checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fakes import FakeArm, make_rig
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from capture.engine import CoinJob
from capture.plan import Plan, expand
from capture.session import SessionRunner
from capture.staging import (
    FlipOver,
    Layout,
    Park,
    ScheduleError,
    Transfer,
    WaitClear,
    keep_out_problems,
    overlap_wanted,
    schedule_tasks,
    staged_schedule,
    task_steps,
)
from capture.writer import DatasetWriter
from dataset.reader import DatasetReader
from rig.arm import choreography, codec, reach
from rig.config import RigConfig, load_config, xy_distance_mm
from rig.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SIM = load_config(ROOT / "rig" / "config" / "presets" / "sim.yaml")
QUICK = Plan.load(ROOT / "capture" / "plans" / "quick.yaml")


def _jobs(slots: list[int]) -> list[CoinJob]:
    return [CoinJob(f"C{i:02d}", slot) for i, slot in enumerate(slots)]


_SLOTS = st.lists(st.integers(0, 23), min_size=1, max_size=24, unique=True)


@settings(max_examples=150, deadline=None)
@given(slots=_SLOTS, data=st.data())
def test_a_schedule_keeps_one_coin_per_place_and_returns_every_coin(
    slots: list[int], data: st.DataObject
) -> None:
    jobs = _jobs(slots)
    flips = data.draw(st.lists(st.booleans(), min_size=len(jobs), max_size=len(jobs)))
    schedule = staged_schedule(jobs, flips)
    layout = Layout(jobs)
    for coin, flip in zip(schedule, flips, strict=True):
        # the coin's shots start with it, and only it, on the turntable: the layout allows one
        for task in (*coin.bring.blocking, *coin.bring.background):
            layout.apply(task)  # raises ScheduleError on two coins in one place
            if task in coin.bring.blocking:
                assert layout.on_turntable() in (coin.job.coin_id, None, _previous(jobs, coin))
        assert layout.on_turntable() == coin.job.coin_id
        assert (coin.flip is not None) == flip
        if coin.flip is not None:
            for task in (*coin.flip.blocking, *coin.flip.background):
                layout.apply(task)
            assert layout.on_turntable() == coin.job.coin_id
        for task in (*coin.leave.blocking, *coin.leave.background):
            layout.apply(task)
    # every coin back in its own slot, nothing left on the turntable or the pads
    assert layout.places == {job.slot: job.coin_id for job in jobs}
    # every coin goes on the turntable exactly once and is turned over at most once
    tasks = [task for task, _ in schedule_tasks(schedule)]
    placed = [t.coin_id for t in tasks if isinstance(t, Transfer) and t.target == "turntable"]
    assert placed == [job.coin_id for job in jobs]
    assert [t.coin_id for t in tasks if isinstance(t, FlipOver)] == [
        job.coin_id for job, flip in zip(jobs, flips, strict=True) if flip
    ]
    # background work never touches the turntable: the camera is shooting it
    for task, background in schedule_tasks(schedule):
        if background:
            assert isinstance(task, Transfer | WaitClear)
            if isinstance(task, Transfer):
                assert "turntable" not in (task.source, task.target)
    assert isinstance(tasks[-1], Park)


def _previous(jobs: list[CoinJob], coin: Any) -> str | None:
    index = [job.coin_id for job in jobs].index(coin.job.coin_id)
    return jobs[index - 1].coin_id if index else None


@settings(max_examples=60, deadline=None)
@given(slots=_SLOTS)
def test_every_pose_of_the_sim_schedule_is_within_reach_and_background_keeps_out(
    slots: list[int],
) -> None:
    arm, tray = SIM.arm, SIM.tray
    assert arm is not None and tray is not None and arm.staging is not None
    jobs = _jobs(slots)
    schedule = staged_schedule(jobs, [True] * len(jobs))
    assert keep_out_problems(SIM, schedule) == []
    here = arm.safe_pose
    dialect = codec.dialect(arm.dialect)
    for task, background in schedule_tasks(schedule):
        points = choreography.path(task_steps(arm, tray, task), here)
        for pose in points[1:]:
            codec.check_pose(arm.workspace, pose)  # as GcodeArm does before a byte is sent
            assert reach.refusal(dialect, pose) is None  # and the firmware would move there
            if background:
                assert xy_distance_mm(pose, arm.turntable_pose) >= arm.staging.keep_out_mm
        here = points[-1]


def test_the_layout_refuses_a_second_coin_on_the_turntable_and_a_coin_not_there() -> None:
    layout = Layout(_jobs([0, 1]))
    layout.apply(Transfer("C00", 0, "turntable"))
    with pytest.raises(ScheduleError, match="already holds C00"):
        layout.apply(Transfer("C01", 1, "turntable"))
    with pytest.raises(ScheduleError, match="not at 'incoming'"):
        layout.apply(Transfer("C01", "incoming", "outgoing"))
    with pytest.raises(ScheduleError, match="not on the turntable"):
        layout.apply(FlipOver("C01"))
    assert layout.places == {"turntable": "C00", 1: "C01"}  # refused tasks changed nothing


def test_a_schedule_needs_slots_and_one_flag_per_coin() -> None:
    with pytest.raises(ValueError, match="tray slot"):
        staged_schedule([CoinJob("A", None)], [True])
    with pytest.raises(ValueError, match="flip flag"):
        staged_schedule(_jobs([0]), [])


def test_overlap_is_wanted_only_with_pads_switched_on_and_slots() -> None:
    jobs = _jobs([0, 1])
    assert overlap_wanted(SIM, jobs)
    assert not overlap_wanted(SIM, [CoinJob("A", None)])
    assert not overlap_wanted(_staging(overlap=False), jobs)
    data = SIM.model_dump()
    data["arm"]["staging"] = None
    assert not overlap_wanted(RigConfig.model_validate(data), jobs)
    assert not overlap_wanted(None, jobs)


def _staging(**changes: Any) -> RigConfig:
    data = SIM.model_dump()
    data["arm"]["staging"] |= changes
    return RigConfig.model_validate(data)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"incoming": {"x_mm": 180, "y_mm": 200, "z_mm": 10}}, "inside keep_out_mm"),
        ({"outgoing": {"x_mm": 80, "y_mm": 230, "z_mm": 10}}, "apart"),
        ({"outgoing": {"x_mm": -150, "y_mm": 140, "z_mm": 0}}, "tray slot 0"),
        ({"outgoing": {"x_mm": 90, "y_mm": 186, "z_mm": 180}}, "outside the workspace"),
        ({"incoming": {"x_mm": 120, "y_mm": 290, "z_mm": 10}}, "flip_station"),
    ],
)
def test_staging_pads_are_checked_with_the_config(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _staging(**changes)


#: staging pads beyond the turntable, seen from the tray (within the arm's reach)
_BEYOND: dict[str, Any] = {
    "incoming": {"x_mm": 220, "y_mm": 220, "z_mm": 10},
    "outgoing": {"x_mm": 220, "y_mm": 260, "z_mm": 10},
}


def test_background_that_would_cross_the_camera_s_view_is_found() -> None:
    # pads beyond the turntable: the way back from the tray passes over it
    config = _staging(**_BEYOND)
    schedule = staged_schedule(_jobs([0, 1, 2]), [True] * 3)
    problems = keep_out_problems(config, schedule)
    assert problems and all("inside keep_out_mm" in p for p in problems)


# ---------------------------------------------------------------- the runner, on fake devices


class _StagingArm(FakeArm):
    """A fake arm with staging pads (rig.devices.StagingArm)."""

    def pick(self, spot: Any) -> None:
        self._call("pick", spot)

    def place(self, spot: Any) -> None:
        self._call("place", spot)

    def wait_clear(self) -> None:
        self._call("wait_clear")


def _staging_rig() -> Any:
    fake = make_rig()
    fake.rig.arm = _StagingArm(fake.log)
    return fake


def _run_fake(tmp_path: Path, fake: Any, config: RigConfig, jobs: list[CoinJob]) -> Any:
    writer = DatasetWriter(tmp_path).open()
    runner = SessionRunner(fake.rig, QUICK, writer, jobs, config=config, sleep=lambda s: None)
    try:
        return runner.run()
    finally:
        writer.close()


def test_the_runner_swaps_coins_through_the_pads_and_parks_last(tmp_path: Path) -> None:
    fake = _staging_rig()
    status = _run_fake(tmp_path, fake, SIM, _jobs([0, 1]))
    assert status.state.value == "done"
    arm_calls = [(m, a) for d, m, a in fake.log.calls if d == "arm"]
    assert arm_calls == [
        ("home", ()),
        ("pick", (0,)),  # the first coin straight from its slot
        ("place", ("turntable",)),
        ("wait_clear", ()),
        ("flip_on_turntable", ()),
        ("wait_clear", ()),
        ("pick", (1,)),  # beside the first coin's second side: fetch the next
        ("place", ("incoming",)),
        ("wait_clear", ()),
        ("pick", ("turntable",)),  # the swap
        ("place", ("outgoing",)),
        ("pick", ("incoming",)),
        ("place", ("turntable",)),
        ("wait_clear", ()),
        ("pick", ("outgoing",)),  # beside the second coin's first side: the first goes home
        ("place", (0,)),
        ("wait_clear", ()),
        ("flip_on_turntable", ()),
        ("wait_clear", ()),
        ("pick", ("turntable",)),  # the last coin straight home, then park from there
        ("place", (1,)),
        ("park", ()),
        ("park", ()),  # parking at the end of every session
    ]
    # the camera never shoots between a pick at the turntable and the arm going clear
    names = [f"{d}.{m}" for d, m, _ in fake.log.calls]
    clear = True
    for (device, method, args), name in zip(fake.log.calls, names, strict=True):
        if device == "arm" and method in ("pick", "place") and args == ("turntable",):
            clear = False
        elif device == "arm" and method in ("wait_clear", "park"):
            clear = True
        elif name == "camera.grab":
            assert clear, "a shot while the arm was at the turntable"


def test_a_schedule_into_the_camera_s_view_is_refused_before_anything_moves(
    tmp_path: Path,
) -> None:
    config = _staging(**_BEYOND)
    fake = _staging_rig()
    with pytest.raises(ConfigError, match="would enter the camera's view"):
        _run_fake(tmp_path, fake, config, _jobs([0, 1]))
    (record,) = DatasetReader(tmp_path).sessions()
    assert record["status"] == "failed"
    # nothing moved but the parking on the way out
    assert fake.log.names() == ["turntable.stop", "lightbox.all_off", "arm.park"]


def test_without_a_staging_arm_the_serial_schedule_runs(tmp_path: Path) -> None:
    fake = make_rig()  # FakeArm: no pick/place/wait_clear
    writer = DatasetWriter(tmp_path).open()
    runner = SessionRunner(fake.rig, QUICK, writer, _jobs([0]), config=SIM, sleep=lambda s: None)
    assert runner.run().state.value == "done"
    writer.close()
    assert "arm.pick_from_slot" in fake.log.names() and "arm.wait_clear" not in fake.log.names()


# ---------------------------------------------------------------- invariants of whole sessions


class _CoinTrackingArm(_StagingArm):
    """A staging arm that carries coins between places and notes whatever a real one could not do.

    It keeps its own account of where every coin lies (not the schedule's `Layout`): a pick
    where no coin lies, a place where one already lies, a second coin in the cup or a flip with
    nothing on the turntable is a violation.
    """

    def __init__(self, log: Any, jobs: list[CoinJob], first_side: str) -> None:
        super().__init__(log)
        self.places: dict[Any, str] = {job.slot: job.coin_id for job in jobs}
        self.up = {job.coin_id: first_side for job in jobs}
        self.held: str | None = None
        self.violations: list[str] = []

    def pick(self, spot: Any) -> None:
        super().pick(spot)
        if self.held is not None or spot not in self.places:
            self.violations.append(f"pick at {spot!r} holding {self.held}: {self.places}")
            return
        self.held = self.places.pop(spot)

    def place(self, spot: Any) -> None:
        super().place(spot)
        if self.held is None or spot in self.places:
            self.violations.append(f"place {self.held} at {spot!r}: {self.places}")
            return
        self.places[spot], self.held = self.held, None

    def flip_on_turntable(self) -> None:
        super().flip_on_turntable()
        coin = self.places.get("turntable")
        if coin is None:
            self.violations.append("flip with nothing on the turntable")
            return
        self.up[coin] = "reverse" if self.up[coin] == "obverse" else "obverse"


_ONE_SIDE = Plan.model_validate({**QUICK.model_dump(), "name": "one-side", "sides": ["obverse"]})


@settings(max_examples=12, deadline=None)
@given(slots=st.lists(st.integers(0, 23), min_size=1, max_size=5, unique=True), two=st.booleans())
def test_every_planned_shot_once_with_its_coin_alone_on_the_turntable_right_side_up(
    tmp_path_factory: pytest.TempPathFactory, slots: list[int], two: bool
) -> None:
    plan = QUICK if two else _ONE_SIDE
    jobs = _jobs(slots)
    fake = make_rig()
    arm = _CoinTrackingArm(fake.log, jobs, plan.sides[0])
    fake.rig.arm = arm
    seen: list[tuple[str | None, str | None]] = []
    grab = fake.camera.grab

    def watched(timeout_s: float | None = None) -> Any:
        coin = arm.places.get("turntable")
        seen.append((coin, arm.up.get(coin) if coin else None))
        return grab(timeout_s)

    fake.camera.grab = watched  # type: ignore[method-assign]
    root = tmp_path_factory.mktemp("session")
    writer = DatasetWriter(root).open()
    runner = SessionRunner(fake.rig, plan, writer, jobs, config=SIM, sleep=lambda s: None)
    try:
        assert runner.run().state.value == "done"
    finally:
        writer.close()
    assert arm.violations == []  # never two coins in one place (the turntable included)
    shots = [r for r in DatasetReader(root).records() if r.get("role") == "capture"]
    # every planned shot exactly once
    names = [r["file_name"] for r in shots]
    assert len(names) == len(set(names)) == len(jobs) * len(expand(plan))
    # each shot taken with its own coin, alone on the turntable, the recorded side up
    assert seen == [(r["coin_id"], r["side"]) for r in shots]
    # every coin back in its own slot, nothing left on the turntable or a pad
    assert arm.places == {job.slot: job.coin_id for job in jobs} and arm.held is None
