"""GrblTurntable against the GRBL emulator over a real pty: happy paths and every fault."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from rig.config import GrblTurntableConfig, TiltAxis, TurntableLimits
from rig.devices import Turntable
from rig.errors import (
    ConfigError,
    DeviceAlarm,
    DeviceFault,
    DeviceTimeout,
    NotConnected,
    RigError,
    SafetyError,
    TransportError,
)
from rig.motion import trapezoid_duration_s
from rig.sim.clock import SimClock
from rig.sim.grbl_emulator import GrblEmulator
from rig.sim.world import World
from rig.turntable.grbl import GrblTurntable

FAST = {
    "reply_timeout_s": 0.2,
    "banner_timeout_s": 0.4,
    "retries": 2,
}
#: The `$$` flashed on the emulated controller for make_config's rig: 100 steps per unit (so the
#: whole-degree targets below are whole steps), X at 90 deg/s and 180 deg/s², the tilt's Y (2
#: units per degree) at 30 deg/s.
FIRMWARE = {100: 100.0, 101: 100.0, 110: 5400.0, 111: 3600.0, 120: 180.0, 121: 360.0}


def make_config(
    firmware: dict[int, float] | None = None, **overrides: object
) -> GrblTurntableConfig:
    values: dict[str, object] = {
        "driver": "grbl",
        "emulate": {"settings": FIRMWARE | (firmware or {})},
        "speed_deg_per_s": 60.0,
        "limits": TurntableLimits(
            min_deg=-720, max_deg=720, max_speed_deg_per_s=90, accel_deg_per_s2=180
        ),
        "tilt": TiltAxis(axis="Y", units_per_deg=2.0, min_deg=0, max_deg=30),
        **FAST,
    }
    values.update(overrides)
    return GrblTurntableConfig.model_validate(values)


@dataclass
class Rig:
    config: GrblTurntableConfig
    emulator: GrblEmulator
    driver: GrblTurntable
    world: World
    clock: SimClock

    def moves(self) -> list[bytes]:
        return [line for line in self.emulator.received if line.startswith(b"G90 G1")]

    def move_times(self) -> list[float]:
        return [e.duration_s for e in self.clock.entries() if e.action.startswith("move")]


@pytest.fixture
def make_rig() -> Iterator[Callable[..., Rig]]:
    opened: list[tuple[GrblEmulator, GrblTurntable]] = []

    def build(
        *,
        connect: bool = True,
        scale: float = 0.0,
        firmware: dict[int, float] | None = None,
        **kw: object,
    ) -> Rig:
        config = make_config(firmware, **kw)
        world, clock = World(), SimClock(scale)
        emulator = GrblEmulator.for_config(config, world=world, clock=clock)
        emulator.late_reply_s = 0.3  # past the 0.2 s reply timeout, short enough for a test
        emulator.start()
        driver = GrblTurntable(config, port=emulator.port)
        opened.append((emulator, driver))
        if connect:
            driver.connect()
        return Rig(config, emulator, driver, world, clock)

    yield build
    for emulator, driver in opened:
        driver.close()
        emulator.stop()
    for thread in threading.enumerate():
        if thread.name.endswith("-late"):
            thread.join(timeout=1.0)  # a late reply (0.3 s) may still be on its way


# ---------------------------------------------------------------------------- happy path


def test_connect_identity_status(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    assert isinstance(rig.driver, Turntable)
    ident = rig.driver.identity()
    assert (ident.model, ident.firmware, ident.endpoint) == ("GRBL", "Grbl 1.1h", rig.emulator.port)
    status = rig.driver.status()
    assert status.state == "Idle"
    assert status.details["position_deg"] == 0.0
    assert status.details["tilt_deg"] == 0.0
    assert rig.emulator.state == "Idle"


def test_move_reports_position_and_updates_world(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    assert rig.driver.move_to_deg(90.0) == 90.0
    assert rig.driver.position_deg() == 90.0
    assert rig.world.snapshot().turntable_deg == 90.0
    assert rig.moves() == [b"G90 G1 X90.000 F3600.000"]
    assert rig.move_times() == [pytest.approx(trapezoid_duration_s(90.0, 60.0, 180.0))]


def test_multi_turn_goes_forward_past_360(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.driver.move_to_deg(350.0)
    assert rig.driver.move_to_deg(370.0) == 370.0
    assert rig.world.snapshot().turntable_deg == 370.0
    # +20 degrees of travel, not -340
    assert rig.move_times()[-1] == pytest.approx(trapezoid_duration_s(20.0, 60.0, 180.0))


def test_units_per_deg_scaling_on_the_wire(make_rig: Callable[..., Rig]) -> None:
    # 10 units per degree: the firmware's rate and acceleration are per unit too
    rig = make_rig(units_per_deg=10.0, firmware={100: 10.0, 110: 54000.0, 120: 1800.0})
    assert rig.driver.move_to_deg(12.5) == 12.5
    assert rig.moves() == [b"G90 G1 X125.000 F36000.000"]
    assert rig.emulator.machine_position()[0] == 125.0


def test_tilt_moves_second_axis(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    assert rig.driver.tilt_to_deg(20.0) == 20.0
    assert rig.driver.tilt_deg() == 20.0
    assert rig.emulator.machine_position()[:2] == (0.0, 40.0)  # 2 units per degree on Y
    assert rig.world.snapshot().tilt_deg == 20.0
    assert rig.driver.position_deg() == 0.0  # the turntable did not move


def test_tilt_without_config_is_config_error(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(tilt=None)
    with pytest.raises(ConfigError):
        rig.driver.tilt_to_deg(10.0)


def test_home_without_homing_declares_zero(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.driver.move_to_deg(370.0)
    rig.driver.home()
    assert rig.driver.position_deg() == 0.0
    assert rig.driver.move_to_deg(10.0) == 10.0
    # the work offset lives in the controller: machine position is 380 units
    assert rig.emulator.machine_position()[0] == 380.0
    assert rig.emulator.work_position()[0] == 10.0


def test_wpos_reports_are_understood(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.driver.move_to_deg(100.0)
    rig.driver.home()
    rig.emulator.settings[10] = 0  # $10=0: GRBL reports WPos instead of MPos
    assert rig.driver.move_to_deg(-30.0) == -30.0
    assert rig.emulator.machine_position()[0] == 70.0


def test_homing_config_runs_homing_cycle(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(homing=True, firmware={22: 1.0}, connect=False)
    assert rig.emulator.state == "Alarm"  # homing enabled: GRBL boots locked
    rig.driver.connect()
    assert b"$H" in rig.emulator.received
    assert b"$X" not in rig.emulator.received
    assert rig.emulator.state == "Idle"
    # limits.c: homed toward +, the axes pull off $27 and the machine position is -$27
    assert rig.driver.position_deg() == -1.0
    assert rig.driver.move_to_deg(45.0) == 45.0


def test_connect_unlocks_an_alarmed_controller(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(firmware={22: 1.0}, connect=False)  # the config does not home
    rig.driver.connect()
    assert b"$X" in rig.emulator.received
    assert b"$H" not in rig.emulator.received
    assert rig.emulator.state == "Idle"


# ---------------------------------------------------------------------------- limits and ports


@pytest.mark.parametrize("angle", [721.0, -720.5, float("nan"), float("inf")])
def test_out_of_limit_move_sends_nothing(make_rig: Callable[..., Rig], angle: float) -> None:
    rig = make_rig()
    before = list(rig.emulator.received)
    with pytest.raises(SafetyError):
        rig.driver.move_to_deg(angle)
    with pytest.raises(SafetyError):
        rig.driver.tilt_to_deg(31.0)
    time.sleep(0.05)  # give any stray byte time to arrive before asserting there was none
    assert rig.emulator.received == before


def test_bad_port_is_transport_error() -> None:
    driver = GrblTurntable(make_config(), port="/dev/does-not-exist-grbl")
    with pytest.raises(TransportError) as excinfo:
        driver.connect()
    assert not isinstance(excinfo.value, DeviceTimeout)
    driver.close()


def test_emulated_config_needs_a_port() -> None:
    with pytest.raises(ConfigError):
        GrblTurntable(make_config())


def test_methods_before_connect(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(connect=False)
    assert rig.driver.status().state == "disconnected"
    with pytest.raises(NotConnected):
        rig.driver.move_to_deg(10.0)
    with pytest.raises(NotConnected):
        rig.driver.position_deg()


# ---------------------------------------------------------------------------- injected faults


def test_lost_status_reply_is_retried(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.driver.move_to_deg(30.0)
    rig.emulator.faults.arm("lost_reply")
    assert rig.driver.position_deg() == 30.0
    assert rig.emulator.faults.fired[-1][1] == "lost_reply"


def test_lost_status_replies_beyond_retries_time_out(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(retries=1)
    rig.emulator.faults.arm("lost_reply", times=2)
    with pytest.raises(DeviceTimeout):
        rig.driver.position_deg()
    assert rig.driver.position_deg() == 0.0  # the link still works afterwards


def test_lost_move_ok_is_not_resent(
    make_rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    rig = make_rig()
    rig.emulator.faults.arm("lost_reply")
    with caplog.at_level(logging.WARNING):
        assert rig.driver.move_to_deg(45.0) == 45.0
    assert rig.moves() == [b"G90 G1 X45.000 F3600.000"]  # sent once: the status showed it ran
    assert "accepted" in caplog.text
    assert rig.driver.move_to_deg(50.0) == 50.0  # and the next command lines up


def test_late_reply_times_out_then_resynchronises(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(retries=0)
    rig.driver.move_to_deg(20.0)
    rig.emulator.faults.arm("late_reply")
    with pytest.raises(DeviceTimeout):
        rig.driver.home()  # G10 L20: its `ok` comes 0.3 s late, past the 0.2 s timeout
    # the next operation drains the straggling `ok` and re-synchronises with `$G`
    assert rig.driver.move_to_deg(10.0) == 10.0
    assert b"$G" in rig.emulator.received
    assert rig.emulator.work_position()[0] == 10.0
    assert rig.emulator.machine_position()[0] == 30.0  # the late G10 did take effect
    assert rig.driver.position_deg() == 10.0


def test_late_move_ok_is_accepted_without_resend(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(retries=0)
    rig.emulator.faults.arm("late_reply")
    assert rig.driver.move_to_deg(60.0) == 60.0
    assert rig.driver.move_to_deg(70.0) == 70.0
    assert len(rig.moves()) == 2


def test_garbage_reply_is_skipped(
    make_rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    rig = make_rig()
    rig.emulator.faults.arm("garbage")
    with caplog.at_level(logging.WARNING):
        assert rig.driver.position_deg() == 0.0
    assert "unreadable" in caplog.text
    rig.emulator.faults.arm("garbage")
    assert rig.driver.move_to_deg(15.0) == 15.0
    assert len(rig.moves()) == 1


def test_error_reply_is_device_fault_with_code(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.emulator.faults.arm("error", code=22)
    with pytest.raises(DeviceFault) as excinfo:
        rig.driver.move_to_deg(90.0)
    assert not isinstance(excinfo.value, DeviceAlarm)
    assert excinfo.value.code == 22
    assert "error:22" in str(excinfo.value) and "feed rate" in str(excinfo.value)
    assert rig.driver.position_deg() == 0.0  # the rejected line did not move
    assert rig.driver.move_to_deg(90.0) == 90.0


def test_alarm_during_move_then_recover(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.driver.move_to_deg(10.0)
    rig.emulator.faults.arm("alarm", code=1)
    with pytest.raises(DeviceAlarm) as excinfo:
        rig.driver.move_to_deg(110.0)
    assert excinfo.value.code == 1
    assert rig.emulator.state == "Alarm"
    before = list(rig.emulator.received)
    with pytest.raises(DeviceAlarm):
        rig.driver.move_to_deg(0.0)  # refused locally: nothing is sent while alarmed
    assert rig.emulator.received == before
    # unlocked, but without homing nothing can find the position again: the caller is told
    with pytest.raises(DeviceFault, match="lost the machine position and homing is off"):
        rig.driver.recover()
    assert rig.emulator.state == "Idle"
    # the limit tripped halfway; the driver re-read the step count GRBL kept there
    stopped = rig.emulator.machine_position()[0]
    assert stopped == pytest.approx(60.0, abs=0.011)
    assert rig.driver.position_deg() == pytest.approx(stopped, abs=1e-6)
    # the steppers were cut at speed and the table coasted on: the count no longer says where
    # it is (ALARM:1, "machine position is likely lost")
    coast = rig.world.snapshot().turntable_deg - stopped
    assert coast > 0.5
    assert rig.driver.move_to_deg(110.0) == 110.0
    assert rig.world.snapshot().turntable_deg == pytest.approx(110.0 + coast)


def test_disconnect_is_transport_error(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.emulator.faults.arm("disconnect")
    with pytest.raises(TransportError) as excinfo:
        rig.driver.position_deg()
    assert not isinstance(excinfo.value, DeviceTimeout)
    with pytest.raises(TransportError):
        rig.driver.move_to_deg(10.0)


def test_stop_during_real_time_move(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(scale=1.0)
    failures: list[BaseException] = []

    def move() -> None:
        try:
            rig.driver.move_to_deg(180.0)  # ~3.3 s at 60 deg/s: stopped long before
        except BaseException as exc:
            failures.append(exc)

    mover = threading.Thread(target=move, name="test-mover")
    mover.start()
    deadline = time.monotonic() + 2.0
    while rig.emulator.state != "Run" and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    rig.driver.stop()
    mover.join(timeout=5.0)
    assert len(failures) == 1 and isinstance(failures[0], RigError)
    stopped_at = rig.driver.position_deg()
    assert 0.0 < stopped_at < 180.0
    assert rig.emulator.state == "Idle"  # a reset after a completed hold raises no alarm
    assert rig.emulator.machine_position()[0] == pytest.approx(stopped_at, abs=0.002)


@pytest.mark.parametrize("axis", ["Z", "A"])
def test_turntable_on_another_axis(make_rig: Callable[..., Rig], axis: str) -> None:
    # a 4th-axis board (A) reports four coordinates; the turntable's is found by its letter
    index = "XYZA".index(axis)
    firmware = {100 + index: 100.0, 110 + index: 5400.0, 120 + index: 180.0}
    rig = make_rig(axis=axis, tilt=None, firmware=firmware)
    assert rig.driver.move_to_deg(123.0) == 123.0
    assert rig.moves() == [f"G90 G1 {axis}123.000 F3600.000".encode()]
    assert rig.emulator.machine_position()[index] == 123.0
    assert rig.emulator.machine_position()[0] == 0.0
    assert rig.world.snapshot().turntable_deg == 123.0
