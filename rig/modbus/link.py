"""Modbus register transport (with `rig.modbus.line`, the only user of the pymodbus client).

A `ModbusRegisterLink` reads and writes holding registers and coils of one unit over Modbus TCP
or RTU, with a reply timeout and an explicit retry count. pymodbus reports device errors as
values (`rr.isError()`) and link problems as its own exceptions; both are turned into the rig's
error tree here, so no driver ever checks a pymodbus result:

- an exception response from the device (illegal address, device failure, busy, ...)
  → `DeviceFault(code=exception_code)`; code 6 (busy) is retried, the others are not;
- no (complete) reply in time → `DeviceTimeout`; a reply that cannot be decoded or a closed
  connection → `TransportError`; both are retried on a fresh connection;
- a port that refuses the connection or does not exist → `TransportError` at once;
- a reply whose function code or echoed address is not this request's → `TransportError`,
  retried.

RTU replies carry no transaction id, and a read reply not even its address: two reads of the
same count on one unit cannot be told apart, so no check on the reply could stop a late reply
from answering the next request. Instead, after a `DeviceTimeout` on RTU the line owes a reply:
before the next request on it (the retry, or any unit's next request) the link holds the line
and listens for one reply timeout, dropping whatever arrives (`SharedLine.settle`). A reply
later than that (more than two timeouts plus the backoff after its request) can still cross.

Over RTU, bytes that never make a valid frame (a CRC error, line noise) are a `TransportError`
("garbled"), silence a `DeviceTimeout`. Several units on one serial line (an RS-485 bus: a
drive and an LED controller on the same adapter) share one open port, and their requests take
turns on it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from rig.config import ModbusRtu, ModbusTcp
from rig.errors import ConfigError, DeviceFault, DeviceTimeout, NotConnected, TransportError
from rig.modbus.line import LineClient, SharedLine, shared_line
from rig.retry import with_retries

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Modbus exception codes and what they mean (names as in the Modbus application protocol).
EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
DEVICE_BUSY = 6

# Function codes the link sends; a reply must carry the same one (or it with bit 7 set).
READ_COILS, READ_HOLDING, WRITE_COIL, WRITE_REGISTER = 0x01, 0x03, 0x05, 0x06
WRITE_COILS, WRITE_REGISTERS, DEVICE_INFORMATION = 0x0F, 0x10, 0x2B

#: Most registers a single read (0x03) may ask for, and a single write (0x10) may carry.
MAX_READ_REGISTERS = 125
MAX_WRITE_REGISTERS = 123


class _DeviceBusy(DeviceFault):
    """Exception code 6: the device asks to be asked again later (worth a retry)."""


def describe_endpoint(endpoint: ModbusTcp | ModbusRtu) -> str:
    """A short human-readable endpoint, e.g. `tcp://127.0.0.1:5020` or `rtu:///dev/ttyUSB0`."""
    if isinstance(endpoint, ModbusTcp):
        return f"tcp://{endpoint.host}:{endpoint.port}"
    return f"rtu://{endpoint.port}?baudrate={endpoint.baudrate}"


class ModbusRegisterLink:
    """Holding registers and coils of one Modbus unit, with timeouts and retries."""

    def __init__(
        self,
        endpoint: ModbusTcp | ModbusRtu,
        *,
        unit_id: int,
        timeout_s: float,
        retries: int,
        name: str = "modbus",
        backoff_s: float = 0.02,
    ) -> None:
        """Talk to `unit_id` at `endpoint`.

        Raises:
            ConfigError: unit 0 on a serial line: the broadcast address, which every unit
                obeys and none answers (MODBUS over Serial Line V1.02, 2.1), so no read or
                write could ever be confirmed.
        """
        if isinstance(endpoint, ModbusRtu) and unit_id == 0:
            raise ConfigError(
                f"{name}: unit 0 on {endpoint.port} is the Modbus broadcast address: every unit "
                "on the line obeys it and none answers; give the device's own unit id (1..247)"
            )
        self.endpoint = endpoint
        self.unit_id = unit_id
        self.timeout_s = timeout_s
        self.retries = retries
        self.name = name
        self.backoff_s = backoff_s
        self._client: ModbusTcpClient | ModbusSerialClient | None = None
        self._line: SharedLine | None = None
        self._received = 0  # bytes that arrived during the current attempt

    @property
    def description(self) -> str:
        """Endpoint and unit, for messages and identities."""
        return f"{describe_endpoint(self.endpoint)} unit {self.unit_id}"

    @property
    def is_open(self) -> bool:
        """Whether `open()` succeeded and `close()` has not been called since."""
        return self._client is not None

    def open(self) -> None:
        """Connect to the endpoint.

        Raises:
            TransportError: the connection is refused, or the serial port cannot be opened.
            ConfigError: another unit on the same serial port uses other line settings.
        """
        if self._client is not None:
            return
        client = self._make_client()
        if not client.connect():
            client.close()
            raise TransportError(f"{self.name}: cannot connect to {self.description}")
        self._client = client

    def close(self) -> None:
        """Disconnect (idempotent)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> ModbusRegisterLink:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ register access
    def read_holding(self, address: int, count: int) -> list[int]:
        """Read `count` holding registers (function 0x03) starting at `address`.

        Raises:
            NotConnected: the link is not open.
            DeviceFault: the device answered with a Modbus exception (`code` is its number).
            DeviceTimeout: no reply within the timeout, after every retry.
            TransportError: an undecodable reply or a lost connection, after every retry.
        """
        _check_span(address, count, MAX_READ_REGISTERS)
        response = self._execute(
            f"read {count} holding register(s) at {address}",
            READ_HOLDING,
            lambda c: c.read_holding_registers(address, count=count, device_id=self.unit_id),
        )
        registers = list(response.registers)
        if len(registers) != count:
            raise TransportError(
                f"{self.name}: asked {self.description} for {count} registers at {address}, "
                f"got {len(registers)}"
            )
        return registers

    def write_registers(self, address: int, values: Sequence[int]) -> None:
        """Write holding registers: one value with 0x06, several in one 0x10 request.

        Raises:
            ValueError: a value is not a 16-bit unsigned integer (a caller bug, nothing sent).
            NotConnected: the link is not open.
            DeviceFault: the device answered with a Modbus exception.
            DeviceTimeout: no reply within the timeout, after every retry.
            TransportError: an undecodable reply or a lost connection, after every retry.
        """
        words = [int(v) for v in values]
        _check_span(address, len(words), MAX_WRITE_REGISTERS)
        bad = [v for v in words if not 0 <= v <= 0xFFFF]
        if bad:
            raise ValueError(f"register values must be 0..65535, got {bad}")
        if len(words) == 1:
            self._execute(
                f"write register {address} = {words[0]}",
                WRITE_REGISTER,
                lambda c: c.write_register(address, words[0], device_id=self.unit_id),
                address=address,
            )
        else:
            self._execute(
                f"write {len(words)} registers at {address}",
                WRITE_REGISTERS,
                lambda c: c.write_registers(address, words, device_id=self.unit_id),
                address=address,
            )

    def read_coils(self, address: int, count: int) -> list[bool]:
        """Read `count` coils (function 0x01) starting at `address`.

        Raises:
            NotConnected: the link is not open.
            DeviceFault: the device answered with a Modbus exception.
            DeviceTimeout: no reply within the timeout, after every retry.
            TransportError: an undecodable reply or a lost connection, after every retry.
        """
        _check_span(address, count, 2000)
        response = self._execute(
            f"read {count} coil(s) at {address}",
            READ_COILS,
            lambda c: c.read_coils(address, count=count, device_id=self.unit_id),
        )
        # the reply is padded to whole bytes: keep only what was asked for
        bits = [bool(b) for b in response.bits]
        if len(bits) < count:
            raise TransportError(
                f"{self.name}: asked {self.description} for {count} coils at {address}, "
                f"got {len(bits)}"
            )
        return bits[:count]

    def write_coil(self, address: int, value: bool) -> None:
        """Switch one coil (function 0x05).

        Raises:
            NotConnected: the link is not open.
            DeviceFault: the device answered with a Modbus exception.
            DeviceTimeout: no reply within the timeout, after every retry.
            TransportError: an undecodable reply or a lost connection, after every retry.
        """
        self._execute(
            f"write coil {address} = {value}",
            WRITE_COIL,
            lambda c: c.write_coil(address, bool(value), device_id=self.unit_id),
            address=address,
        )

    def write_coils(self, address: int, values: Sequence[bool]) -> None:
        """Switch consecutive coils: one with 0x05, several in one 0x0F request.

        Raises:
            NotConnected: the link is not open.
            DeviceFault: the device answered with a Modbus exception.
            DeviceTimeout: no reply within the timeout, after every retry.
            TransportError: an undecodable reply or a lost connection, after every retry.
        """
        bits = [bool(v) for v in values]
        _check_span(address, len(bits), 1968)
        if len(bits) == 1:
            self.write_coil(address, bits[0])
            return
        self._execute(
            f"write {len(bits)} coils at {address}",
            WRITE_COILS,
            lambda c: c.write_coils(address, bits, device_id=self.unit_id),
            address=address,
        )

    def read_identification(self) -> dict[str, str]:
        """Read the basic device identification (function 0x2B/0x0E): vendor, product, revision.

        Raises:
            NotConnected: the link is not open.
            DeviceFault: the device does not support it (usually exception code 1).
            DeviceTimeout: no reply within the timeout, after every retry.
            TransportError: an undecodable reply or a lost connection, after every retry.
        """
        response = self._execute(
            "read device identification",
            DEVICE_INFORMATION,
            lambda c: c.read_device_information(device_id=self.unit_id),
        )
        names = {0: "vendor", 1: "product_code", 2: "revision"}
        info: dict[int, Any] = dict(getattr(response, "information", {}) or {})
        result: dict[str, str] = {}
        for key, label in names.items():
            value = info.get(key)
            if isinstance(value, bytes):
                result[label] = value.decode("ascii", errors="replace")
            elif value is not None:
                result[label] = str(value)
        return result

    # ------------------------------------------------------------------ internals
    def _make_client(self) -> ModbusTcpClient | ModbusSerialClient:
        # pymodbus's own retries resend with the same transaction id and give up with an
        # exception we cannot tell from a framing error; retrying here instead means every
        # retry gets a fresh connection, logged, with the rig's backoff.
        if isinstance(self.endpoint, ModbusTcp):
            return ModbusTcpClient(
                self.endpoint.host,
                port=self.endpoint.port,
                timeout=self.timeout_s,
                retries=0,
                name=self.name,
            )
        self._line = shared_line(self.endpoint)
        return LineClient(
            self._line,
            timeout=self.timeout_s,
            retries=0,
            name=self.name,
            trace_packet=self._trace_packet,
        )

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        # over RTU pymodbus drops a frame with a bad CRC and waits on until its timeout, as if
        # nothing had come; counting what arrived tells line noise apart from silence (over
        # TCP pymodbus tells them apart itself)
        if not sending:
            self._received = max(self._received, len(data))
        return data

    def _execute(
        self, what: str, function_code: int, request: Callable[[Any], Any], **echo: int
    ) -> Any:
        if self._client is None:
            raise NotConnected(f"{self.name}: link to {self.description} is not open")
        return with_retries(
            lambda: self._attempt(what, function_code, request, echo),
            attempts=self.retries + 1,
            backoff_s=self.backoff_s,
            retry_on=(DeviceTimeout, TransportError, _DeviceBusy),
            on_retry=self._on_retry,
        )

    def _attempt(
        self, what: str, function_code: int, request: Callable[[Any], Any], echo: dict[str, int]
    ) -> Any:
        client = self._client
        if client is None:
            raise NotConnected(f"{self.name}: link to {self.description} is not open")
        # units sharing a serial line take turns; a TCP link has its own connection
        with self._line.lock if self._line is not None else contextlib.nullcontext():
            if self._line is not None:
                # a retry after a timeout finds the port given back (`_on_retry`): borrow it
                # again first, or the overdue reply would wait unread for the request below
                if not client.connect():
                    raise TransportError(f"{self.name}: cannot connect to {self.description}")
                dropped = self._line.settle()
                if dropped:
                    log.info("%s: dropped %d stale byte(s) before %s", self.name, dropped, what)
            self._received = 0
            try:
                response = self._send(what, request, client)
            except DeviceTimeout:
                if self._line is not None:  # its reply may still come: wait it out next time
                    self._line.owe_reply(self.timeout_s)
                raise
        if response.isError():
            code = getattr(response, "exception_code", None)
            if code is None:
                raise TransportError(f"{self.name}: {what}: error reply {response}")
            meaning = EXCEPTION_NAMES.get(int(code), "unknown exception")
            error = _DeviceBusy if code == DEVICE_BUSY else DeviceFault
            raise error(
                f"{self.name}: {what}: {self.description} answered Modbus exception "
                f"{code} ({meaning})",
                code=int(code),
            )
        _check_reply(self.name, what, response, function_code, echo)
        return response

    def _send(self, what: str, request: Callable[[Any], Any], client: Any) -> Any:
        """One request and its reply, with pymodbus's exceptions turned into the rig's."""
        try:
            response = request(client)
        except ConnectionException as exc:
            raise TransportError(
                f"{self.name}: {what}: connection to {self.description} lost or refused"
            ) from exc
        except ModbusIOException as exc:
            # pymodbus raises this both for silence and for a frame it could not decode;
            # only the former says "no response" (checked on the message, the only way to
            # tell them apart in pymodbus 3.x)
            if "no response" not in str(exc).lower():
                raise TransportError(f"{self.name}: {what}: bad reply: {exc}") from exc
            if self._received:
                raise TransportError(
                    f"{self.name}: {what}: garbled reply from {self.description} "
                    f"({self._received} bytes, no valid frame)"
                ) from exc
            raise DeviceTimeout(
                f"{self.name}: {what}: no reply from {self.description} within {self.timeout_s:g} s"
            ) from exc
        except ModbusException as exc:
            raise TransportError(f"{self.name}: {what}: {exc}") from exc
        except OSError as exc:
            raise TransportError(f"{self.name}: {what}: {exc}") from exc
        if response is None:
            raise DeviceTimeout(f"{self.name}: {what}: no reply from {self.description}")
        return response

    def _on_retry(self, attempt: int, exc: BaseException) -> None:
        # After silence or garbage the socket may still hold a stale (late) reply; a fresh
        # connection is the reliable way to resynchronise, and costs little.
        if isinstance(exc, TransportError) and self._client is not None:
            self._client.close()
        log.info("%s: retry %d after: %s", self.name, attempt, exc)


def _check_reply(
    name: str, what: str, response: Any, function_code: int, echo: dict[str, int]
) -> None:
    """A reply must answer this request: same function, and a write echoes its address.

    Raises:
        TransportError: the reply belongs to another request (another function, or a write
            to another address). A late read reply of the same length passes this check:
            `SharedLine.settle` keeps such replies off the line instead.
    """
    got = int(getattr(response, "function_code", function_code))
    if got != function_code:
        raise TransportError(
            f"{name}: {what}: the reply is for function 0x{got:02x}, not 0x{function_code:02x} "
            "(a late reply to an earlier request?)"
        )
    for field, expected in echo.items():
        value = getattr(response, field, expected)
        if value != expected:
            raise TransportError(
                f"{name}: {what}: the reply echoes {field} {value}, not {expected} "
                "(a late reply to an earlier request?)"
            )


def _check_span(address: int, count: int, most: int) -> None:
    if not 0 <= address <= 0xFFFF:
        raise ValueError(f"Modbus address must be 0..65535, got {address}")
    if not 1 <= count <= most:
        raise ValueError(f"count must be 1..{most}, got {count}")
    if address + count - 1 > 0xFFFF:
        raise ValueError(f"addresses {address}..{address + count - 1} run past 65535")
