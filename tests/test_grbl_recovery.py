"""GRBL alarm recovery when homing is configured: reset, then `$H` (not `$X`), state verified.

A controller with homing enabled ($22=1) must be re-homed after an alarm: the position it lost
is only known again once the limit switches have been found. The driver talks to the GRBL
emulator over a real pty.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rig.config import GrblTurntableConfig
from rig.errors import DeviceAlarm
from rig.sim.clock import SimClock
from rig.sim.faults import FaultInjector
from rig.sim.grbl_emulator import GrblEmulator
from rig.sim.world import World
from rig.turntable.grbl import GrblTurntable

CONFIG = GrblTurntableConfig.model_validate(
    {
        "driver": "grbl",
        "emulate": {},
        "homing": True,
        "reply_timeout_s": 0.2,
        "banner_timeout_s": 0.4,
        "poll_interval_s": 0.01,
        "retries": 2,
        "limits": {"min_deg": -720, "max_deg": 720},
    }
)


class Bench:
    """A homing GRBL emulator (boots locked in alarm), its world, and a driver on its pty."""

    def __init__(self) -> None:
        self.world = World()
        self.faults = FaultInjector()
        self.emulator = GrblEmulator.for_config(
            CONFIG, world=self.world, clock=SimClock(0), faults=self.faults
        )
        self.emulator.start()
        self.driver = GrblTurntable(CONFIG, port=self.emulator.port)

    def homing_cycles(self) -> int:
        return self.emulator.received.count(b"$H")

    def close(self) -> None:
        self.driver.close()
        self.emulator.stop()


@pytest.fixture
def bench() -> Iterator[Bench]:
    rig = Bench()
    yield rig
    rig.close()


def test_alarm_mid_move_is_recovered_by_homing_again(bench: Bench) -> None:
    bench.driver.connect()
    assert bench.homing_cycles() == 1
    bench.driver.move_to_deg(100.0)
    bench.faults.arm("alarm", code=1)  # a hard limit: the axis stops halfway, GRBL locks
    with pytest.raises(DeviceAlarm) as caught:
        bench.driver.move_to_deg(300.0)
    assert caught.value.code == 1
    assert bench.emulator.state == "Alarm"
    assert bench.world.snapshot().turntable_deg == pytest.approx(200.0)  # where it stopped

    bench.driver.recover()
    assert bench.homing_cycles() == 2  # re-homed ...
    assert b"$X" not in bench.emulator.received  # ... not merely unlocked
    assert bench.emulator.state == "Idle"
    assert bench.driver.position_deg() == 0.0  # the homed position, verified on the controller
    assert bench.world.snapshot().turntable_deg == 0.0
    assert bench.driver.move_to_deg(300.0) == 300.0
    assert bench.world.snapshot().turntable_deg == 300.0


def test_failed_homing_cycle_is_an_alarm_and_a_reconnect_homes(bench: Bench) -> None:
    bench.faults.arm("alarm", code=9)  # homing did not find the switch: ALARM:9
    with pytest.raises(DeviceAlarm) as caught:
        bench.driver.connect()
    assert caught.value.code == 9
    assert bench.emulator.state == "Alarm"
    bench.driver.connect()  # reset, banner, $H again
    assert bench.homing_cycles() == 2
    assert bench.emulator.state == "Idle"
    assert bench.driver.move_to_deg(45.0) == 45.0
