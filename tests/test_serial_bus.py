"""SerialBus: pseudo-terminals joined into one serial line (the RTU emulators' wire)."""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from collections.abc import Iterator

import pytest

from rig.sim import modbus_bus
from rig.sim.modbus_bus import BusStopped, SerialBus


def open_end(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    return fd


def read_for(fd: int, seconds: float) -> bytes:
    """Everything that arrives on fd within `seconds`."""
    data = b""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            with contextlib.suppress(BlockingIOError):
                data += os.read(fd, 65536)
    return data


@pytest.fixture
def bus() -> Iterator[SerialBus]:
    with SerialBus("test") as line:
        yield line


def test_the_master_reaches_every_device_and_each_device_the_master(bus: SerialBus) -> None:
    host = open_end(bus.port)
    first, second = open_end(bus.attach()), open_end(bus.attach())
    try:
        os.write(host, b"\x01\x03\x00\x00")
        assert read_for(first, 0.2) == b"\x01\x03\x00\x00"
        assert read_for(second, 0.2) == b"\x01\x03\x00\x00"
        os.write(second, b"\x02\x83\x02")
        assert read_for(host, 0.2) == b"\x02\x83\x02"
        assert read_for(first, 0.05) == b""  # devices do not hear each other's answers
        assert ("host", b"\x01\x03\x00\x00") in bus.traffic()
    finally:
        for fd in (host, first, second):
            os.close(fd)


def test_bytes_nobody_reads_are_dropped_without_stalling_the_line(bus: SerialBus) -> None:
    device = open_end(bus.attach())
    host = open_end(bus.port)
    try:
        flood = bytes(range(256)) * 256  # 64 KiB: far more than a pty's input queue holds
        sent = 0
        deadline = time.monotonic() + 2.0
        while sent < len(flood) and time.monotonic() < deadline:
            try:
                sent += os.write(device, flood[sent : sent + 4096])
            except BlockingIOError:
                time.sleep(0.001)
        assert sent == len(flood)  # the bus kept draining the device side
        received = read_for(host, 0.3)
        assert 0 < len(received) < len(flood)  # what did not fit was lost, as on a line
        os.write(device, b"after")
        assert read_for(host, 0.3).endswith(b"after")  # and the line still works
    finally:
        os.close(device)
        os.close(host)


def test_a_detached_device_hears_nothing_more(bus: SerialBus) -> None:
    path = bus.attach()
    host, device = open_end(bus.port), open_end(path)
    try:
        bus.detach(path)
        os.write(host, b"ping")
        time.sleep(0.05)
        # its pty is hung up, as an unplugged adapter: end of file, and writes fail
        assert os.read(device, 16) == b""
        with pytest.raises(OSError):
            os.write(device, b"pong")
    finally:
        os.close(host)
        os.close(device)


def test_the_line_outlives_a_detached_device(bus: SerialBus) -> None:
    leaving, staying = bus.attach(), bus.attach()
    host, device = open_end(bus.port), open_end(staying)
    try:
        for _ in range(20):  # detach while the forwarding thread is busy on the line
            os.write(host, b"x")
            bus.detach(bus.attach())
        bus.detach(leaving)
        read_for(device, 0.1)
        os.write(host, b"still here")
        assert read_for(device, 0.3) == b"still here"
    finally:
        os.close(host)
        os.close(device)


def test_a_stopped_line_cannot_be_started_again() -> None:
    # its ptys are closed: a restarted forwarding thread would spin on select() errors
    line = SerialBus("test-restart").start()
    line.stop()
    with pytest.raises(BusStopped, match="was stopped"):
        line.start()
    line.stop()  # still idempotent


def test_stop_leaves_the_ptys_to_a_forwarding_thread_that_is_slow_to_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a thread still inside a read when stop() gives up waiting must not have its descriptors
    # closed (and their numbers reused) under it: it closes them itself as it ends
    entered, release = threading.Event(), threading.Event()

    def stuck_read(fd: int) -> bytes:
        entered.set()
        release.wait(5.0)
        return b""

    monkeypatch.setattr(modbus_bus, "_read", stuck_read)
    line = SerialBus("test-slow-stop")
    line.join_timeout_s = 0.05
    line.start()
    host = open_end(line.port)
    try:
        os.write(host, b"x")
        assert entered.wait(2.0)
        line.stop()
        os.fstat(line._host.master)  # still open: the thread is using it
        release.set()
        deadline = time.monotonic() + 2.0
        while _is_open(line._host.master) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not _is_open(line._host.master)  # closed by the thread as it ended
    finally:
        release.set()
        os.close(host)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_a_write_the_reader_keeps_up_with_arrives_whole() -> None:
    # a pty or pipe takes what fits in its queue: the rest must follow, not be dropped
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    data = bytes(range(256)) * 4096  # 1 MiB: sixteen times a pipe's queue
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read_end, 65536):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        modbus_bus._write(write_end, data)
    finally:
        os.close(write_end)
        reader.join(5.0)
        os.close(read_end)
    assert bytes(received) == data
