"""Modbus TCP emulators of the turntable drive and the lightbox controller, on 127.0.0.1.

Each emulator is a real pymodbus server (a `SimDevice` datastore whose `action` hook runs the
device model) in a background thread with its own event loop, so the real driver connects to
`.endpoint` exactly as it would to hardware. Faults are injected per request, in a request
handler that replaces pymodbus's own for each connection:

- `modbus_exception` (or `error`): an exception response with the rule's code (default 4);
- `lost_reply`: the request is carried out, the reply never sent;
- `late_reply`: carried out, answered after `late_reply_s` (past the driver's timeout);
- `garbage`: carried out, answered with a frame whose PDU cannot be decoded;
- `disconnect`: the connection is closed without an answer (new connections are accepted);
- `alarm` (turntable only): the drive latches its fault bit and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.pdu.mei_message import ReadDeviceInformationResponse
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from rig.config import (
    FaultKind,
    FaultRule,
    ModbusLightboxConfig,
    ModbusTcp,
    ModbusTurntableConfig,
)
from rig.errors import TransportError
from rig.motion import trapezoid_duration_s
from rig.sim.clock import SimClock
from rig.sim.faults import FaultInjector
from rig.sim.world import LightState, World
from rig.turntable import modbus_codec as codec

# Modbus function codes served
READ_COILS, READ_HOLDING, WRITE_COIL, WRITE_REGISTER = 1, 3, 5, 6
WRITE_COILS, WRITE_REGISTERS, DEVICE_INFO = 15, 16, 0x2B
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

    async def handle_request(self) -> None:
        # pymodbus overwrites last_pdu when the next request arrives; a late reply must still
        # answer the request it belongs to, so take both now.
        pdu, addr = self.last_pdu, self.last_addr
        if pdu is None:
            return
        emulator: ModbusEmulator = self.server.emulator
        fault = emulator.draw_fault(pdu)
        kind = fault.kind if fault is not None else None
        if kind == "disconnect":
            self.close()
            return
        if kind in ("modbus_exception", "error"):
            code = fault.code if fault is not None and fault.code else ExcCodes.DEVICE_FAILURE
            response: ModbusPDU = ExceptionResponse(pdu.function_code, int(code))
        else:
            if kind == "alarm":
                emulator.on_alarm(fault.code if fault is not None else None)
            response = await self._execute(pdu, emulator)
        response.transaction_id = pdu.transaction_id
        response.dev_id = pdu.dev_id
        if kind == "lost_reply":
            return
        if kind == "late_reply":
            await asyncio.sleep(emulator.late_reply_s)
        if kind == "garbage":
            self.send(emulator.garbage_frame(pdu))
            return
        self.server_send(response, addr)

    async def _execute(self, pdu: ModbusPDU, emulator: ModbusEmulator) -> ModbusPDU:
        refused = emulator.check_request(pdu)
        if refused is not None:
            return ExceptionResponse(pdu.function_code, refused)
        if pdu.function_code == DEVICE_INFO:
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


class _EmulatorServer(ModbusTcpServer):
    """A ModbusTcpServer whose connections use the fault-injecting handler."""

    def __init__(self, device: SimDevice, emulator: ModbusEmulator, **kwargs: Any) -> None:
        self.emulator = emulator
        super().__init__(device, **kwargs)

    def callback_new_connection(self) -> ServerRequestHandler:
        """Handle a new client connection with the fault-injecting handler."""
        return _FaultyRequestHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class ModbusEmulator:
    """Base: a pymodbus TCP server on a free loopback port, in a daemon thread."""

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
        *,
        name: str,
        unit_id: int,
        clock: SimClock | None,
        faults: FaultInjector | None,
        late_reply_s: float,
    ) -> None:
        self.name = name
        self.unit_id = unit_id
        self.clock = clock or SimClock(0.0)
        self.faults = faults or FaultInjector()
        self.late_reply_s = late_reply_s
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
    def endpoint(self) -> ModbusTcp:
        """Where the driver connects (only while running).

        Raises:
            TransportError: the emulator is not running.
        """
        if self._port is None:
            raise TransportError(f"{self.name} emulator is not running")
        return ModbusTcp(host="127.0.0.1", port=self._port)

    def start(self) -> ModbusEmulator:
        """Start serving; returns self once the port is listening.

        Raises:
            TransportError: the server could not start.
        """
        if self._thread is not None:
            return self
        self._ready.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"emu-modbus-{self.name}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout=10.0) or self._port is None:
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

    def __enter__(self) -> ModbusEmulator:
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
        server = _EmulatorServer(
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

    def requests(self) -> list[ModbusRequest]:
        """Every request received so far (a copy)."""
        with self._lock:
            return list(self._requests)

    def writes(self) -> list[ModbusRequest]:
        """Every write request received so far."""
        return [r for r in self.requests() if r.is_write]

    def garbage_frame(self, pdu: ModbusPDU) -> bytes:
        """A well-framed MBAP reply whose PDU no decoder understands (function code 0)."""
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


def _span(pdu: ModbusPDU) -> tuple[int, int]:
    """(address, count) of a register or coil request."""
    address = int(getattr(pdu, "address", 0))
    if pdu.function_code in (WRITE_REGISTER, WRITE_REGISTERS):
        return address, len(pdu.registers)
    if pdu.function_code in (WRITE_COIL, WRITE_COILS):
        return address, int(pdu.count) if pdu.function_code == WRITE_COILS else 1
    return address, int(pdu.count)


# ====================================================================== turntable drive


class ModbusTurntableEmulator(ModbusEmulator):
    """An integrated stepper drive: target, speed, enable, status, actual and command registers.

    Writing the target starts a motion timed by `trapezoid_duration_s` and recorded in the
    clock's ledger; the busy bit stays set until the clock's deadline, then the actual position
    reads the target and the world's turntable angle follows.
    """

    allowed_faults = (*ModbusEmulator.allowed_faults, "alarm")

    def __init__(
        self,
        config: ModbusTurntableConfig,
        *,
        world: World | None = None,
        clock: SimClock | None = None,
        faults: FaultInjector | None = None,
        late_reply_s: float | None = None,
    ) -> None:
        super().__init__(
            name="turntable",
            unit_id=config.unit_id,
            clock=clock,
            faults=faults or _faults_from(config.emulate),
            late_reply_s=late_reply_s if late_reply_s is not None else 2.0 * config.timeout_s,
        )
        self.config = config
        self.world = world
        regs = config.registers
        self._size = max(
            regs.target + regs.target_words,
            regs.speed + 1,
            regs.enable + 1,
            regs.status + 1,
            regs.actual + regs.actual_words,
            regs.command + 1,
        )
        start_deg = world.snapshot().turntable_deg if world is not None else 0.0
        self._position = codec.deg_to_steps(start_deg, config.steps_per_deg)
        self._motion: tuple[int, int, float, float] | None = None  # from, to, t0, deadline
        self._enabled = False
        self._fault = False
        self.alarm_code: int | None = None

    def build_device(self) -> SimDevice:
        """Holding registers 0..N; status and actual position are read-only."""
        regs = self.config.registers
        readonly = {regs.status} | set(range(regs.actual, regs.actual + regs.actual_words))
        cells = [
            SimData(address=a, values=0, datatype=DataType.REGISTERS, readonly=a in readonly)
            for a in range(self._size)
        ]
        return SimDevice(id=self.unit_id, simdata=cells, action=self._on_access)

    def identity(self) -> dict[int, bytes]:
        """Vendor, product code and revision of the emulated drive."""
        return {0: b"coinrig-sim", 1: b"SIM-STEPPER-DRIVE", 2: b"1.0"}

    def check_request(self, pdu: ModbusPDU) -> ExcCodes | None:
        """Serve holding registers and device identification only."""
        if pdu.function_code == DEVICE_INFO:
            return None
        if pdu.function_code not in (READ_HOLDING, WRITE_REGISTER, WRITE_REGISTERS):
            return ExcCodes.ILLEGAL_FUNCTION
        return None

    # ------------------------------------------------------------------ state for tests
    def position_deg(self) -> float:
        """The drive's actual position now, in degrees."""
        with self._lock:
            self._settle(self.clock.now())
            return codec.steps_to_deg(self._position, self.config.steps_per_deg)

    @property
    def moving(self) -> bool:
        """Whether a motion is in progress."""
        with self._lock:
            self._settle(self.clock.now())
            return self._motion is not None

    @property
    def faulted(self) -> bool:
        """Whether the drive's fault is latched."""
        with self._lock:
            return self._fault

    def on_alarm(self, code: int | None) -> None:
        """Latch a drive fault (a stall or following error): stop where it is."""
        with self._lock:
            self._settle(self.clock.now())
            self._abort(self.clock.now())
            self._fault = True
            self.alarm_code = code

    # ------------------------------------------------------------------ model
    async def _on_access(
        self,
        function_code: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        with self._lock:
            now = self.clock.now()
            self._settle(now)
            if values is None:
                self._publish(registers, start)
                return None
            words = [int(v) for v in values]
            image = list(registers)
            image[address - start : address - start + len(words)] = words
            result = self._apply_write(address, len(words), image, start, now)
            if result is not None:
                return result
            regs = self.config.registers
            if address <= regs.command < address + len(words):
                # the command register is a trigger: it reads 0 once the command is taken
                cast(list[int], values)[regs.command - address] = 0
            self._publish(registers, start)
            return None

    def _apply_write(
        self, address: int, count: int, image: list[int], start: int, now: float
    ) -> ExcCodes | None:
        regs = self.config.registers

        def touched(first: int, n: int = 1) -> bool:
            return first < address + count and address < first + n

        if touched(regs.enable):
            self._enabled = image[regs.enable - start] != 0
            if not self._enabled:
                self._abort(now)
        if touched(regs.command):
            command = image[regs.command - start]
            if command == regs.stop_command:
                self._abort(now)
            elif command == regs.clear_fault_command:
                self._fault = False
                self.alarm_code = None
            elif command == regs.home_command:
                return self._start_motion(0, image, start, now)
            elif command != 0:
                return ExcCodes.ILLEGAL_VALUE
        if touched(regs.target, regs.target_words):
            words = image[regs.target - start : regs.target - start + regs.target_words]
            return self._start_motion(codec.decode_position(words), image, start, now)
        return None

    def _start_motion(
        self, target: int, image: list[int], start: int, now: float
    ) -> ExcCodes | None:
        limits = self.config.limits
        target_deg = codec.steps_to_deg(target, self.config.steps_per_deg)
        if not limits.min_deg <= target_deg <= limits.max_deg:
            return ExcCodes.ILLEGAL_VALUE  # the drive's own soft limits
        if not self._enabled:
            return ExcCodes.DEVICE_FAILURE
        if self._fault:
            return None  # a faulted drive takes the value but does not move
        speed = min(
            codec.register_to_speed(image[self.config.registers.speed - start]),
            limits.max_speed_deg_per_s,
        )
        if speed <= 0:
            return ExcCodes.ILLEGAL_VALUE
        self._abort(now)
        distance_deg = abs(target - self._position) / self.config.steps_per_deg
        duration = trapezoid_duration_s(distance_deg, speed, limits.accel_deg_per_s2)
        deadline = self.clock.record("turntable", "move", duration)
        self._motion = (self._position, target, now, deadline)
        self._settle(self.clock.now())
        if self._motion is not None and self._loop is not None:
            # finish on time even if nobody polls, so the world (and the camera) sees it
            self._loop.call_later(max(0.0, deadline - now), self._settle_now)
        return None

    def _settle_now(self) -> None:
        with self._lock:
            self._settle(self.clock.now())

    def _settle(self, now: float) -> None:
        """Complete the motion if its deadline has passed."""
        if self._motion is not None and now >= self._motion[3]:
            self._position = self._motion[1]
            self._motion = None
            self._tell_world()

    def _abort(self, now: float) -> None:
        """Stop a motion where it is."""
        if self._motion is not None:
            self._position = self._current_steps(now)
            self._motion = None
            self._tell_world()

    def _current_steps(self, now: float) -> int:
        """Where the drive is now (linear interpolation is close enough for a stop)."""
        if self._motion is None:
            return self._position
        first, target, t0, deadline = self._motion
        fraction = min(1.0, max(0.0, (now - t0) / (deadline - t0))) if deadline > t0 else 1.0
        return round(first + (target - first) * fraction)

    def _publish(self, registers: list[int], start: int) -> None:
        """Write the status word and actual position into the datastore."""
        regs = self.config.registers
        status_index = regs.status - start
        registers[status_index] = codec.encode_status(
            busy=self._motion is not None,
            fault=self._fault,
            busy_bit=regs.busy_bit,
            fault_bit=regs.fault_bit,
            other_bits=(int(self._enabled) << 15)
            if 15 not in (regs.busy_bit, regs.fault_bit)
            else 0,
        )
        actual = codec.encode_position(
            _clamp(self._current_steps(self.clock.now()), regs.actual_words), regs.actual_words
        )
        registers[regs.actual - start : regs.actual - start + regs.actual_words] = actual

    def _tell_world(self) -> None:
        if self.world is not None:
            self.world.set_turntable_deg(
                codec.steps_to_deg(self._position, self.config.steps_per_deg)
            )


def _clamp(steps: int, words: int) -> int:
    low, high = codec.position_range(words)
    return min(high, max(low, steps))


# ====================================================================== lightbox


class ModbusLightboxEmulator(ModbusEmulator):
    """An LED/PWM controller: one holding register (0..full_scale) or coil per channel."""

    def __init__(
        self,
        config: ModbusLightboxConfig,
        *,
        world: World | None = None,
        clock: SimClock | None = None,
        faults: FaultInjector | None = None,
        late_reply_s: float | None = None,
    ) -> None:
        super().__init__(
            name="lightbox",
            unit_id=config.unit_id,
            clock=clock,
            faults=faults or _faults_from(config.emulate),
            late_reply_s=late_reply_s if late_reply_s is not None else 2.0 * config.timeout_s,
        )
        self.config = config
        self.world = world
        self._holding = {c.address: c for c in config.channels if c.kind == "holding"}
        self._coils = {c.address: c for c in config.channels if c.kind == "coil"}
        self._raw: dict[str, int] = {c.name: 0 for c in config.channels}
        self._stuck: dict[str, int] = {}
        for channel in config.channels:
            self._tell_world(channel.name)

    def build_device(self) -> SimDevice:
        """Separate coil and register blocks; only configured registers exist."""
        holding = [
            SimData(address=a, values=0, datatype=DataType.REGISTERS) for a in sorted(self._holding)
        ] or [SimData(address=0, datatype=DataType.INVALID)]
        coils = [
            SimData(address=a, values=False, datatype=DataType.BITS) for a in sorted(self._coils)
        ] or [SimData(address=0, values=False, datatype=DataType.BITS)]
        unused_bits = [SimData(address=0, values=False, datatype=DataType.BITS)]
        unused_regs = [SimData(address=0, datatype=DataType.INVALID)]
        return SimDevice(
            id=self.unit_id,
            simdata=(coils, unused_bits, holding, unused_regs),
            action=self._on_access,
        )

    def identity(self) -> dict[int, bytes]:
        """Vendor, product code and revision of the emulated controller."""
        return {0: b"coinrig-sim", 1: b"SIM-LED-PWM", 2: b"1.0"}

    def check_request(self, pdu: ModbusPDU) -> ExcCodes | None:
        """Serve only configured coils and registers; levels above full scale are refused."""
        code = pdu.function_code
        if code == DEVICE_INFO:
            return None
        address, count = _span(pdu)
        if code in (READ_COILS, WRITE_COIL, WRITE_COILS):
            table = self._coils
        elif code in (READ_HOLDING, WRITE_REGISTER, WRITE_REGISTERS):
            table = self._holding
        else:
            return ExcCodes.ILLEGAL_FUNCTION
        if any(a not in table for a in range(address, address + count)):
            return ExcCodes.ILLEGAL_ADDRESS
        if code in (WRITE_REGISTER, WRITE_REGISTERS):
            for offset, value in enumerate(pdu.registers):
                if value > self._holding[address + offset].full_scale:
                    return ExcCodes.ILLEGAL_VALUE
        return None

    def levels(self) -> dict[str, float]:
        """Every channel's intensity as the controller holds it."""
        with self._lock:
            return {name: self._intensity(name) for name in self._raw}

    def stick_channel(self, name: str, raw: int | None) -> None:
        """Make a channel ignore writes and hold `raw` (a failed LED driver); None heals it."""
        with self._lock:
            if raw is None:
                self._stuck.pop(name, None)
            else:
                self._stuck[name] = raw

    def raw_levels(self) -> dict[str, int]:
        """Every channel's register value (coils as 0/1)."""
        with self._lock:
            return dict(self._raw)

    async def _on_access(
        self,
        function_code: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if values is None:
            return None
        table = self._coils if function_code in (WRITE_COIL, WRITE_COILS) else self._holding
        changed = False
        with self._lock:
            for offset in range(len(values)):
                channel = table[address + offset]
                if channel.name in self._stuck:
                    # the action may rewrite what the datastore stores: the stuck level wins
                    stuck = self._stuck[channel.name]
                    if channel.kind == "coil":
                        cast(list[bool], values)[offset] = bool(stuck)
                    else:
                        cast(list[int], values)[offset] = stuck
                raw = int(values[offset])
                if self._raw[channel.name] != raw:
                    self._raw[channel.name] = raw
                    changed = True
                self._tell_world(channel.name)
        if changed:
            self.clock.record("lightbox", "switch", self.config.settle_ms / 1000.0)
        return None

    def _intensity(self, name: str) -> float:
        channel = self.config.channel(name)
        raw = self._raw[name]
        return float(raw != 0) if channel.kind == "coil" else raw / channel.full_scale

    def _tell_world(self, name: str) -> None:
        if self.world is None:
            return
        channel = self.config.channel(name)
        self.world.set_light(
            name,
            LightState(
                intensity=self._intensity(name),
                azimuth_deg=channel.azimuth_deg,
                elevation_deg=channel.elevation_deg,
                diffuse=channel.diffuse,
            ),
        )


def _faults_from(emulate: Any) -> FaultInjector:
    rules: Iterable[FaultRule] = getattr(emulate, "faults", ()) or ()
    return FaultInjector(rules, seed=int(getattr(emulate, "seed", 0) or 0))
