"""Modbus emulator (TCP or RTU) of an integrated stepper/servo drive (the Modbus turntable)."""

from __future__ import annotations

from typing import cast

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.simulator import DataType, SimData, SimDevice

from rig.config import ModbusTurntableConfig
from rig.modbus.link import (
    DEVICE_INFORMATION,
    READ_HOLDING,
    WRITE_REGISTER,
    WRITE_REGISTERS,
)
from rig.motion import trapezoid_duration_s
from rig.sim.clock import SimClock
from rig.sim.faults import FaultInjector
from rig.sim.modbus_bus import SerialBus
from rig.sim.modbus_server import Framing, ModbusEmulator
from rig.sim.world import World
from rig.turntable import modbus_codec as codec


class ModbusTurntableEmulator(ModbusEmulator):
    """An integrated stepper drive: target, speed, enable, status, actual and command registers.

    Writing the target starts a motion timed by `trapezoid_duration_s` and recorded in the
    clock's ledger; the busy bit stays set until the clock's deadline, then the actual position
    reads the target and the world's turntable angle follows.
    """

    allowed_faults = (*ModbusEmulator.allowed_faults, "alarm")
    served_functions = frozenset(
        {READ_HOLDING, WRITE_REGISTER, WRITE_REGISTERS, DEVICE_INFORMATION}
    )

    def __init__(
        self,
        config: ModbusTurntableConfig,
        *,
        world: World | None = None,
        clock: SimClock | None = None,
        faults: FaultInjector | None = None,
        late_reply_s: float | None = None,
        framing: Framing | None = None,
        bus: SerialBus | None = None,
    ) -> None:
        super().__init__(
            config,
            name="turntable",
            clock=clock,
            faults=faults,
            late_reply_s=late_reply_s,
            framing=framing,
            bus=bus,
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
        if pdu.function_code == DEVICE_INFORMATION:
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
