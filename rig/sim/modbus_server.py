"""The Modbus emulator base: a pymodbus server, over TCP on 127.0.0.1 or RTU on a pty, injecting faults.

Each emulator is a real pymodbus server (a `SimDevice` datastore whose `action` hook runs the
device model) in a background thread with its own event loop, so the real driver connects to
`.endpoint` exactly as it would to hardware: a `ModbusTcp` loopback port, or (framing `rtu`) a
`ModbusRtu` pseudo-terminal path on a `SerialBus`, which several emulators may share as units on
one RS-485 line. The device models live in `rig.sim.modbus_drive` (turntable drive) and
`rig.sim.modbus_lights` (lightbox controller). Faults are injected per request, in a request
handler that replaces pymodbus's own:

- `modbus_exception` (or `error`): an exception response with the rule's code (default 4);
- `lost_reply`: the request is carried out, the reply never sent;
- `late_reply`: carried out, answered after `late_reply_s` (by default 1.5 driver timeouts:
  just past the timeout, as a slow unit answers);
- `garbage`: carried out, answered with bytes no decoder accepts (TCP: a frame whose PDU is
  function 0; RTU: the real reply with a broken CRC, as line noise leaves it);
- `disconnect`: TCP: the connection is closed without an answer (new ones are accepted); RTU
  has no connection to close: the line goes dead for the request (not carried out, no reply);
- `alarm` (turntable only): the drive latches its fault bit and stops.

Over RTU an emulator ignores requests for other unit ids, as a device on a shared bus must, and
carries out a broadcast write (unit 0) without answering it; over TCP it answers units 0 and 0xFF
as its own. Requests the Modbus specification refuses before any register is read (a function
the device lacks, a quantity out of range, a single-coil value other than 0x0000/0xFF00) get
exceptions 1 and 3 as the specification says (rig.sim.modbus_frames), not pymodbus's own answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal, Self

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.pdu.mei_message import ReadDeviceInformationResponse
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import SimDevice

from rig.config import (
    EmulatorConfig,
    FaultKind,
    FaultRule,
    ModbusLightboxConfig,
    ModbusRtu,
    ModbusTcp,
    ModbusTurntableConfig,
)
from rig.errors import TransportError
from rig.modbus.link import (
    DEVICE_INFORMATION,
    WRITE_COIL,
    WRITE_COILS,
    WRITE_REGISTER,
    WRITE_REGISTERS,
)
from rig.sim.clock import SimClock
from rig.sim.faults import FaultInjector
from rig.sim.modbus_bus import SerialBus
from rig.sim.modbus_frames import (
    BROADCAST_UNIT,
    GATEWAY_TARGET_FAILED,
    TCP_SELF_UNIT,
    request_exception,
    split_frame,
)

Framing = Literal["tcp", "rtu"]

#: the emulated serial line's speed (a pty ignores it; drivers are told it all the same)
RTU_BAUDRATE = 19200

# Modbus function codes served
WRITE_FUNCTIONS = frozenset({WRITE_COIL, WRITE_REGISTER, WRITE_COILS, WRITE_REGISTERS})


@dataclass(frozen=True)
class ModbusRequest:
    """One request as the emulator received it, and the fault it drew (if any)."""

    function_code: int
    address: int | None
    count: int
    values: tuple[int, ...]
    fault: FaultKind | None

    @property
    def is_write(self) -> bool:
        """Whether the request writes registers or coils."""
        return self.function_code in WRITE_FUNCTIONS


class _FaultyRequestHandler(ServerRequestHandler):
    """pymodbus's per-connection handler, with the emulator's faults applied to each request."""

    def callback_data(self, data: bytes, addr: tuple[Any, ...] | None = None) -> int:
        """Answer what the Modbus specification answers before pymodbus decodes the request.

        pymodbus answers a quantity out of range, or an unknown function code, with function 0
        and exception 1, accepts any single-coil value as ON, and over RTU drops an unknown
        function code unanswered; a Modbus server answers exceptions 3 and 1 with the
        request's own function code (rig.sim.modbus_frames).
        """
        emulator: ModbusEmulator = self.server.emulator
        frame = split_frame(data, emulator.framing)
        if frame is None:
            return super().callback_data(data, addr)
        transaction, unit, pdu = frame
        code = request_exception(pdu, emulator.served_functions)
        if code is None:
            return super().callback_data(data, addr)
        if emulator.answers(unit):
            response = ExceptionResponse(
                pdu[0] & 0x7F, exception_code=code, device_id=unit, transaction=transaction
            )
            self.server_send(response, addr)
        return len(data)

    async def handle_request(self) -> None:
        # pymodbus overwrites last_pdu when the next request arrives; a late reply must still
        # answer the request it belongs to, so take both now.
        pdu, addr = self.last_pdu, self.last_addr
        if pdu is None:
            return
        emulator: ModbusEmulator = self.server.emulator
        rtu = emulator.framing == "rtu"
        unit = pdu.dev_id
        if rtu and unit == BROADCAST_UNIT:
            await self._broadcast(pdu, emulator)
            return
        if rtu and unit != emulator.unit_id:
            return  # another unit on the bus is addressed: stay silent
        fault = emulator.draw_fault(pdu)
        kind = fault.kind if fault is not None else None
        if kind == "disconnect":
            if not rtu:  # a serial line has no connection to drop; it just goes quiet
                self.close()
            return
        if not emulator.answers(unit):
            # TCP, another unit id: what a gateway with no such unit behind it answers
            response: ModbusPDU = ExceptionResponse(pdu.function_code, GATEWAY_TARGET_FAILED)
        elif kind in ("modbus_exception", "error"):
            code = fault.code if fault is not None and fault.code else ExcCodes.DEVICE_FAILURE
            response = ExceptionResponse(pdu.function_code, int(code))
        else:
            if kind == "alarm":
                emulator.on_alarm(fault.code if fault is not None else None)
            pdu.dev_id = emulator.unit_id  # TCP units 0 and 0xFF mean this device
            response = await self._execute(pdu, emulator)
        response.transaction_id = pdu.transaction_id
        response.dev_id = unit
        if kind == "lost_reply":
            return
        delay = emulator.late_reply_s if kind == "late_reply" else emulator.next_reply_delay()
        if delay:
            await asyncio.sleep(delay)
        if kind == "garbage":
            self.send(emulator.garbage_frame(pdu, self.framer.buildFrame(response)))
            return
        self.server_send(response, addr)

    async def _broadcast(self, pdu: ModbusPDU, emulator: ModbusEmulator) -> None:
        """Serial Line 2.1: every unit carries out a broadcast write; none answers anything."""
        fault = emulator.draw_fault(pdu)
        if pdu.function_code not in WRITE_FUNCTIONS:
            return  # "The broadcast requests are necessarily writing commands"
        if fault is not None and fault.kind in ("disconnect", "modbus_exception", "error"):
            return  # the unit did not hear it, or failed to carry it out: nobody learns which
        pdu.dev_id = emulator.unit_id
        await self._execute(pdu, emulator)

    async def _execute(self, pdu: ModbusPDU, emulator: ModbusEmulator) -> ModbusPDU:
        refused = emulator.check_request(pdu)
        if refused is not None:
            return ExceptionResponse(pdu.function_code, refused)
        if pdu.function_code == DEVICE_INFORMATION:
            # pymodbus answers this from a process-wide singleton; two emulators in one
            # process must each tell their own identity, so answer it here.
            return ReadDeviceInformationResponse(
                read_code=getattr(pdu, "read_code", None), information=emulator.identity()
            )
        try:
            return await pdu.datastore_update(self.server.context, pdu.dev_id)
        except Exception:  # a model bug must look like a device failure, not kill the server
            emulator.internal_errors += 1
            return ExceptionResponse(pdu.function_code, ExcCodes.DEVICE_FAILURE)


class _TcpServer(ModbusTcpServer):
    """A ModbusTcpServer whose connections use the fault-injecting handler."""

    def __init__(self, device: SimDevice, emulator: ModbusEmulator, **kwargs: Any) -> None:
        self.emulator = emulator
        super().__init__(device, **kwargs)

    def callback_new_connection(self) -> ServerRequestHandler:
        """Handle a new client connection with the fault-injecting handler."""
        return _FaultyRequestHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class _RtuServer(ModbusSerialServer):
    """A ModbusSerialServer (RTU framing) whose line uses the fault-injecting handler."""

    def __init__(self, device: SimDevice, emulator: ModbusEmulator, **kwargs: Any) -> None:
        self.emulator = emulator
        super().__init__(device, **kwargs)

    def callback_new_connection(self) -> ServerRequestHandler:
        """Serve the serial line with the fault-injecting handler."""
        return _FaultyRequestHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class ModbusEmulator:
    """Base: a pymodbus server (TCP on a free loopback port, or RTU on a pty) in a daemon thread."""

    #: function codes the device implements; others are answered with exception 1
    served_functions: frozenset[int] = frozenset()
    allowed_faults: tuple[FaultKind, ...] = (
        "lost_reply",
        "late_reply",
        "garbage",
        "error",
        "modbus_exception",
        "disconnect",
    )

    def __init__(
        self,
        config: ModbusTurntableConfig | ModbusLightboxConfig,
        *,
        name: str,
        clock: SimClock | None,
        faults: FaultInjector | None,
        late_reply_s: float | None,
        framing: Framing | None = None,
        bus: SerialBus | None = None,
    ) -> None:
        """Serve `config`'s unit; faults and framing default to config.emulate's.

        Late replies default to 1.5 times the driver's timeout. An RTU emulator joins `bus` (a line
        shared with other units) or, without one, gets a line of its own.
        """
        self.name = name
        emulate = config.emulate
        self.framing: Framing = framing or (emulate.framing if emulate is not None else "tcp")
        if bus is not None and self.framing != "rtu":
            raise ValueError(f"{name} emulator: a serial bus needs framing 'rtu'")
        self._bus = bus
        self._own_bus: SerialBus | None = None
        self._device_port: str | None = None
        self.unit_id = config.unit_id
        self.clock = clock or SimClock(0.0)
        self.faults = faults or _faults_from(config.emulate)
        self.late_reply_s = late_reply_s if late_reply_s is not None else 1.5 * config.timeout_s
        self._reply_delays: deque[float] = deque()
        self.internal_errors = 0
        self._lock = threading.RLock()
        self._requests: list[ModbusRequest] = []
        self._random = random.Random(0)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._port: int | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def endpoint(self) -> ModbusTcp | ModbusRtu:
        """Where the driver connects (only while running): a loopback port or a pty path.

        Raises:
            TransportError: the emulator is not running.
        """
        if self.framing == "rtu":
            bus = self._bus or self._own_bus
            if bus is None or self._device_port is None:
                raise TransportError(f"{self.name} emulator is not running")
            # a pty carries no parity bit (Linux refuses to set PARENB twice on one): 8N1
            return ModbusRtu(port=bus.port, baudrate=RTU_BAUDRATE, parity="N", stopbits=1)
        if self._port is None:
            raise TransportError(f"{self.name} emulator is not running")
        return ModbusTcp(host="127.0.0.1", port=self._port)

    def start(self) -> Self:
        """Start serving; returns self once the port is listening.

        Raises:
            TransportError: the server could not start.
        """
        if self._thread is not None:
            return self
        if self.framing == "rtu":
            if self._bus is None:
                self._own_bus = SerialBus(f"rtu-{self.name}").start()
            self._device_port = (self._bus or self._own_bus).attach()  # type: ignore[union-attr]
        self._ready.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"emu-modbus-{self.name}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout=10.0) or self._loop is None:
            self.stop()
            raise TransportError(
                f"{self.name} emulator failed to start: {self._startup_error}"
            ) from self._startup_error
        return self

    def stop(self) -> None:
        """Close every connection and the listener, and end the thread (idempotent)."""
        loop, event, thread = self._loop, self._stop_event, self._thread
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(event.set)
        if thread is not None:
            thread.join(timeout=5.0)
        self._thread = self._loop = self._stop_event = None
        self._port = None
        if self._device_port is not None and self._bus is not None:
            self._bus.detach(self._device_port)
        if self._own_bus is not None:
            self._own_bus.stop()
        self._own_bus = self._device_port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start(); a thread must not die silently
            self._startup_error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        server: _TcpServer | _RtuServer
        if self.framing == "rtu":
            server = _RtuServer(
                self.build_device(),
                self,
                port=self._device_port or "",
                baudrate=RTU_BAUDRATE,
                parity="N",
                stopbits=1,
                ignore_missing_devices=True,  # other units share the line
            )
            await server.serve_forever(background=True)
        else:
            server = _TcpServer(
                self.build_device(),
                self,
                address=("127.0.0.1", 0),  # port 0: the OS picks a free one
            )
            await server.serve_forever(background=True)
            sockets: list[Any] = list(getattr(server.transport, "sockets", None) or [])
            self._port = int(sockets[0].getsockname()[1])
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            await server.shutdown()

    # ------------------------------------------------------------------ faults and log
    def draw_fault(self, pdu: ModbusPDU) -> FaultRule | None:
        """Count one request, log it, and return the fault to inject for it (if any)."""
        fault = self.faults.next_fault(self.allowed_faults)
        values = tuple(int(v) for v in (pdu.registers or pdu.bits or ()))
        with self._lock:
            self._requests.append(
                ModbusRequest(
                    function_code=pdu.function_code,
                    address=getattr(pdu, "address", None),
                    count=int(getattr(pdu, "count", 0) or len(values)),
                    values=values,
                    fault=fault.kind if fault is not None else None,
                )
            )
        return fault

    def delay_replies(self, *seconds: float) -> None:
        """Answer the next requests (one delay each, in order) that late: a unit whose reply time varies."""
        with self._lock:
            self._reply_delays.extend(seconds)

    def next_reply_delay(self) -> float:
        """How long to hold the reply to this request (0: none), from `delay_replies`."""
        with self._lock:
            return self._reply_delays.popleft() if self._reply_delays else 0.0

    def requests(self) -> list[ModbusRequest]:
        """Every request received so far (a copy)."""
        with self._lock:
            return list(self._requests)

    def writes(self) -> list[ModbusRequest]:
        """Every write request received so far."""
        return [r for r in self.requests() if r.is_write]

    def garbage_frame(self, pdu: ModbusPDU, reply: bytes) -> bytes:
        """Bytes in place of the reply frame `reply` that no decoder accepts.

        TCP: a well-framed MBAP reply whose PDU is function code 0. RTU: the reply with its CRC
        broken, as noise on the line leaves it.
        """
        if self.framing == "rtu":
            return reply[:-2] + bytes(b ^ 0xA5 for b in reply[-2:])
        noise = bytes(self._random.randrange(256) for _ in range(4))
        payload = b"\x00" + noise
        return (
            pdu.transaction_id.to_bytes(2, "big")
            + b"\x00\x00"
            + (len(payload) + 1).to_bytes(2, "big")
            + pdu.dev_id.to_bytes(1, "big")
            + payload
        )

    def on_alarm(self, code: int | None) -> None:
        """Hook: an injected `alarm` fault (only devices with a fault state use it)."""

    # ------------------------------------------------------------------ device model hooks
    def build_device(self) -> SimDevice:
        """The pymodbus datastore for this device."""
        raise NotImplementedError

    def identity(self) -> dict[int, bytes]:
        """Basic device identification objects: 0 vendor, 1 product code, 2 revision."""
        return {0: b"coinrig-sim", 1: self.name.upper().encode("ascii"), 2: b"1.0"}

    def check_request(self, pdu: ModbusPDU) -> ExcCodes | None:
        """Refuse a request before it touches the datastore (function or address not served)."""
        return None

    def answers(self, unit: int) -> bool:
        """Whether a request for `unit` is this device's to answer.

        RTU: its own unit id only (unit 0 is a broadcast: carried out, never answered). TCP:
        also units 0 and 0xFF, which address a Modbus/TCP server itself (Implementation Guide
        V1.0b, p. 23).
        """
        if unit == self.unit_id:
            return True
        return self.framing == "tcp" and unit in (BROADCAST_UNIT, TCP_SELF_UNIT)


def request_span(pdu: ModbusPDU) -> tuple[int, int]:
    """(address, count) of a register or coil request."""
    address = int(getattr(pdu, "address", 0))
    if pdu.function_code in (WRITE_REGISTER, WRITE_REGISTERS):
        return address, len(pdu.registers)
    if pdu.function_code in (WRITE_COIL, WRITE_COILS):
        return address, int(pdu.count) if pdu.function_code == WRITE_COILS else 1
    return address, int(pdu.count)


def _faults_from(emulate: EmulatorConfig | None) -> FaultInjector:
    if emulate is None:
        return FaultInjector((), seed=0)
    return FaultInjector(emulate.faults, seed=emulate.seed)
