"""Modbus RTU serial lines shared by several units (an RS-485 bus), for `rig.modbus.link`.

RS-485 is one master talking to many units over one pair of wires: a turntable drive and an
LED controller often hang on the same USB adapter with different unit ids. The adapter can be
opened only once (pymodbus opens it exclusively), so every link to a unit on that port borrows
the same open port from its `SharedLine`, and the line's `lock` makes their requests take turns
(the bus is half duplex). The port closes when the last unit lets go.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from pymodbus.client import ModbusSerialClient
from pymodbus.framer import FramerType

from rig.config import ModbusRtu
from rig.errors import ConfigError


def _rtu_client(endpoint: ModbusRtu, **kwargs: Any) -> dict[str, Any]:
    """The pymodbus serial-client settings of an RTU endpoint."""
    return {
        "framer": FramerType.RTU,
        "baudrate": endpoint.baudrate,
        "parity": endpoint.parity,
        "stopbits": endpoint.stopbits,
        "bytesize": 8,
        **kwargs,
    }


class SharedLine:
    """One serial port and every unit on it: opened by whichever unit asks first."""

    def __init__(self, endpoint: ModbusRtu) -> None:
        self.lock = threading.RLock()
        self._users = 0
        self._owed_s = 0.0  # a request timed out: how long to wait for its reply before the next
        self.endpoint = endpoint
        self._owner = self._make_owner(endpoint)

    @staticmethod
    def _make_owner(endpoint: ModbusRtu) -> ModbusSerialClient:
        # this client only opens and closes the port; the units' own clients borrow `socket`
        return ModbusSerialClient(endpoint.port, **_rtu_client(endpoint, timeout=1.0, retries=0))

    @property
    def idle(self) -> bool:
        """Whether no unit holds the port now."""
        with self.lock:
            return self._users == 0

    def reconfigure(self, endpoint: ModbusRtu) -> None:
        """Take other line settings (only while idle: a recycled port name, a new adapter)."""
        with self.lock:
            if self._users:
                raise ConfigError(f"serial port {self.endpoint.port} is in use")
            self._owner.close()
            self.endpoint = endpoint
            self._owner = self._make_owner(endpoint)

    def acquire(self) -> Any:
        """The open port (opened for the first unit), or None when it cannot be opened."""
        with self.lock:
            if self._owner.socket is None and not self._owner.connect():
                return None
            self._users += 1
            return self._owner.socket

    def release(self) -> None:
        """One unit fewer; the port closes with the last.

        Raises:
            RuntimeError: more releases than acquires (a caller bug: the count would go
                negative and the next unit's acquire would not count, so the port would close
                under it).
        """
        with self.lock:
            if self._users == 0:
                raise RuntimeError(f"serial port {self.endpoint.port} released more than acquired")
            self._users -= 1
            if self._users == 0:
                self._owner.close()

    def owe_reply(self, wait_s: float) -> None:
        """Note that a request went unanswered: its reply may still come, up to `wait_s` late."""
        with self.lock:
            self._owed_s = max(self._owed_s, wait_s)

    def settle(self) -> int:
        """Before the next request, wait out a reply still owed and drop it; returns bytes dropped.

        RTU replies carry no transaction id, and two reads of the same count are alike: a reply
        that arrives after its request timed out would answer the next request. So after a
        timeout the line is listened to for one reply timeout, and whatever comes is dropped.
        Call with `lock` held, so no other unit's request goes out meanwhile.
        """
        with self.lock:
            wait_s, self._owed_s = self._owed_s, 0.0
            port = self._owner.socket
            if port is None:
                return 0
            dropped = 0
            deadline = time.monotonic() + wait_s
            while True:
                waiting = port.in_waiting
                if waiting:
                    dropped += len(port.read(waiting))
                elif time.monotonic() >= deadline:
                    return dropped
                else:
                    time.sleep(0.002)


_LINES: dict[str, SharedLine] = {}
_LINES_LOCK = threading.Lock()


def shared_line(endpoint: ModbusRtu) -> SharedLine:
    """The line for this port, created on first use.

    Raises:
        ConfigError: a unit already on this port uses other line settings.
    """
    # one device may have several names (/dev/serial/by-id/... is a link to /dev/ttyUSB1): key
    # on the device itself, or a second name would try to open the port again and fail
    key = os.path.realpath(endpoint.port)
    with _LINES_LOCK:
        line = _LINES.get(key)
        if line is None:
            line = _LINES[key] = SharedLine(endpoint)
        elif _settings(line.endpoint) != _settings(endpoint):
            if not line.idle:
                raise ConfigError(
                    f"two Modbus units on serial port {endpoint.port} ask for different line "
                    f"settings: {_settings(line.endpoint)} and {_settings(endpoint)}"
                )
            line.reconfigure(endpoint)
        elif line.idle and line.endpoint.port != endpoint.port:
            line.reconfigure(endpoint)  # same device, another name: open it by the newest
        return line


def _settings(endpoint: ModbusRtu) -> str:
    return f"{endpoint.baudrate} baud 8{endpoint.parity}{endpoint.stopbits}"


class LineClient(ModbusSerialClient):
    """pymodbus's RTU client on a shared line: connect/close borrow and give back the port."""

    def __init__(self, line: SharedLine, **kwargs: Any) -> None:
        super().__init__(line.endpoint.port, **_rtu_client(line.endpoint, **kwargs))
        self._line = line

    def connect(self) -> bool:
        """Borrow the line's open port (opening it if this is the first unit)."""
        if self.socket is None:
            self.socket = self._line.acquire()
        return self.socket is not None

    def close(self) -> None:
        """Give the port back (it closes with the last unit on the line)."""
        if self.socket is not None:
            self.socket = None
            self._line.release()
