"""The Modbus emulators against the Modbus specifications, frame by frame, over TCP and RTU.

References: MODBUS Application Protocol Specification V1.1b3 (functions 6.x, exceptions 7),
MODBUS over Serial Line V1.02 (broadcast 2.1, CRC 2.6) and the MODBUS Messaging on TCP/IP
Implementation Guide V1.0b (unit identifier, p. 23); rig/sim/modbus_frames.py quotes them.
Requests are raw frames, so what is tested is the device, not what pymodbus's client would send.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st
from modbus_support import FRAMINGS, Framing, lightbox_config, turntable_config

from rig.config import ModbusRtu, ModbusTcp
from rig.errors import ConfigError
from rig.lightbox.modbus import ModbusLightbox
from rig.sim.modbus_drive import ModbusTurntableEmulator
from rig.sim.modbus_frames import crc16, request_exception, split_frame
from rig.sim.modbus_lights import ModbusLightboxEmulator
from rig.sim.modbus_server import ModbusEmulator
from rig.turntable.modbus import ModbusTurntable

QUIET_S = 0.25  # how long silence must last to count as "no reply"


class Raw:
    """Raw request frames to one emulator; replies come back as PDUs (None: no reply)."""

    def __init__(self, emulator: ModbusEmulator) -> None:
        self.emulator = emulator
        self._tid = 0

    def ask(self, unit: int, pdu: bytes) -> bytes | None:
        endpoint = self.emulator.endpoint
        if isinstance(endpoint, ModbusTcp):
            return self._tcp(endpoint, unit, pdu)
        assert isinstance(endpoint, ModbusRtu)
        frame = bytes([unit]) + pdu
        return self.rtu_frame(frame + crc16(frame))

    def _tcp(self, endpoint: ModbusTcp, unit: int, pdu: bytes) -> bytes | None:
        self._tid += 1
        with socket.create_connection((endpoint.host, endpoint.port), timeout=QUIET_S) as s:
            s.sendall(struct.pack(">HHHB", self._tid, 0, len(pdu) + 1, unit) + pdu)
            try:
                reply = s.recv(512)
            except TimeoutError:
                return None
        assert int.from_bytes(reply[0:2], "big") == self._tid
        return reply[7:]

    def rtu_frame(self, frame: bytes) -> bytes | None:
        endpoint = self.emulator.endpoint
        assert isinstance(endpoint, ModbusRtu)
        with serial.Serial(endpoint.port, endpoint.baudrate, timeout=QUIET_S) as line:
            line.write(frame)
            reply = line.read(256)
        if not reply:
            return None
        assert crc16(reply[:-2]) == reply[-2:]
        return reply[1:-2]


@contextmanager
def drive(framing: Framing) -> Iterator[tuple[ModbusTurntableEmulator, Raw]]:
    with ModbusTurntableEmulator(turntable_config(framing)) as emulator:
        yield emulator, Raw(emulator)


@contextmanager
def lights(framing: Framing) -> Iterator[tuple[ModbusLightboxEmulator, Raw]]:
    with ModbusLightboxEmulator(lightbox_config(framing)) as emulator:
        yield emulator, Raw(emulator)


def read(function: int, address: int, count: int) -> bytes:
    return struct.pack(">BHH", function, address, count)


on_each_wire = pytest.mark.parametrize("framing", FRAMINGS)


@on_each_wire
def test_a_quantity_out_of_range_is_exception_3(framing: Framing) -> None:
    # 6.3: 1 <= registers <= 125; 6.1: 1 <= coils <= 2000; 6.12: 1..123, byte count 2N
    with drive(framing) as (_, raw):
        assert raw.ask(1, read(0x03, 0, 126)) == b"\x83\x03"
        assert raw.ask(1, read(0x03, 0, 0)) == b"\x83\x03"
        assert raw.ask(1, struct.pack(">BHHB", 0x10, 0, 124, 248) + bytes(248)) == b"\x90\x03"
        assert raw.ask(1, struct.pack(">BHHB", 0x10, 0, 2, 3) + bytes(3)) == b"\x90\x03"
    with lights(framing) as (_, raw):
        assert raw.ask(1, read(0x01, 0, 2001)) == b"\x81\x03"


@on_each_wire
def test_a_function_the_device_lacks_is_exception_1_with_its_own_code(framing: Framing) -> None:
    # 7, code 01: the reply's function code is the request's plus 0x80, whatever the function
    with drive(framing) as (_, raw):
        assert raw.ask(1, read(0x04, 0, 1)) == b"\x84\x01"  # input registers: not in its map
        assert raw.ask(1, read(0x41, 0, 1)) == b"\xc1\x01"  # a code nobody defines


@on_each_wire
def test_a_single_coil_is_switched_by_ff00_or_0000_only(framing: Framing) -> None:
    # 6.5: "All other values are illegal and will not affect the output"
    with lights(framing) as (emulator, raw):
        assert raw.ask(1, struct.pack(">BHH", 0x05, 0, 0x1234)) == b"\x85\x03"
        assert emulator.raw_levels()["dome"] == 0
        assert raw.ask(1, struct.pack(">BHH", 0x05, 0, 0xFF00)) == struct.pack(
            ">BHH", 0x05, 0, 0xFF00
        )
        assert emulator.raw_levels()["dome"] == 1


@on_each_wire
def test_an_address_outside_the_map_is_exception_2(framing: Framing) -> None:
    # 6.3 state diagram: quantity checked first (exception 3), then the address range (2)
    with drive(framing) as (_, raw):
        assert raw.ask(1, read(0x03, 100, 1)) == b"\x83\x02"
        assert raw.ask(1, read(0x03, 7, 3)) == b"\x83\x02"  # runs past the last register
        assert raw.ask(1, struct.pack(">BHH", 0x06, 4, 1)) == b"\x86\x02"  # status: read-only


def test_a_broadcast_write_is_carried_out_and_never_answered() -> None:
    # Serial Line 2.1: unit 0 is a broadcast; every unit obeys a write and none replies
    with lights("rtu") as (emulator, raw):
        assert raw.ask(0, struct.pack(">BHH", 0x06, 1, 77)) is None
        assert emulator.raw_levels()["east"] == 77
        assert raw.ask(0, read(0x03, 1, 1)) is None  # a broadcast read: nothing to answer


def test_a_frame_with_a_bad_crc_is_dropped() -> None:
    # Serial Line 2.6: the receiver checks the CRC and drops the frame without answering
    with drive("rtu") as (_, raw):
        frame = bytes([1]) + read(0x03, 0, 1)
        broken = frame + bytes(b ^ 0xFF for b in crc16(frame))
        assert raw.rtu_frame(broken) is None
        assert raw.rtu_frame(frame + crc16(frame)) is not None


def test_tcp_units_0_and_ff_address_the_server_itself() -> None:
    # TCP/IP Implementation Guide p. 23: the unit identifier is useless to a Modbus/TCP server
    # addressed directly; 0xFF (and 0) mean the server itself. Another id: a gateway's 0x0B.
    with drive("tcp") as (_, raw):
        assert raw.ask(0xFF, read(0x03, 3, 1)) == b"\x03\x02\x00\x00"
        assert raw.ask(0, read(0x03, 3, 1)) == b"\x03\x02\x00\x00"
        assert raw.ask(9, read(0x03, 3, 1)) == b"\x83\x0b"


served = frozenset({0x01, 0x03, 0x05, 0x06, 0x0F, 0x10})


@settings(max_examples=300, deadline=None)
@given(function=st.sampled_from([0x01, 0x03, 0x0F, 0x10]), quantity=st.integers(0, 0xFFFF))
def test_quantity_limits_follow_the_specification(function: int, quantity: int) -> None:
    most = {0x01: 2000, 0x03: 125, 0x0F: 1968, 0x10: 123}[function]
    pdu = struct.pack(">BHH", function, 0, quantity)
    if function in (0x0F, 0x10):
        count = (quantity + 7) // 8 if function == 0x0F else 2 * quantity
        pdu += bytes([count & 0xFF]) + bytes(count & 0xFF)
    expected = None if 1 <= quantity <= most else 3
    assert request_exception(pdu, served) == expected


@given(data=st.binary(min_size=0, max_size=40))
def test_only_a_whole_frame_with_a_good_crc_is_taken_for_one(data: bytes) -> None:
    whole = data + crc16(data)
    if len(whole) >= 4:
        assert split_frame(whole, "rtu") == (0, whole[0], whole[1:-2])
    broken = data + bytes(b ^ 0x5A for b in crc16(data))
    assert split_frame(broken, "rtu") is None


@pytest.mark.parametrize("device", ["turntable", "lightbox"])
def test_unit_0_on_a_serial_line_is_refused_before_a_byte_is_sent(device: str) -> None:
    # the driver used to send to unit 0 and time out on every request: a broadcast is never
    # answered (Serial Line 2.1)
    link = ModbusRtu(port="/dev/ttyUSB0")
    with pytest.raises(ConfigError, match="broadcast"):
        if device == "turntable":
            ModbusTurntable(turntable_config("rtu", unit_id=0), link=link)
        else:
            ModbusLightbox(lightbox_config("rtu", unit_id=0), link=link)
    # over TCP unit 0 addresses the server itself (Implementation Guide p. 23): allowed
    ModbusTurntable(turntable_config("tcp", unit_id=0), link=ModbusTcp(host="127.0.0.1"))


@on_each_wire
def test_a_disabled_drive_refuses_a_target_with_exception_4(framing: Framing) -> None:
    # no vendor manual: the emulated drive (configs' register map) answers SERVER DEVICE
    # FAILURE (7, code 04: "an unrecoverable error ... while attempting the requested action")
    with drive(framing) as (emulator, raw):
        assert raw.ask(1, struct.pack(">BHHB", 0x10, 0, 2, 4) + bytes([0, 0, 0x03, 0xE8])) == (
            b"\x90\x04"
        )
        assert not emulator.moving


@on_each_wire
def test_a_level_above_full_scale_is_exception_3_and_not_applied(framing: Framing) -> None:
    # no vendor manual: the emulated LED board takes 0..full_scale per register; 7, code 03
    with lights(framing) as (emulator, raw):
        assert raw.ask(1, struct.pack(">BHH", 0x06, 5, 4096)) == b"\x86\x03"  # full scale 4095
        assert emulator.raw_levels()["top"] == 0
