"""Line-oriented serial transport: the only module that imports pyserial.

Ports are opened with `serial.serial_for_url`, so `/dev/ttyUSB0`, a pty path, `socket://host:port`
and `loop://` all work. A reader thread puts whole lines on a queue (as grbl-streamer does), so a
driver can wait for a reply with a timeout without busy-polling the port.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time

import serial
from serial.tools import list_ports

from rig.errors import DeviceTimeout, NotConnected, TransportError

try:  # pyserial's flush() calls tcdrain, which raises termios.error (not OSError) on a hangup
    from termios import error as _TermiosError
except ImportError:  # Windows has no termios
    _TermiosError = OSError  # type: ignore[assignment,misc]

_EOF = object()


class SerialLineTransport:
    """Bytes out, whole lines in; `read_line` raises DeviceTimeout when nothing complete arrives."""

    def __init__(self, url: str, *, baudrate: int = 115200, name: str = "serial") -> None:
        self.url = url
        self.baudrate = baudrate
        self.name = name
        self._port: serial.SerialBase | None = None
        self._lines: queue.Queue[object] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._stop = threading.Event()
        self._write_lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        """Whether the port is open and its reader alive."""
        return self._port is not None and self._port.is_open

    def open(self) -> None:
        """Open the port and start the reader thread.

        Raises:
            TransportError: the port does not exist or cannot be opened.
        """
        try:
            self._port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=0.05)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise TransportError(
                f"{self.name}: cannot open serial port {self.url!r}: {exc}"
            ) from exc
        self._stop.clear()
        self._reader = threading.Thread(
            target=self._read_loop, name=f"{self.name}-reader", daemon=True
        )
        self._reader.start()

    def _read_loop(self) -> None:
        assert self._port is not None
        buffer = bytearray()
        while not self._stop.is_set():
            try:
                # read what is waiting (at least one byte): a fixed-size read would wait out the
                # timeout on every short reply and add ~50 ms per exchange
                chunk = self._port.read(self._port.in_waiting or 1)
            except (serial.SerialException, OSError, TypeError, AttributeError):
                self._lines.put(_EOF)
                return
            if not chunk:
                continue
            buffer.extend(chunk)
            while True:
                newline = buffer.find(b"\n")
                if newline < 0:
                    break
                line = bytes(buffer[:newline]).rstrip(b"\r")
                del buffer[: newline + 1]
                if line:
                    self._lines.put(line)

    def write(self, data: bytes) -> None:
        """Send raw bytes (a command line or a real-time byte such as `?` or 0x18).

        Raises:
            NotConnected: the port is not open.
            TransportError: the write failed (the device was unplugged).
        """
        if self._port is None:
            raise NotConnected(f"{self.name}: port {self.url!r} is not open")
        with self._write_lock:
            try:
                self._port.write(data)
                self._port.flush()
            except (serial.SerialException, OSError, _TermiosError) as exc:
                raise TransportError(f"{self.name}: write to {self.url!r} failed: {exc}") from exc

    def read_line(self, timeout_s: float) -> bytes:
        """Return the next complete line (without its line ending).

        Raises:
            DeviceTimeout: no complete line within timeout_s.
            TransportError: the port was closed or disconnected.
        """
        try:
            item = self._lines.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            raise DeviceTimeout(
                f"{self.name}: no reply from {self.url!r} within {timeout_s:.2f} s"
            ) from None
        if item is _EOF:
            self._lines.put(_EOF)  # keep reporting the disconnect to later readers
            raise TransportError(f"{self.name}: {self.url!r} disconnected")
        assert isinstance(item, bytes)
        return item

    def drain(self, quiet_s: float = 0.0) -> list[bytes]:
        """Discard and return every line already received (waiting up to quiet_s for stragglers)."""
        lines: list[bytes] = []
        deadline = time.monotonic() + quiet_s
        while True:
            try:
                item = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return lines
            if item is _EOF:
                self._lines.put(_EOF)
                return lines
            assert isinstance(item, bytes)
            lines.append(item)

    def close(self) -> None:
        """Stop the reader and close the port (idempotent)."""
        self._stop.set()
        if self._reader is not None:
            self._reader.join(timeout=1.0)
            self._reader = None
        if self._port is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                self._port.close()
            self._port = None


def list_serial_ports() -> list[tuple[str, str]]:
    """Return (device path, description) for each serial port the OS knows."""
    return [(p.device, p.description or "") for p in list_ports.comports()]
