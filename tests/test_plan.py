"""Capture plans: expansion, ordering properties, limits checks and duration estimates."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capture.estimate import dry_run
from capture.kinematics import Kinematics
from capture.plan import (
    Plan,
    ShotEvent,
    check_plan,
    estimate_duration_s,
    expand,
    naive_order,
)
from rig.arm import choreography
from rig.config import Pose, RigConfig, load_config
from rig.errors import ConfigError
from rig.motion import trapezoid_duration_s

ROOT = Path(__file__).resolve().parents[1]
LIGHTS = ["raking_n", "raking_e", "raking_s", "raking_w", "top", "diffuse"]


@pytest.fixture(scope="module")
def sim_config() -> RigConfig:
    return load_config(ROOT / "rig" / "config" / "presets" / "sim.yaml")


plans = st.builds(
    lambda sides, count, lights, tilts, exposures, reference: Plan(
        name="p",
        sides=sides,
        angle_count=count,
        lights=tuple(lights),
        tilts_deg=tuple(tilts),
        exposures_us=tuple(exposures),
        reference={"light": reference[0], "turntable_deg": reference[1]} if reference else None,
    ),
    sides=st.sampled_from([("obverse", "reverse"), ("reverse", "obverse"), ("obverse",)]),
    count=st.integers(1, 12),
    lights=st.lists(st.sampled_from(LIGHTS), min_size=1, max_size=6, unique=True),
    tilts=st.lists(st.sampled_from([0.0, 10.0, 20.0, 30.0]), max_size=3, unique=True),
    exposures=st.lists(st.sampled_from([5000.0, 20000.0, 80000.0]), max_size=3, unique=True),
    reference=st.none() | st.tuples(st.sampled_from(LIGHTS), st.sampled_from([0.0, 45.0, 10.0])),
)


@settings(max_examples=60, deadline=None)
@given(plans)
def test_expand_covers_the_cartesian_product_exactly_once(plan: Plan) -> None:
    events = expand(plan)
    tilts = list(plan.tilts_deg) or [None]
    exposures = list(plan.exposures_us) or [None]
    expected = {
        (side, angle, tilt, light, exposure)
        for side, angle, tilt, light, exposure in itertools.product(
            plan.sides, plan.angles(), tilts, plan.lights, exposures
        )
    }
    regular = [e for e in events if not e.reference]
    got = [(e.side, e.turntable_deg, e.tilt_deg, e.light, e.exposure_us) for e in regular]
    assert len(got) == len(set(got)) == len(expected)
    assert set(got) == expected
    references = [e for e in events if e.reference]
    assert len(references) == (len(plan.sides) if plan.reference else 0)
    assert [e.index for e in events] == list(range(len(events)))


@settings(max_examples=60, deadline=None)
@given(plans)
def test_ordering_flips_once_switches_lights_inside_and_serpentines(plan: Plan) -> None:
    events = expand(plan)
    sides = [side for side, _ in itertools.groupby(e.side for e in events)]
    assert sides == list(plan.sides)  # one flip per coin, first side first
    angles = plan.angles()
    for number, side in enumerate(plan.sides):
        visited = [
            angle
            for angle, _ in itertools.groupby(
                e.turntable_deg for e in events if e.side == side and not e.reference
            )
        ]
        # each angle visited once per side: lights never force a rotation
        assert len(visited) == len(angles)
        assert visited == (list(angles) if number % 2 == 0 else list(reversed(angles)))
    # the optimized order is never slower than the naive one
    kinematics = Kinematics()
    assert (
        estimate_duration_s(events, kinematics)
        <= estimate_duration_s(naive_order(events), kinematics) + 1e-9
    )


def test_optimized_order_beats_naive_on_standard(sim_config: RigConfig) -> None:
    plan = Plan.load(ROOT / "capture" / "plans" / "standard.yaml")
    events = expand(plan)
    kinematics = Kinematics.from_config(sim_config)
    optimized = estimate_duration_s(events, kinematics)
    naive = estimate_duration_s(naive_order(events), kinematics)
    assert sorted(naive_order(events), key=lambda e: e.index) == events
    assert naive > 1.5 * optimized


def test_duration_estimate_by_hand() -> None:
    k = Kinematics(
        turntable_speed_deg_per_s=90,
        turntable_accel_deg_per_s2=180,
        light_switch_s=0.02,
        camera_config_s=0.0,
        readout_s=0.05,
        default_exposure_us=10_000,
        flip_s=7.0,
        load_s=3.0,
        unload_s=4.0,
    )
    events = [
        ShotEvent(0, "obverse", 0.0, None, "a", None, None),
        ShotEvent(1, "obverse", 0.0, None, "b", None, None),
        ShotEvent(2, "obverse", 90.0, None, "b", None, None),
        ShotEvent(3, "reverse", 90.0, None, "b", 30_000.0, None),
    ]
    shot = 0.01 + 0.05
    expected = (
        3.0
        + 4.0
        + 0.02
        + shot  # light a
        + 0.02
        + shot  # light b
        + trapezoid_duration_s(90, 90, 180)
        + shot  # rotate
        + 7.0
        + (0.03 + 0.05)  # flip, longer exposure
    )
    assert estimate_duration_s(events, k) == pytest.approx(expected)
    assert estimate_duration_s([], k) == 0.0


def test_dry_run_of_quick_plan(sim_config: RigConfig) -> None:
    plan = Plan.load(ROOT / "capture" / "plans" / "quick.yaml")
    serial_config = _without_overlap(sim_config)
    report = dry_run(plan, serial_config, coins=3)
    assert len(report.events) == 24
    assert report.problems == [] and report.schedule == "serial"
    k = Kinematics.from_config(serial_config)
    # at least three flips-or-handlings plus 24 exposures; less than a rotation per shot
    assert k.load_s + k.flip_s + k.unload_s < report.duration_per_coin_s
    assert report.duration_per_coin_s < k.load_s + k.flip_s + k.unload_s + 24 * 2.5
    assert report.duration_s == pytest.approx(3 * report.duration_per_coin_s)
    # the sim rig has staging pads: its dry run times the overlapped schedule, which is shorter
    overlapped = dry_run(plan, sim_config, coins=3)
    assert overlapped.schedule == "overlapped"
    assert overlapped.duration_s < report.duration_s


def _without_overlap(config: RigConfig) -> RigConfig:
    data = config.model_dump()
    data["arm"]["staging"]["overlap"] = False
    return RigConfig.model_validate(data)


def test_check_plan_reports_every_limit(sim_config: RigConfig) -> None:
    plan = Plan(
        name="bad",
        angle_count=4,
        lights=("raking_n", "nonexistent", "mine"),
        patterns={"mine": {"north": 0.5, "laser": 1.0}},
        tilts_deg=(0.0, 60.0),
        exposures_us=(5.0, 1000.0),
    )
    problems = " | ".join(check_plan(plan, sim_config))
    assert "tilt 60° outside" in problems
    assert "'nonexistent' is not defined" in problems
    assert "unknown channel(s) ['laser']" in problems
    assert "exposure 5 µs outside" in problems
    assert "1000" not in problems


def test_check_plan_no_tilt_axis(sim_config: RigConfig) -> None:
    data = sim_config.model_dump()
    data["turntable"]["tilt"] = None
    config = RigConfig.model_validate(data)
    plan = Plan(name="t", angle_count=2, lights=("top",), tilts_deg=(10.0,))
    assert any("no tilt axis" in p for p in check_plan(plan, config))


@pytest.mark.parametrize(
    "fields",
    [
        {"angle_count": 4, "angles_deg": (0.0,)},
        {},
        {"angles_deg": (0.0, 360.0)},
        {"angles_deg": (0.0, 0.0)},
        {"angle_count": 4, "sides": ("obverse", "obverse")},
        {"angle_count": 4, "exposures_us": (-1.0,)},
        {"angle_count": 4, "patterns": {"x": {"north": 2.0}}},
    ],
)
def test_invalid_plans_rejected(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Plan.model_validate({"name": "x", "lights": ["top"], **fields})


def test_plan_load_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such plan"):
        Plan.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nlights: [top]\nangle_count: 0\n")
    with pytest.raises(ConfigError, match="angle_count"):
        Plan.load(bad)


def test_plan_json_round_trip() -> None:
    plan = Plan.load(ROOT / "capture" / "plans" / "standard.yaml")
    again = Plan.model_validate_json(plan.model_dump_json())
    assert again == plan
    assert expand(again) == expand(plan)
    assert len(expand(plan)) == 2 * (8 * 6 + 1)


def test_arm_times_walk_the_path_the_driver_takes(sim_config: RigConfig) -> None:
    # Every straight move the driver makes, the rises included, at the trapezoid profile, plus
    # the firmware dwell after each suction switch: what the twin's ledger books. (The estimate
    # used to time the straight line between the choreography's poses and 0.5 s per switch:
    # 13.48, 17.19 and 13.48 s for this rig, 4 % off the ledger.)
    arm, tray = sim_config.arm, sim_config.tray
    assert arm is not None and tray is not None
    slot = tray.slot_pose(tray.slots // 2)
    park = choreography.park(arm)
    load = (*choreography.pick_from_slot(arm, slot), *choreography.place_on_turntable(arm), *park)
    points = choreography.path(load, arm.safe_pose)
    assert len(points) - 1 > len(choreography.moves(load))  # the rises are among them
    moves_s = sum(
        trapezoid_duration_s(math.dist(_xyz(a), _xyz(b)), arm.speed_mm_per_s, arm.accel_mm_per_s2)
        for a, b in itertools.pairwise(points)
    )
    expected = moves_s + 2 * choreography.SUCTION_SETTLE_MS / 1000
    k = Kinematics.from_config(sim_config)
    assert k.load_s == pytest.approx(expected, rel=1e-12)
    # the sim bench of issue 16 (tray, pads and chute near the turntable, 25 mm clearance)
    assert (k.load_s, k.flip_s, k.unload_s) == pytest.approx((10.049, 11.744, 9.835), abs=1e-3)


def _xyz(pose: Pose) -> tuple[float, float, float]:
    return (pose.x_mm, pose.y_mm, pose.z_mm)
