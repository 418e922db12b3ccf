"""The Modbus turntable driver against its pymodbus emulator: loopback TCP, and (for every
injected fault) Modbus RTU on a pseudo-terminal line as well."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from modbus_support import (
    PERSISTENT,
    RETRIES,
    TRANSIENT_FAULTS,
    TurntableBench,
    attempts,
    on_each_wire,
    turntable_bench,
    turntable_config,
)

from rig.config import ModbusRtu, ModbusTcp
from rig.devices import Turntable
from rig.errors import (
    DeviceAlarm,
    DeviceFault,
    DeviceTimeout,
    NotConnected,
    SafetyError,
    TransportError,
)
from rig.modbus.link import ModbusRegisterLink
from rig.motion import trapezoid_duration_s
from rig.sim.clock import SimClock
from rig.sim.modbus_drive import ModbusTurntableEmulator
from rig.sim.world import World
from rig.turntable import modbus_codec as codec
from rig.turntable.modbus import ModbusTurntable


@pytest.fixture
def bench(request: pytest.FixtureRequest) -> Iterator[TurntableBench]:
    """A connected driver over TCP, or over each wire for a test marked `on_each_wire`."""
    yield from turntable_bench(getattr(request, "param", "tcp"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ---------------------------------------------------------------- happy path


def test_move_reports_position_and_updates_the_world(bench: TurntableBench) -> None:
    assert isinstance(bench.driver, Turntable)
    assert bench.driver.move_to_deg(90.0) == pytest.approx(90.0)
    assert bench.driver.position_deg() == pytest.approx(90.0)
    assert bench.emulator.position_deg() == pytest.approx(90.0)
    assert bench.world.snapshot().turntable_deg == pytest.approx(90.0)
    moves = [e for e in bench.clock.entries() if e.action == "move"]
    speed = codec.register_to_speed(codec.speed_to_register(60.0))
    expected = trapezoid_duration_s(90.0, speed, bench.config.limits.accel_deg_per_s2)
    assert [m.duration_s for m in moves] == [pytest.approx(expected)]
    assert bench.driver.status().state == "idle"


def test_negative_multi_turn_angles_use_both_words(bench: TurntableBench) -> None:
    assert bench.driver.move_to_deg(-725.5) == pytest.approx(-725.5)
    target_writes = [w for w in bench.emulator.writes() if w.address == 0]
    assert target_writes[-1].values == codec.int32_to_words(-72550)
    assert bench.world.snapshot().turntable_deg == pytest.approx(-725.5)


def test_angles_are_quantised_to_whole_steps(bench: TurntableBench) -> None:
    assert bench.driver.move_to_deg(10.004) == pytest.approx(10.0)


def test_home_returns_to_zero(bench: TurntableBench) -> None:
    bench.driver.move_to_deg(30.0)
    bench.driver.home()
    assert bench.driver.position_deg() == 0.0
    assert bench.world.snapshot().turntable_deg == 0.0


def test_identity_comes_from_the_device(bench: TurntableBench) -> None:
    identity = bench.driver.identity()
    assert identity.model == "coinrig-sim SIM-STEPPER-DRIVE"
    assert identity.firmware == "1.0"
    assert identity.endpoint.startswith("tcp://127.0.0.1:")


def test_single_register_positions() -> None:
    config = turntable_config(
        registers={
            "target_words": 1,
            "actual_words": 1,
            "speed": 1,
            "enable": 2,
            "status": 3,
            "actual": 4,
            "command": 5,
        },
        limits={"min_deg": -300.0, "max_deg": 3600.0},
    )
    rig = TurntableBench(config)
    try:
        rig.driver.connect()
        assert rig.driver.move_to_deg(-250.0) == pytest.approx(-250.0)
        writes_before = len(rig.emulator.writes())
        with pytest.raises(SafetyError, match="1-register target range"):
            rig.driver.move_to_deg(400.0)  # 40000 steps: inside the limits, not in 16 bits
        assert len(rig.emulator.writes()) == writes_before
    finally:
        rig.close()


# ---------------------------------------------------------------- safety


@pytest.mark.parametrize("angle", [3600.5, -4000.0, float("nan"), float("inf")])
def test_out_of_range_angles_send_nothing(bench: TurntableBench, angle: float) -> None:
    before = len(bench.emulator.requests())
    with pytest.raises(SafetyError):
        bench.driver.move_to_deg(angle)
    assert len(bench.emulator.requests()) == before
    assert bench.emulator.position_deg() == 0.0


def test_methods_before_connect_raise_not_connected() -> None:
    rig = TurntableBench(turntable_config())
    try:
        with pytest.raises(NotConnected):
            rig.driver.move_to_deg(10.0)
        with pytest.raises(NotConnected):
            rig.driver.position_deg()
        assert rig.emulator.requests() == []
    finally:
        rig.close()


# ---------------------------------------------------------------- injected faults, over each wire


@on_each_wire
@pytest.mark.parametrize(("kind", "code"), TRANSIENT_FAULTS)
def test_transient_fault_is_retried_and_the_move_completes(
    bench: TurntableBench, kind: str, code: int | None
) -> None:
    bench.faults.arm(kind, code=code)  # type: ignore[arg-type]
    assert bench.driver.move_to_deg(45.0) == pytest.approx(45.0)
    assert [k for _, k in bench.faults.fired] == [kind]
    assert bench.emulator.position_deg() == pytest.approx(45.0)
    assert bench.world.snapshot().turntable_deg == pytest.approx(45.0)


@on_each_wire
@pytest.mark.parametrize(("kind", "code"), [*TRANSIENT_FAULTS, ("modbus_exception", 4)])
def test_persistent_fault_raises_typed_error_then_link_recovers(
    bench: TurntableBench, kind: str, code: int | None
) -> None:
    expected = PERSISTENT[bench.framing][kind]
    bench.driver.move_to_deg(30.0)
    bench.faults.arm(kind, code=code, times=RETRIES + 1)  # type: ignore[arg-type]
    before = len(bench.emulator.requests())
    if expected.error is None:
        # RTU, late replies: the identical retry takes the first attempt's reply, and succeeds;
        # the retry's own reply is still on its way, so the line is left alone from here
        assert bench.driver.position_deg() == pytest.approx(30.0)
        assert len(bench.faults.fired) >= 2  # it was retried
        return
    with pytest.raises(expected.error, match=expected.match) as caught:
        bench.driver.position_deg()
    if expected.error is TransportError:
        assert not isinstance(caught.value, DeviceTimeout)
    if code is not None:
        assert isinstance(caught.value, DeviceFault) and caught.value.code == code
    assert len(bench.emulator.requests()) - before == attempts(code)
    bench.faults.clear()
    assert bench.driver.position_deg() == pytest.approx(30.0)
    assert bench.driver.move_to_deg(12.0) == pytest.approx(12.0)


@on_each_wire
def test_drive_fault_bit_raises_and_recover_clears_it(bench: TurntableBench) -> None:
    bench.faults.arm("alarm", code=9)
    # a latched fault is an alarm: the capture layer recovers alarms before retrying
    with pytest.raises(DeviceAlarm, match=r"fault .*call recover\(\)"):
        bench.driver.move_to_deg(90.0)
    assert bench.emulator.faulted
    assert bench.driver.status().state == "fault"
    assert bench.emulator.position_deg() == 0.0  # a faulted drive does not move
    bench.driver.recover()
    assert not bench.emulator.faulted
    assert bench.driver.move_to_deg(90.0) == pytest.approx(90.0)


def test_motion_timeout_stops_the_drive() -> None:
    # 1000x slower than physical: a 10 degree move takes minutes, the timeout floor is 2 s
    rig = TurntableBench(turntable_config(), SimClock(1000.0))
    try:
        rig.driver.connect()
        started = time.monotonic()
        with pytest.raises(DeviceTimeout, match="drive told to stop"):
            rig.driver.move_to_deg(10.0)
        assert time.monotonic() - started < 4.0
        assert not rig.emulator.moving
        stopped_at = rig.emulator.position_deg()
        assert 0.0 <= stopped_at < 10.0
        assert rig.world.snapshot().turntable_deg == pytest.approx(stopped_at)
        assert rig.driver.position_deg() == pytest.approx(stopped_at)
    finally:
        rig.close()


def test_emulator_refuses_targets_beyond_its_soft_limits() -> None:
    config = turntable_config()
    emulator = ModbusTurntableEmulator(config, world=None, clock=SimClock(0), faults=None)
    with (
        emulator,
        ModbusRegisterLink(emulator.endpoint, unit_id=1, timeout_s=0.5, retries=0) as link,
    ):
        link.write_registers(config.registers.enable, [1])
        with pytest.raises(DeviceFault) as caught:
            link.write_registers(0, codec.encode_position(4000 * 100, 2))
        assert caught.value.code == 3
        with pytest.raises(DeviceFault) as caught:
            link.write_registers(config.registers.status, [0])  # read-only
        assert caught.value.code == 2


# ---------------------------------------------------------------- unreachable endpoints


def test_unreachable_port_is_a_quick_transport_error() -> None:
    config = turntable_config()
    driver = ModbusTurntable(config, link=ModbusTcp(host="127.0.0.1", port=free_port()))
    started = time.monotonic()
    with pytest.raises(TransportError, match="cannot connect"):
        driver.connect()
    assert time.monotonic() - started < 1.0
    driver.close()


def test_missing_serial_port_is_a_transport_error() -> None:
    link = ModbusRegisterLink(
        ModbusRtu(port="/dev/does-not-exist-coinrig"), unit_id=1, timeout_s=0.1, retries=0
    )
    with pytest.raises(TransportError):
        link.open()
    assert not link.is_open


def test_world_follows_a_motion_nobody_polls() -> None:
    config = turntable_config()
    world = World()
    emulator = ModbusTurntableEmulator(config, world=world, clock=SimClock(1.0), faults=None)
    with (
        emulator,
        ModbusRegisterLink(emulator.endpoint, unit_id=1, timeout_s=0.5, retries=0) as link,
    ):
        link.write_registers(config.registers.enable, [1])
        link.write_registers(config.registers.speed, [codec.speed_to_register(60.0)])
        link.write_registers(0, codec.encode_position(100, 2))  # 1 degree: ~0.15 s
        deadline = time.monotonic() + 3.0
        while world.snapshot().turntable_deg != 1.0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert world.snapshot().turntable_deg == 1.0


def test_emulator_going_away_is_a_transport_error() -> None:
    rig = TurntableBench(turntable_config())
    try:
        rig.driver.connect()
        rig.driver.move_to_deg(5.0)
        rig.emulator.stop()  # the drive loses power: the connection closes, nobody listens
        started = time.monotonic()
        with pytest.raises(TransportError):
            rig.driver.position_deg()
        assert time.monotonic() - started < 2.0
    finally:
        rig.close()
