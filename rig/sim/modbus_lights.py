"""Modbus emulator (TCP or RTU) of an LED/PWM controller (the Modbus lightbox)."""

from __future__ import annotations

from typing import cast

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.simulator import DataType, SimData, SimDevice

from rig.config import ModbusLightboxConfig
from rig.modbus.link import (
    DEVICE_INFORMATION,
    READ_COILS,
    READ_HOLDING,
    WRITE_COIL,
    WRITE_COILS,
    WRITE_REGISTER,
    WRITE_REGISTERS,
)
from rig.sim.clock import SimClock
from rig.sim.faults import FaultInjector
from rig.sim.modbus_bus import SerialBus
from rig.sim.modbus_server import Framing, ModbusEmulator, request_span
from rig.sim.world import LightState, World


class ModbusLightboxEmulator(ModbusEmulator):
    """An LED/PWM controller: one holding register (0..full_scale) or coil per channel."""

    served_functions = frozenset(
        {
            READ_COILS,
            WRITE_COIL,
            WRITE_COILS,
            READ_HOLDING,
            WRITE_REGISTER,
            WRITE_REGISTERS,
            DEVICE_INFORMATION,
        }
    )

    def __init__(
        self,
        config: ModbusLightboxConfig,
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
            name="lightbox",
            clock=clock,
            faults=faults,
            late_reply_s=late_reply_s,
            framing=framing,
            bus=bus,
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
        if code == DEVICE_INFORMATION:
            return None
        address, count = request_span(pdu)
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
