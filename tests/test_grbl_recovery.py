"""GRBL alarm recovery when homing is configured: reset, then `$H` (not `$X`), state verified.

A controller with homing enabled ($22=1) must be re-homed after an alarm: the position it lost
is only known again once the limit switches have been found. The driver talks to the GRBL
emulator over a real pty. The emulated controller homes X toward negative ($23=1), so after
`$H` its machine position is −$130 + $27 with the axis $27 off the switch (limits.c).
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

#: homing on, toward −X, 1000 units of travel, a fast seek; 100 steps per unit
FIRMWARE = {22: 1, 23: 1, 25: 6000, 27: 1, 100: 100, 110: 3600, 120: 180, 130: 1000}
HOMED_DEG = -1000.0 + 1.0  # −$130 + $27
CONFIG = GrblTurntableConfig.model_validate(
    {
        "driver": "grbl",
        "emulate": {"settings": FIRMWARE},
        "homing": True,
        "reply_timeout_s": 0.2,
        "banner_timeout_s": 0.4,
        "retries": 2,
        "limits": {"min_deg": -1000, "max_deg": 720},
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
    assert bench.driver.position_deg() == HOMED_DEG
    assert bench.world.snapshot().turntable_deg == pytest.approx(1.0)  # $27 off the switch
    bench.driver.move_to_deg(-900.0)
    bench.faults.arm("alarm", code=1)  # a hard limit: the axis stops halfway, GRBL locks
    with pytest.raises(DeviceAlarm) as caught:
        bench.driver.move_to_deg(-700.0)
    assert caught.value.code == 1
    assert bench.emulator.state == "Alarm"
    # stopped halfway (at −800, 200° past the switch) and coasted on: the count is off
    assert bench.world.snapshot().turntable_deg > 200.0 + 0.5

    bench.driver.recover()
    assert bench.homing_cycles() == 2  # re-homed ...
    assert b"$X" not in bench.emulator.received  # ... not merely unlocked
    assert bench.emulator.state == "Idle"
    assert bench.driver.position_deg() == HOMED_DEG  # the homed position, read back
    assert bench.world.snapshot().turntable_deg == pytest.approx(1.0)  # the lost steps are gone
    assert bench.driver.move_to_deg(-700.0) == -700.0
    assert bench.world.snapshot().turntable_deg == pytest.approx(300.0)


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
