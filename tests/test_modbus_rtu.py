"""Modbus RTU end to end: the real drivers open a pseudo-terminal with pyserial, pymodbus's RTU
serial server answers on another, and a forwarding thread joins them into one serial line.

Covers what only RTU has: CRC-checked frames, several units sharing one RS-485 line (and
ignoring requests for other unit ids), late replies meeting other requests (no transaction
ids), and the simulation backend and CLI over RTU. Every injected fault runs over RTU as well
as TCP in tests/test_modbus_turntable.py and tests/test_modbus_lightbox.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from modbus_support import (
    LIGHT_CHANNELS,
    TIMEOUT_S,
    TurntableBench,
    lightbox_config,
    turntable_bench,
    turntable_config,
)
from pymodbus.framer import FramerRTU
from typer.testing import CliRunner

from pipeline.rig_cli.app import app
from rig.assembly import open_rig
from rig.config import ModbusRtu, RigConfig
from rig.errors import ConfigError, DeviceTimeout
from rig.lightbox.modbus import ModbusLightbox
from rig.modbus.line import shared_line
from rig.modbus.link import ModbusRegisterLink
from rig.sim.clock import SimClock
from rig.sim.faults import FaultInjector
from rig.sim.modbus_bus import SerialBus
from rig.sim.modbus_drive import ModbusTurntableEmulator
from rig.sim.modbus_lights import ModbusLightboxEmulator
from rig.sim.world import World
from rig.turntable.modbus import ModbusTurntable

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture
def table() -> Iterator[TurntableBench]:
    """A drive emulator on its own RTU line and a connected driver."""
    yield from turntable_bench("rtu")


@pytest.fixture
def bus() -> Iterator[SerialBus]:
    """An emulated RS-485 line for several units."""
    with SerialBus("test-rs485") as line:
        yield line


def crc_ok(frame: bytes) -> bool:
    return FramerRTU.check_CRC(frame[:-2], int.from_bytes(frame[-2:], "big"))


# ---------------------------------------------------------------- happy path


def test_turntable_moves_over_rtu_and_polls_status_until_still() -> None:
    bench = TurntableBench(turntable_config("rtu"), SimClock(0.05))  # 90 degrees: ~0.09 s
    try:
        bench.driver.connect()
        endpoint = bench.emulator.endpoint
        assert isinstance(endpoint, ModbusRtu) and endpoint.port.startswith("/dev/")
        assert bench.driver.identity().endpoint.startswith(f"rtu://{endpoint.port}")
        status_reads_before = _status_reads(bench)
        assert bench.driver.move_to_deg(90.0) == pytest.approx(90.0)
        assert _status_reads(bench) - status_reads_before >= 3  # polled while busy
        assert bench.driver.position_deg() == pytest.approx(90.0)
        assert bench.world.snapshot().turntable_deg == pytest.approx(90.0)
        assert bench.driver.status().state == "idle"
    finally:
        bench.close()


def _status_reads(bench: TurntableBench) -> int:
    status = bench.config.registers.status
    return sum(
        1
        for r in bench.emulator.requests()
        if r.function_code == 3 and r.address is not None and r.address <= status
    )


def test_the_line_carries_rtu_frames(table: TurntableBench) -> None:
    # the host side of the line: unit 1, function 0x03/0x06/0x10, a valid CRC-16 on every frame
    table.driver.move_to_deg(-12.5)
    bus = table.emulator._own_bus
    assert bus is not None
    sent = [data for side, data in bus.traffic() if side == "host"]
    answers = [data for side, data in bus.traffic() if side == "device"]
    assert sent and answers
    assert all(frame[0] == 1 and crc_ok(frame) for frame in sent + answers)
    assert {frame[1] for frame in sent} >= {0x03, 0x10}


# ---------------------------------------------------------------- one RS-485 line, two units


def test_drive_and_led_controller_share_one_serial_line(bus: SerialBus) -> None:
    tt_config = turntable_config("rtu")
    lb_config = lightbox_config(  # two registers and a coil: 4 requests per pattern
        "rtu",
        unit_id=2,
        channels=[LIGHT_CHANNELS[0], LIGHT_CHANNELS[1], LIGHT_CHANNELS[5]],
        patterns={"raking_n": {"north": 1.0}, "soft": {"east": 0.25, "dome": 1.0}},
    )
    world = World()
    drive = ModbusTurntableEmulator(tt_config, world=world, bus=bus)
    lights = ModbusLightboxEmulator(lb_config, world=world, bus=bus)
    with drive, lights:
        assert drive.endpoint == lights.endpoint  # one port, as on a real adapter
        turntable = ModbusTurntable(tt_config, link=drive.endpoint)
        lightbox = ModbusLightbox(lb_config, link=lights.endpoint, sleep=lambda s: None)
        turntable.connect()
        lightbox.connect()  # the port is already open: borrowed, not opened twice
        try:
            errors: list[BaseException] = []

            def spin() -> None:
                try:
                    for angle in (10.0, 20.0, 30.0, 40.0):
                        turntable.move_to_deg(angle)
                except BaseException as exc:
                    errors.append(exc)

            worker = threading.Thread(target=spin, name="test-spin")
            worker.start()
            for _ in range(4):  # meanwhile the lights switch, on the same wires
                lightbox.set_pattern("raking_n")
                lightbox.set_pattern("soft")
            worker.join(timeout=10.0)
            assert errors == []
            assert world.snapshot().turntable_deg == pytest.approx(40.0)
            assert lights.levels()["dome"] == 1.0
            # each device saw only its own requests
            assert drive.requests() and lights.requests()
            lightbox.close()  # the port stays open for the unit still using it
            assert turntable.move_to_deg(5.0) == pytest.approx(5.0)
        finally:
            turntable.close()
            lightbox.close()


def test_units_on_one_port_must_agree_on_line_settings(bus: SerialBus) -> None:
    first = ModbusRegisterLink(
        ModbusRtu(port=bus.port, parity="N"), unit_id=1, timeout_s=0.1, retries=0
    )
    second = ModbusRegisterLink(
        ModbusRtu(port=bus.port, baudrate=9600, parity="N"), unit_id=2, timeout_s=0.1, retries=0
    )
    with first, pytest.raises(ConfigError, match="different line settings"):
        second.open()


def test_a_request_for_another_unit_goes_unanswered(table: TurntableBench) -> None:
    endpoint = table.emulator.endpoint
    assert isinstance(endpoint, ModbusRtu)
    before = len(table.emulator.requests())
    with (
        ModbusRegisterLink(endpoint, unit_id=7, timeout_s=0.1, retries=0) as stranger,
        pytest.raises(DeviceTimeout),
    ):
        stranger.read_holding(0, 1)
    assert len(table.emulator.requests()) == before


# ---------------------------------------------------------------- late replies: no transaction ids


def test_a_late_reply_is_not_taken_for_the_answer_to_another_request() -> None:
    # (a late reply answering the identical retry: modbus_support.PERSISTENT, in the fault tests)
    config = turntable_config("rtu")
    faults = FaultInjector()
    emulator = ModbusTurntableEmulator(config, faults=faults, late_reply_s=2 * TIMEOUT_S["rtu"])
    timeout_s = 1.5 * TIMEOUT_S["rtu"]
    with emulator:
        endpoint = emulator.endpoint
        assert isinstance(endpoint, ModbusRtu)
        with ModbusRegisterLink(endpoint, unit_id=1, timeout_s=timeout_s, retries=0) as link:
            faults.arm("late_reply")
            with pytest.raises(DeviceTimeout):
                link.read_holding(config.registers.status, 1)  # its reply comes 0.1 s late
            faults.arm("lost_reply")  # the next request is never answered ...
            started = time.monotonic()
            with pytest.raises(DeviceTimeout):
                # ... and the stale read reply, which comes before it is sent, is dropped
                link.write_registers(config.registers.speed, [600])
            # one timeout waiting out the stale reply, one for the write's own
            assert time.monotonic() - started < 2 * timeout_s + 0.5
            faults.clear()
            link.write_registers(config.registers.speed, [600])  # and the line is usable
            assert link.read_holding(config.registers.speed, 1) == [600]


def _speed_and_status_link(emulator: ModbusTurntableEmulator, retries: int) -> ModbusRegisterLink:
    """A link to the emulated drive whose speed register reads 600 (status reads 0: idle)."""
    endpoint = emulator.endpoint
    assert isinstance(endpoint, ModbusRtu)
    link = ModbusRegisterLink(endpoint, unit_id=1, timeout_s=TIMEOUT_S["rtu"], retries=retries)
    link.open()
    link.write_registers(emulator.config.registers.speed, [600])
    return link


def test_a_retry_that_took_a_late_reply_does_not_leave_its_own_for_the_next_read() -> None:
    # A unit whose reply time varies around the timeout (0.2 s): the speed read's first reply
    # comes 0.3 s after it, the retry's 0.15 s after it, the status read's 0.12 s after it.
    # Without waiting out the overdue reply, the retry takes the first one and the status read
    # the retry's: the status read would return the speed (600), silently (same count, no ids).
    config = turntable_config("rtu")
    with ModbusTurntableEmulator(config) as emulator:
        link = _speed_and_status_link(emulator, retries=1)
        try:
            regs = config.registers
            emulator.delay_replies(0.3, 0.15, 0.12)
            assert link.read_holding(regs.speed, 1) == [600]
            assert link.read_holding(regs.status, 1) == [0]
            assert link.read_holding(regs.speed, 1) == [600]
        finally:
            link.close()


def test_late_replies_never_answer_a_different_read() -> None:
    # every request answered 1.5 timeouts late: the speed and status reads, which differ only
    # by address, each time out (their late replies dropped) and never return the other's value
    config = turntable_config("rtu")
    with ModbusTurntableEmulator(config, faults=FaultInjector()) as emulator:
        link = _speed_and_status_link(emulator, retries=1)
        try:
            regs = config.registers
            emulator.faults.arm("late_reply", times=8)
            for address in (regs.speed, regs.status, regs.speed, regs.status):
                with pytest.raises(DeviceTimeout):
                    link.read_holding(address, 1)
            emulator.faults.clear()
            assert link.read_holding(regs.status, 1) == [0]
            assert link.read_holding(regs.speed, 1) == [600]
        finally:
            link.close()


# ---------------------------------------------------------------- simulation backend and CLI


def rtu_rig_config() -> RigConfig:
    """rig/config/presets/sim.yaml with a Modbus drive (unit 1) and the lightbox (unit 2) emulated over RTU."""
    data = yaml.safe_load((ROOT / "rig" / "config" / "presets" / "sim.yaml").read_text())
    data["turntable"] = {"driver": "modbus", "emulate": {"framing": "rtu"}, "unit_id": 1}
    data["lightbox"]["emulate"] = {"framing": "rtu"}
    data["lightbox"]["unit_id"] = 2
    return RigConfig.model_validate(data)


def test_backend_puts_both_rtu_units_on_one_line() -> None:
    with open_rig(rtu_rig_config()) as rig:
        endpoints = {rig.turntable.identity().endpoint, rig.lightbox.identity().endpoint}
        ports = {e.split("?")[0] for e in endpoints}
        assert len(ports) == 1 and ports.pop().startswith("rtu:///dev/")
        assert rig.turntable.move_to_deg(33.0) == pytest.approx(33.0)
        assert rig.lightbox.set_pattern("raking_e")["east"] == 1.0
        assert rig.twin is not None
        world = rig.twin.world
        assert world.snapshot().turntable_deg == pytest.approx(33.0)
        assert world.snapshot().lights["east"].intensity == 1.0


def test_probe_over_rtu(tmp_path: Path) -> None:
    path = tmp_path / "rtu.yaml"
    path.write_text(yaml.safe_dump(rtu_rig_config().model_dump(mode="json", exclude_none=True)))
    result = runner.invoke(app, ["probe", "--config", str(path)])
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if "│" in line}
    assert "modbus" in rows["turntable"] and "idle" in rows["turntable"]
    assert "modbus" in rows["lightbox"] and "dark" in rows["lightbox"]
    assert "rtu:///dev" in rows["turntable"] and "rtu:///dev" in rows["lightbox"]


def test_sim_serve_offers_rtu() -> None:
    sim = str(ROOT / "rig" / "config" / "presets" / "sim.yaml")
    result = runner.invoke(
        app, ["sim", "serve", "-c", sim, "--modbus", "rtu", "--duration-s", "0.1"]
    )
    assert result.exit_code == 0, result.output
    (line,) = [x for x in result.output.splitlines() if "lightbox" in x]
    assert "link: {kind: rtu, port: /dev/" in line and "parity: N}" in line
    bad = runner.invoke(app, ["sim", "serve", "-c", sim, "--modbus", "udp", "--duration-s", "0.1"])
    assert bad.exit_code == 2 and bad.output.strip().splitlines() == [
        "error: --modbus must be tcp or rtu, got 'udp'"
    ]


def test_probe_missing_rtu_port_is_one_line(tmp_path: Path) -> None:
    # an emulated Modbus drive connects at once (sim.yaml's GRBL one waits 0.5 s for its banner)
    data = rtu_rig_config().model_dump(mode="json", exclude_none=True)
    data["lightbox"].pop("emulate")
    data["lightbox"]["link"] = {"kind": "rtu", "port": str(tmp_path / "ttyUSB7")}
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["probe", "--config", str(path)])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert "ttyUSB7" in line and "Traceback" not in result.output


def test_the_shipped_rs485_example_runs_on_emulated_units() -> None:
    # rig/config/presets/modbus-dexarm-webcam.yaml puts the drive (unit 1) and the relay board (unit 2) on
    # one adapter; emulated, they share one line too, with the example's register maps
    data = yaml.safe_load(
        (ROOT / "rig" / "config" / "presets" / "modbus-dexarm-webcam.yaml").read_text()
    )
    sim = yaml.safe_load((ROOT / "rig" / "config" / "presets" / "sim.yaml").read_text())
    for device in ("turntable", "lightbox"):
        assert data[device]["link"]["port"] == "/dev/ttyUSB1"
        data[device].pop("link")
        data[device]["emulate"] = {"framing": "rtu"}
    data["arm"].pop("link")
    data["arm"]["emulate"] = {}
    data["camera"], data["simulation"] = sim["camera"], sim["simulation"]
    with open_rig(RigConfig.model_validate(data)) as rig:
        turntable_port = rig.turntable.identity().endpoint.split("?")[0]
        assert rig.lightbox.identity().endpoint.split("?")[0] == turntable_port
        assert rig.turntable.move_to_deg(-90.0) == pytest.approx(-90.0, abs=0.01)
        assert rig.lightbox.set_pattern("raking_w") == {"left": 1.0, "right": 0.0, "ring": 0.0}


# ---------------------------------------------------------------- one device, several names


def test_two_names_of_one_serial_device_share_its_line(
    table: TurntableBench, tmp_path: Path
) -> None:
    # /dev/serial/by-id/... is a symbolic link to /dev/ttyUSBn: a unit configured by one name
    # and another by the other are on the same adapter, which can be opened only once
    endpoint = table.emulator.endpoint
    assert isinstance(endpoint, ModbusRtu)
    alias = tmp_path / "usb-FTDI_FT232R-if00-port0"
    alias.symlink_to(endpoint.port)
    by_id = endpoint.model_copy(update={"port": str(alias)})
    speed = table.config.registers.speed
    with ModbusRegisterLink(by_id, unit_id=1, timeout_s=TIMEOUT_S["rtu"], retries=0) as link:
        link.write_registers(speed, [321])
        assert table.driver.status().state == "idle"  # the driver's link still works
        assert link.read_holding(speed, 1) == [321]


def test_a_line_released_more_often_than_acquired_is_a_bug(bus: SerialBus) -> None:
    line = shared_line(ModbusRtu(port=bus.port, parity="N"))
    assert line.acquire() is not None
    line.release()
    with pytest.raises(RuntimeError, match="released more than acquired"):
        line.release()
    assert line.idle
    port = line.acquire()  # the count did not go negative: this unit holds an open port
    try:
        assert port is not None and port.is_open and not line.idle
    finally:
        line.release()
