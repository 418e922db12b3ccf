"""What the session records is what the turntable reports: whole steps, the tilt, no zero drift.

The shipped sim rig's GRBL settings (rig/config/presets/sim.yaml) run on the GRBL 1.1h emulator
with the real driver, through the capture engine's own steps (session set-up, shot set-up), as
`rig simulate` does tray load after tray load on one open rig.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakes import PATTERNS, make_rig

from capture.engine import CaptureEngine
from capture.plan import Plan, ShotEvent
from rig.config import GrblTurntableConfig, load_config
from rig.sim.clock import SimClock
from rig.sim.grbl_emulator import GrblEmulator
from rig.sim.world import World
from rig.turntable.grbl import GrblTurntable

ROOT = Path(__file__).resolve().parents[1]
SIM = load_config(ROOT / "rig" / "config" / "presets" / "sim.yaml")
QUICK = Plan.load(ROOT / "capture" / "plans" / "quick.yaml")
#: angles a plan may ask for: every 45°, 30°, 22.5° and 7.5° step (8, 12, 16 and 48 a turn)
PLAN_ANGLES = sorted({*range(0, 360, 45), *range(0, 360, 30), 22.5, 67.5, 157.5, 352.5, 7.5})


def _table() -> GrblTurntableConfig:
    table = SIM.turntable
    assert isinstance(table, GrblTurntableConfig) and table.emulate is not None
    return table


@dataclass
class Bench:
    engine: CaptureEngine
    driver: GrblTurntable
    world: World


@pytest.fixture
def bench() -> Iterator[Bench]:
    world = World()
    emulator = GrblEmulator.for_config(_table(), world=world, clock=SimClock(0.0))
    emulator.start()
    driver = GrblTurntable(_table(), port=emulator.port)
    fake = make_rig()
    fake.rig.turntable = driver
    fake.rig.tilt = driver
    driver.connect()
    try:
        yield Bench(CaptureEngine(fake.rig, QUICK, sleep=lambda s: None), driver, world)
    finally:
        driver.close()
        emulator.stop()


def _event(angle: float, tilt: float | None = None) -> ShotEvent:
    return ShotEvent(0, "obverse", angle, tilt, "raking_n", None, None)


def test_the_shipped_turntable_has_a_whole_number_of_steps_per_degree() -> None:
    # 3200 steps a turn ($100=1, 8.888... units a degree) put 30° between two steps
    table = _table()
    assert table.emulate is not None
    steps_per_unit = table.emulate.settings[100]
    steps_per_deg = steps_per_unit * table.units_per_deg
    assert steps_per_deg == round(steps_per_deg) and steps_per_deg > 0
    assert all((angle * steps_per_deg).is_integer() for angle in PLAN_ANGLES)


def test_every_plan_angle_is_reached_and_recorded_exactly(bench: Bench) -> None:
    bench.engine.setup_session()
    for angle in PLAN_ANGLES:
        settings = bench.engine.setup_shot(_event(float(angle)), PATTERNS)
        # the angle recorded is the angle reached: a whole step, the one the plan asked for
        assert settings.turntable_deg == angle
        assert bench.world.snapshot().turntable_deg == angle


def test_no_zero_drift_over_many_tray_loads(bench: Bench) -> None:
    # each tray load is a session: back to the nearest whole turn, zero there, shoot round
    for _load in range(30):
        bench.engine.setup_session()
        # the new zero is a whole number of turns of the physical table: no drift
        assert bench.world.snapshot().turntable_deg % 360.0 == 0.0
        assert bench.driver.position_deg() == 0.0
        for angle in (30.0, 157.5, 352.5):
            assert bench.engine.setup_shot(_event(angle), PATTERNS).turntable_deg == angle


def test_the_recorded_tilt_is_the_one_the_stage_reports(bench: Bench) -> None:
    # 12.345° lies between two of the tilt stage's steps (100 a degree): it stops on one
    settings = bench.engine.setup_shot(_event(0.0, 12.345), PATTERNS)
    reported = bench.driver.tilt_deg()
    assert reported != 12.345 and abs(reported - 12.345) <= 0.5 / 100 + 1e-9
    assert settings.tilt_deg == reported
    # the next shot at the same tilt records the same report without moving again
    assert bench.engine.setup_shot(_event(45.0, 12.345), PATTERNS).tilt_deg == reported
    # a shot without a tilt records none
    assert bench.engine.setup_shot(_event(90.0), PATTERNS).tilt_deg is None


def test_a_table_with_a_fractional_step_count_drifts_and_the_shipped_one_does_not() -> None:
    # $100=8.889 steps a degree: a whole turn is 3200.04 steps, GRBL moves 3200, so the zero
    # each tray load sets lies 0.0045° short of the last one (what the shipped table avoids)
    drift: dict[float, float] = {}
    for steps_per_deg in (8.889, _table().units_per_deg * _table_steps()):
        emulate = _table().emulate
        assert emulate is not None
        settings = {**emulate.settings, 100: steps_per_deg}
        table = _table().model_copy(
            update={"emulate": emulate.model_copy(update={"settings": settings})}
        )
        world = World()
        emulator = GrblEmulator.for_config(table, world=world, clock=SimClock(0.0))
        emulator.start()
        driver = GrblTurntable(table, port=emulator.port)
        fake = make_rig()
        fake.rig.turntable = driver
        engine = CaptureEngine(fake.rig, QUICK, sleep=lambda s: None)
        try:
            driver.connect()
            for _load in range(4):
                engine.setup_session()
                engine.setup_shot(_event(315.0), PATTERNS)
            engine.setup_session()
            physical = world.snapshot().turntable_deg  # absolute: 4 turns and the drift
            drift[steps_per_deg] = physical - 360.0 * round(physical / 360.0)
        finally:
            driver.close()
            emulator.stop()
    assert drift[8.889] == pytest.approx(-4 * (360 - round(360 * 8.889) / 8.889), abs=1e-9)
    assert drift[_table().units_per_deg * _table_steps()] == 0.0


def _table_steps() -> float:
    emulate = _table().emulate
    assert emulate is not None
    return emulate.settings[100]
