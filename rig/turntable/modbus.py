"""Turntable on an integrated stepper/servo drive over Modbus RTU or TCP.

The drive takes a target position (steps, 1 or 2 registers), a speed register, an enable
register and a command register (home, stop, clear fault); it reports a status word (busy and
fault bits) and its actual position. A move checks the limits, writes speed then target, and
polls status until the busy bit clears, within a timeout computed from the distance.
"""

from __future__ import annotations

import time

from rig.config import ModbusTurntableConfig
from rig.devices import DeviceStatus
from rig.errors import DeviceAlarm, DeviceFault, DeviceTimeout, SafetyError
from rig.modbus.device import ModbusDevice
from rig.modbus.link import MAX_READ_REGISTERS
from rig.motion import check_within, motion_timeout_s
from rig.turntable import modbus_codec as codec

#: polls in a row that may show "idle, not at target" before the drive counts as stopped
#: short (a drive may take a moment to raise busy after accepting a target)
_START_GRACE_POLLS = 3


class ModbusTurntable(ModbusDevice[ModbusTurntableConfig]):
    """Turntable driven by a Modbus stepper/servo drive; implements `rig.devices.Turntable`."""

    kind = "turntable"
    default_model = "Modbus stepper drive"

    # ------------------------------------------------------------------ Device
    def connect(self) -> None:
        """Open the link, read the drive's identity and enable the drive.

        Raises:
            TransportError: the drive cannot be reached.
            DeviceTimeout: the drive does not answer.
            DeviceFault: the drive refuses to be enabled.
        """
        self._open(self._enable)

    def close(self) -> None:
        """Close the link (idempotent); the drive stays enabled, holding its position."""
        super().close()

    def status(self) -> DeviceStatus:
        """`fault`, `moving` or `idle`, with the position and the raw status word.

        Raises:
            NotConnected: connect() has not been called.
            DeviceFault: the drive answered with a Modbus exception.
            DeviceTimeout: the drive does not answer.
            TransportError: the link broke.
        """
        state, steps = self._read_state()
        name = "fault" if state.fault else "moving" if state.busy else "idle"
        return DeviceStatus(
            state=name,
            details={"position_deg": self._to_deg(steps), "status_word": state.raw},
        )

    # ------------------------------------------------------------------ Turntable
    def home(self) -> None:
        """Run the drive's homing command and wait until it reports still at zero.

        Raises:
            NotConnected: connect() has not been called.
            DeviceAlarm: the drive latched a fault (call recover()).
            DeviceFault: the drive refused the command.
            DeviceTimeout: homing did not finish in time.
            TransportError: the link broke.
        """
        _, steps = self._read_state()
        regs = self.config.registers
        self._link.write_registers(regs.command, [regs.home_command])
        self._wait_still(0, distance_deg=abs(self._to_deg(steps)), what="homing")

    def move_to_deg(self, angle_deg: float) -> float:
        """Move to an absolute angle, wait until the drive is still, return its actual angle.

        Raises:
            SafetyError: the angle is outside the configured limits (nothing is sent).
            NotConnected: connect() has not been called.
            DeviceAlarm: the drive latched a fault (call recover()).
            DeviceFault: the drive refused the move, or stopped short of the target.
            DeviceTimeout: the motion did not finish in time (the drive is told to stop).
            TransportError: the link broke.
        """
        limits = self.config.limits
        check_within(angle_deg, limits.min_deg, limits.max_deg, what="turntable angle", unit="deg")
        target = codec.deg_to_steps(angle_deg, self.config.steps_per_deg)
        regs = self.config.registers
        low, high = codec.position_range(regs.target_words)
        if not low <= target <= high:
            raise SafetyError(
                f"turntable angle {angle_deg:g} deg is {target} steps, beyond the "
                f"{regs.target_words}-register target range [{low}, {high}]"
            )
        self._require_open()
        _, current = self._read_state()
        speed_word = codec.speed_to_register(
            min(self.config.speed_deg_per_s, limits.max_speed_deg_per_s)
        )
        self._link.write_registers(regs.speed, [speed_word])
        self._link.write_registers(regs.target, codec.encode_position(target, regs.target_words))
        distance = abs(target - current) / self.config.steps_per_deg
        steps = self._wait_still(
            target,
            distance_deg=distance,
            what=f"move to {angle_deg:g} deg",
            speed_deg_per_s=codec.register_to_speed(speed_word),
        )
        return self._to_deg(steps)

    def position_deg(self) -> float:
        """The drive's actual position in degrees.

        Raises:
            NotConnected: connect() has not been called.
            DeviceFault: the drive answered with a Modbus exception.
            DeviceTimeout: the drive does not answer.
            TransportError: the link broke.
        """
        regs = self.config.registers
        words = self._link.read_holding(regs.actual, regs.actual_words)
        return self._to_deg(codec.decode_position(words))

    def stop(self) -> None:
        """Tell the drive to stop now.

        Raises:
            NotConnected: connect() has not been called.
            DeviceFault: the drive refused the command.
            DeviceTimeout: the drive does not answer.
            TransportError: the link broke.
        """
        regs = self.config.registers
        self._link.write_registers(regs.command, [regs.stop_command])

    def recover(self) -> None:
        """Clear a latched drive fault, re-enable the drive, and check that it is clear.

        Raises:
            NotConnected: connect() has not been called.
            DeviceFault: the fault is still latched after the clear command.
            DeviceTimeout: the drive does not answer.
            TransportError: the link broke.
        """
        regs = self.config.registers
        self._link.write_registers(regs.command, [regs.clear_fault_command])
        self._link.write_registers(regs.enable, [1])
        state, steps = self._read_state()
        if state.fault:
            raise DeviceFault(
                f"turntable: drive fault still latched after clear-fault command "
                f"(status 0x{state.raw:04x}) at {self._to_deg(steps):g} deg"
            )

    # ------------------------------------------------------------------ internals
    def _wait_still(
        self,
        target: int,
        *,
        distance_deg: float,
        what: str,
        speed_deg_per_s: float | None = None,
    ) -> int:
        """Poll status until busy clears at the target; return the actual step count."""
        limits = self.config.limits
        speed = speed_deg_per_s or min(self.config.speed_deg_per_s, limits.max_speed_deg_per_s)
        timeout = motion_timeout_s(distance_deg, speed, limits.accel_deg_per_s2)
        deadline = time.monotonic() + timeout
        idle_short = 0
        while True:
            state, steps = self._read_state()
            if state.fault:
                # latched until cleared, like a GRBL alarm: the caller must recover()
                raise DeviceAlarm(
                    f"turntable: drive reported a fault during {what} "
                    f"(status 0x{state.raw:04x}) at {self._to_deg(steps):g} deg; call recover()"
                )
            if not state.busy:
                if abs(steps - target) <= 1:
                    return steps
                idle_short += 1
                if idle_short > _START_GRACE_POLLS:
                    raise DeviceFault(
                        f"turntable: drive stopped at {self._to_deg(steps):g} deg during "
                        f"{what}, {self._to_deg(target):g} deg expected"
                    )
            if time.monotonic() > deadline:
                self.stop()
                raise DeviceTimeout(
                    f"turntable: {what} not finished within {timeout:.1f} s "
                    f"(at {self._to_deg(steps):g} deg); drive told to stop"
                )
            self._sleep(self.config.poll_interval_s)

    def _read_state(self) -> tuple[codec.DriveStatus, int]:
        """Status word and actual position, in one read when the registers are close."""
        regs = self.config.registers
        first = min(regs.status, regs.actual)
        last = max(regs.status, regs.actual + regs.actual_words - 1)
        if last - first + 1 <= min(8, MAX_READ_REGISTERS):
            words = self._link.read_holding(first, last - first + 1)
            status_word = words[regs.status - first]
            actual = words[regs.actual - first : regs.actual - first + regs.actual_words]
        else:
            status_word = self._link.read_holding(regs.status, 1)[0]
            actual = self._link.read_holding(regs.actual, regs.actual_words)
        state = codec.decode_status(status_word, busy_bit=regs.busy_bit, fault_bit=regs.fault_bit)
        return state, codec.decode_position(actual)

    def _enable(self) -> None:
        self._link.write_registers(self.config.registers.enable, [1])

    def _to_deg(self, steps: int) -> float:
        return codec.steps_to_deg(steps, self.config.steps_per_deg)
