"""Every pose of the arm's layout is within its reach before a byte is sent (issue 16).

On the old sim layout the serial schedule paused with E22: parking rose straight up to the safe
pose's 150 mm above tray slots 4, 5 and 18 and the flip station, out of the uArm's reach as its
firmware computes it. `capture.kinematics.reach_problems` checks a layout against that reach
(rig.arm.reach, the firmware's math) for both schedules and every parking, and the dry run and
the session refuse an unreachable layout in one line before anything moves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes import FakeArm, make_rig
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from simulate_support import QUICK, SIM
from typer.testing import CliRunner

from capture.engine import CoinJob
from capture.kinematics import reach_problems, session_poses
from capture.plan import Plan
from capture.session import SessionRunner
from capture.staging import schedule_tasks, staged_schedule, task_steps
from capture.writer import DatasetWriter
from dataset.reader import DatasetReader
from pipeline.rig_cli.app import app
from pipeline.rig_cli.simulate import make_catalog, simulation_config, stage_tray
from rig.arm import choreography, codec, reach
from rig.assembly import open_rig
from rig.config import GcodeArmConfig, Pose, RigConfig, TrayConfig, load_config
from rig.errors import ConfigError

CONFIG = load_config(SIM)
PLAN = Plan.load(QUICK)
#: the sim bench before issue 16's layout: tray 200-400 mm from the turntable, a safe pose 150 mm
#: up, the flip chute 320 mm out
OLD_ARM = {
    "safe_pose": {"x_mm": 0, "y_mm": 200, "z_mm": 150},
    "turntable_pose": {"x_mm": 200, "y_mm": 200, "z_mm": 10},
    "flip_station": {
        "drop": {"x_mm": 0, "y_mm": 320, "z_mm": 40},
        "pickup": {"x_mm": 60, "y_mm": 320, "z_mm": 0},
    },
    "clearance_mm": 40,
    "staging": {
        "incoming": {"x_mm": 135, "y_mm": 200, "z_mm": 10},
        "outgoing": {"x_mm": 95, "y_mm": 200, "z_mm": 10},
        "keep_out_mm": 60,
    },
}
OLD_TRAY = {"rows": 4, "cols": 6, "origin": {"x_mm": -250, "y_mm": 100, "z_mm": 0}, "pitch_mm": 40}


def _old_layout() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SIM.read_text())
    data["arm"] |= OLD_ARM
    data["tray"] = OLD_TRAY
    return data


def _key(pose: Pose) -> tuple[float, float, float]:
    return (pose.x_mm, pose.y_mm, pose.z_mm)


def _walked(
    arm: GcodeArmConfig, tray: TrayConfig, slots: list[int], flips: list[bool]
) -> list[Pose]:
    """Every pose both schedules send for these coins, and a park from every step's end."""
    poses: list[Pose] = []
    park = choreography.park(arm)
    for slot in slots:
        pose = tray.slot_pose(slot)
        load = (*choreography.pick_from_slot(arm, pose), *choreography.place_on_turntable(arm))
        for action in (
            load,
            choreography.flip_on_turntable(arm),
            choreography.return_to_slot(arm, pose),
        ):
            poses += choreography.path((*action, *park), arm.safe_pose)
    jobs = [CoinJob(f"C{i}", slot) for i, slot in enumerate(slots)]
    here = arm.safe_pose
    for task, _ in schedule_tasks(staged_schedule(jobs, flips)):
        points = choreography.path(task_steps(arm, tray, task), here)
        poses += points
        here = points[-1]
    # a failure may stop the arm after any step: the session then parks from there
    ends = {_key(pose): pose for pose in poses}.values()
    return poses + [p for end in ends for p in choreography.path(park, end)]


def test_every_pose_of_the_sim_layout_is_within_the_uarm_s_reach() -> None:
    arm, tray = CONFIG.arm, CONFIG.tray
    assert arm is not None and tray is not None
    assert reach_problems(CONFIG) == []
    dialect = codec.dialect(arm.dialect)
    slots = list(range(tray.slots))
    for pose in _walked(arm, tray, slots, [True] * len(slots)):
        codec.check_pose(arm.workspace, pose)  # the box the driver checks before a byte is sent
        assert reach.refusal(dialect, pose) is None, pose


def test_the_old_layout_is_found_unreachable_where_the_serial_schedule_paused() -> None:
    problems = reach_problems(RigConfig.model_validate(_old_layout()))
    named = sorted(p.split(" cannot reach ")[1].split(",")[0] for p in problems)
    assert named == [
        "the point above the flip station's drop at the safe pose's height",
        "the point above the flip station's pickup at the safe pose's height",
        "the point above tray slot 18 at the safe pose's height",
        "the point above tray slot 4 at the safe pose's height",
        "the point above tray slot 5 at the safe pose's height",
    ]
    assert all("E22" in p and "\n" not in p for p in problems)


def test_a_dexarm_layout_is_checked_with_the_dexarm_s_own_reach() -> None:
    data = _old_layout()
    data["arm"] |= {"dialect": "dexarm", "workspace": {"z_mm": [-60, 200]}}
    data["arm"]["safe_pose"]["z_mm"] = 160
    problems = reach_problems(RigConfig.model_validate(data))
    assert problems and all("Rotrics DexArm" in p and "beyond limit" in p for p in problems)


@pytest.mark.parametrize("command", ["capture", "simulate"])
def test_an_unreachable_layout_is_refused_in_one_line_before_the_rig_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    config = tmp_path / "old.yaml"
    config.write_text(yaml.safe_dump(_old_layout()))

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the rig was opened")

    monkeypatch.setattr("rig.assembly.open_rig", never)
    args = ["--config", str(config), "--plan", str(QUICK), "--out", str(tmp_path / "out")]
    if command == "capture":
        args = ["capture", "--coin", "SIM-0001", "--slot", "4", *args]
    else:
        args = ["simulate", "--coins", "2", "--image-size", "32", *args]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach" in lines[0] and "E22" in lines[0]


class _StagingArm(FakeArm):
    def pick(self, spot: Any) -> None:
        self._call("pick", spot)

    def place(self, spot: Any) -> None:
        self._call("place", spot)

    def wait_clear(self) -> None:
        self._call("wait_clear")


@pytest.mark.parametrize("overlap", [False, True])
def test_a_session_refuses_an_unreachable_layout_before_anything_moves(
    tmp_path: Path, overlap: bool
) -> None:
    data = _old_layout()
    data["arm"]["staging"]["overlap"] = overlap
    fake = make_rig()
    fake.rig.arm = _StagingArm(fake.log)
    writer = DatasetWriter(tmp_path).open()
    runner = SessionRunner(
        fake.rig, PLAN, writer, [CoinJob("C0", 4)], config=RigConfig.model_validate(data)
    )
    with pytest.raises(ConfigError, match="arm layout: the uFactory uArm Swift Pro cannot reach"):
        runner.run()
    writer.close()
    assert DatasetReader(tmp_path).sessions()[0]["status"] == "failed"
    # nothing moved but the parking on the way out
    assert fake.log.names() == ["turntable.stop", "lightbox.all_off", "arm.park"]


def test_the_serial_schedule_reaches_the_slots_that_paused_with_e22(tmp_path: Path) -> None:
    data = CONFIG.model_dump()
    data["arm"]["staging"]["overlap"] = False
    config = simulation_config(
        RigConfig.model_validate(data), coins=3, types=3, seed=0, image_size=32
    )
    jobs = [CoinJob(f"SIM-{i:04d}", slot) for i, slot in enumerate([4, 5, 18])]
    with open_rig(config, time_scale=0.0, catalog=make_catalog(config)) as rig:
        stage_tray(rig, jobs, PLAN.sides[0], seed=0)
        writer = DatasetWriter(tmp_path).open()
        try:
            status = SessionRunner(rig, PLAN, writer, jobs, config=config).run()
        finally:
            writer.close()
    assert status.state.value == "done", status.message


_MM = st.floats(-1.0, 1.0).map(lambda f: round(f * 100, 1))


@st.composite
def _layouts(draw: st.DrawFn) -> RigConfig:
    """A layout around the arm: the turntable, pads beside it, the chute, the tray, the safe pose."""
    tt = (draw(st.floats(40, 250)), draw(st.floats(150, 300)), draw(st.floats(-20, 30)))
    keep_out = draw(st.floats(30, 80))
    ring = draw(st.floats(keep_out, keep_out + 60))
    pose = lambda x, y, z: {"x_mm": round(x, 1), "y_mm": round(y, 1), "z_mm": round(z, 1)}  # noqa: E731
    arm = {
        "turntable_pose": pose(*tt),
        "safe_pose": pose(
            draw(st.floats(-150, 150)), draw(st.floats(100, 300)), draw(st.floats(30, 160))
        ),
        "clearance_mm": draw(st.floats(5, 50)),
        "flip_station": {
            "drop": pose(tt[0] + draw(_MM), tt[1] + 80 + draw(_MM) / 4, draw(st.floats(-10, 50))),
            "pickup": pose(
                tt[0] + 40 + draw(_MM), tt[1] + 80 + draw(_MM) / 4, draw(st.floats(-10, 30))
            ),
        },
        "staging": {
            "incoming": pose(tt[0] - ring, tt[1], tt[2]),
            "outgoing": pose(tt[0] - ring, tt[1] - draw(st.floats(30, 60)), tt[2]),
            "keep_out_mm": keep_out,
            "overlap": True,
        },
    }
    tray = {
        "rows": draw(st.integers(1, 4)),
        "cols": draw(st.integers(1, 6)),
        "origin": pose(
            draw(st.floats(-300, -80)), draw(st.floats(80, 250)), draw(st.floats(-20, 20))
        ),
        "pitch_mm": draw(st.floats(30, 50)),
    }
    data = CONFIG.model_dump()
    data["arm"] |= arm
    data["tray"] = tray
    try:
        return RigConfig.model_validate(data)
    except ValidationError:
        assume(False)
        raise


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(config=_layouts(), data=st.data())
def test_every_pose_a_session_sends_is_one_the_layout_check_saw(
    config: RigConfig, data: st.DataObject
) -> None:
    arm, tray = config.arm, config.tray
    assert arm is not None and tray is not None
    order = data.draw(st.permutations(range(tray.slots)))
    slots = list(order[: data.draw(st.integers(1, tray.slots))])
    flips = data.draw(st.lists(st.booleans(), min_size=len(slots), max_size=len(slots)))
    checked = {_key(pose) for pose in session_poses(arm, tray)}
    walked = _walked(arm, tray, slots, flips)
    assert {_key(pose) for pose in walked} <= checked
    # so a layout the check passes never meets the firmware's refusal mid-session
    if not reach_problems(config):
        dialect = codec.dialect(arm.dialect)
        assert all(reach.refusal(dialect, pose) is None for pose in walked)
