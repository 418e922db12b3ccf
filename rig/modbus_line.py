"""Modbus RTU serial lines shared by several units (an RS-485 bus), for `rig.modbus_link`.

RS-485 is one master talking to many units over one pair of wires: a turntable drive and an
LED controller often hang on the same USB adapter with different unit ids. The adapter can be
opened only once (pymodbus opens it exclusively), so every link to a unit on that port borrows
the same open port from its `SharedLine`, and the line's `lock` makes their requests take turns
(the bus is half duplex). The port closes when the last unit lets go.
"""

from __future__ import annotations

import threading
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
        """One unit fewer; the port closes with the last."""
        with self.lock:
            self._users = max(0, self._users - 1)
            if self._users == 0:
                self._owner.close()


_LINES: dict[str, SharedLine] = {}
_LINES_LOCK = threading.Lock()


def shared_line(endpoint: ModbusRtu) -> SharedLine:
    """The line for this port, created on first use.

    Raises:
        ConfigError: a unit already on this port uses other line settings.
    """
    with _LINES_LOCK:
        line = _LINES.get(endpoint.port)
        if line is None:
            line = _LINES[endpoint.port] = SharedLine(endpoint)
        elif line.endpoint != endpoint:
            if not line.idle:
                raise ConfigError(
                    f"two Modbus units on serial port {endpoint.port} ask for different line "
                    f"settings: {_settings(line.endpoint)} and {_settings(endpoint)}"
                )
            line.reconfigure(endpoint)
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
