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
from rig.transport import SerialLineTransport
from rig.turntable.grbl import GrblTurntable
from rig.turntable.grbl_codec import Alarm, Banner, ErrorReply, Ok, Setting, Status, parse_line

FAST = {
    "reply_timeout_s": 0.2,
    "banner_timeout_s": 0.4,
    "poll_interval_s": 0.01,
    "retries": 2,
}


def make_config(**overrides: object) -> GrblTurntableConfig:
    values: dict[str, object] = {
        "driver": "grbl",
        "emulate": {},
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


@pytest.fixture
def make_rig() -> Iterator[Callable[..., Rig]]:
    opened: list[tuple[GrblEmulator, GrblTurntable]] = []

    def build(
        *,
        connect: bool = True,
        scale: float = 0.0,
        homing_emulator: bool | None = None,
        **kw: object,
    ) -> Rig:
        config = make_config(**kw)
        world, clock = World(), SimClock(scale)
        emulator = GrblEmulator.for_config(config, world=world, clock=clock)
        if homing_emulator is not None:
            emulator = GrblEmulator(
                axis=config.axis,
                tilt_axis="Y",
                tilt_units_per_deg=2.0,
                homing=homing_emulator,
                world=world,
                clock=clock,
            )
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
    assert rig.clock.physical_duration_s("grbl") == pytest.approx(
        trapezoid_duration_s(90.0, 60.0, 180.0)
    )


def test_multi_turn_goes_forward_past_360(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.driver.move_to_deg(350.0)
    assert rig.driver.move_to_deg(370.0) == 370.0
    assert rig.world.snapshot().turntable_deg == 370.0
    last = rig.clock.entries()[-1]
    # +20 degrees of travel, not -340
    assert last.duration_s == pytest.approx(trapezoid_duration_s(20.0, 60.0, 180.0))


def test_units_per_deg_scaling_on_the_wire(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(units_per_deg=10.0)
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
    rig = make_rig(homing=True, homing_emulator=True, connect=False)
    assert rig.emulator.state == "Alarm"  # homing enabled: GRBL boots locked
    rig.driver.connect()
    assert b"$H" in rig.emulator.received
    assert b"$X" not in rig.emulator.received
    assert rig.emulator.state == "Idle"
    assert rig.driver.move_to_deg(45.0) == 45.0


def test_connect_unlocks_an_alarmed_controller(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(homing_emulator=True, connect=False)
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
    rig.driver.recover()
    assert rig.emulator.state == "Idle"
    # the emulator stopped halfway; the driver re-established exactly that position
    assert rig.driver.position_deg() == 60.0
    assert rig.world.snapshot().turntable_deg == 60.0
    assert rig.driver.move_to_deg(110.0) == 110.0
    assert rig.world.snapshot().turntable_deg == 110.0


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


# ---------------------------------------------------------------------------- emulator wire


@pytest.fixture
def wire() -> Iterator[tuple[GrblEmulator, SerialLineTransport]]:
    emulator = GrblEmulator(clock=SimClock(1.0))
    emulator.start()
    link = SerialLineTransport(emulator.port, name="test")
    link.open()
    yield emulator, link
    link.close()
    emulator.stop()


def ask(link: SerialLineTransport, data: bytes, count: int = 1) -> list[object]:
    link.write(data)
    return [parse_line(link.read_line(1.0)) for _ in range(count)]


def test_emulator_speaks_grbl(wire: tuple[GrblEmulator, SerialLineTransport]) -> None:
    emulator, link = wire
    assert ask(link, b"G1 X10\n") == [ErrorReply(22)]  # no feed rate yet
    assert ask(link, b"G1 X1.2.3\n") == [ErrorReply(2)]
    assert ask(link, b"$Q\n") == [ErrorReply(3)]
    dump = ask(link, b"$$\n", count=len(emulator.settings) + 1)
    assert Setting(110, 5400.0) in dump and dump[-1] == Ok()
    assert ask(link, b"G0 X90\n") == [Ok()]  # 90 deg at 90 deg/s: a second of real time
    (report,) = ask(link, b"?")
    assert isinstance(report, Status) and report.state == "Run"
    assert report.wco == (0.0, 0.0, 0.0)  # first report after start carries WCO
    link.write(b"!")
    (held,) = ask(link, b"?")
    assert isinstance(held, Status) and (held.state, held.substate) == ("Hold", 0)
    link.write(b"~")
    (resumed,) = ask(link, b"?")
    assert isinstance(resumed, Status) and resumed.state == "Run" and resumed.wco is None
    # a reset in motion loses steps: ALARM:3, the banner, then G-code is locked out
    replies = ask(link, b"\x18", count=2)
    assert replies[0] == Alarm(3) and isinstance(replies[1], Banner)
    link.drain(0.05)
    assert ask(link, b"G0 X0\n") == [ErrorReply(9)]
    assert ask(link, b"$X\n", count=2)[1] == Ok()
    assert ask(link, b"G0 X0\n") == [Ok()]


@pytest.mark.parametrize("axis", ["Z", "A"])
def test_turntable_on_another_axis(make_rig: Callable[..., Rig], axis: str) -> None:
    # a 4th-axis board (A) reports four coordinates; the turntable's is found by its letter
    rig = make_rig(axis=axis, tilt=None)
    assert rig.driver.move_to_deg(123.0) == 123.0
    assert rig.moves() == [f"G90 G1 {axis}123.000 F3600.000".encode()]
    index = "XYZA".index(axis)
    assert rig.emulator.machine_position()[index] == 123.0
    assert rig.emulator.machine_position()[0] == 0.0
    assert rig.world.snapshot().turntable_deg == 123.0
