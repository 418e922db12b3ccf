"""Benches for the Modbus driver tests: an emulator and a driver, over TCP or RTU.

The same fault tests run over both wires (`FRAMINGS`): Modbus TCP on a loopback port, and
Modbus RTU on a pseudo-terminal line (`rig.sim.modbus_bus.SerialBus`). Where the two wires end a
fault differently, `PERSISTENT` says how.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal, NamedTuple

import pytest

from rig.config import ModbusEmulatorConfig, ModbusLightboxConfig, ModbusTurntableConfig
from rig.errors import DeviceFault, DeviceTimeout, TransportError
from rig.lightbox.modbus import ModbusLightbox
from rig.sim.clock import SimClock
from rig.sim.faults import FaultInjector
from rig.sim.modbus_drive import ModbusTurntableEmulator
from rig.sim.modbus_lights import ModbusLightboxEmulator
from rig.sim.world import World
from rig.turntable.modbus import ModbusTurntable

Framing = Literal["tcp", "rtu"]
FRAMINGS: tuple[Framing, ...] = ("tcp", "rtu")
#: run a test once per wire: its `bench` fixture gets "tcp", then "rtu" (the ids end in them)
on_each_wire = pytest.mark.parametrize("bench", FRAMINGS, indirect=True)
RETRIES = 2
DEVICE_BUSY = 6  # the one Modbus exception code worth asking again
# Reply timeouts: every lost reply costs one per attempt, so the fault tests' runtime scales
# with them. On a 2-core machine with both cores saturated the slowest of 1,500 replies took
# 10 ms over loopback TCP and 20 ms through the pty forwarding thread, but under heavier load
# (load 6) up to 29 ms and 160 ms: the timeouts keep a margin over that, because tests that count
# requests exactly would see a slow reply's retry.
TIMEOUT_S: dict[Framing, float] = {"tcp": 0.1, "rtu": 0.2}

#: faults that fire once: the retry succeeds
TRANSIENT_FAULTS: list[tuple[str, int | None]] = [
    ("lost_reply", None),
    ("late_reply", None),
    ("garbage", None),
    ("disconnect", None),
    ("modbus_exception", DEVICE_BUSY),
]


class Outcome(NamedTuple):
    """How a fault drawn by every attempt ends: the error raised (None: none) and its message."""

    error: type[Exception] | None
    match: str = ""


# Where the two wires part: RTU has no connection to lose, so a dead line is silence. A late
# reply is dropped over both: over TCP with the connection, over RTU by waiting it out after the
# timeout (RTU has no transaction ids: taken by the retry, it would leave the retry's own reply
# to answer the next request). Noise
# is a TransportError over both, never a DeviceTimeout: over RTU the link tells a broken CRC
# from silence by the bytes that arrived.
PERSISTENT: dict[Framing, dict[str, Outcome]] = {
    "tcp": {
        "lost_reply": Outcome(DeviceTimeout, "no reply"),
        "late_reply": Outcome(DeviceTimeout, "no reply"),
        "garbage": Outcome(TransportError, "bad reply"),
        "disconnect": Outcome(TransportError, "lost or refused"),
        "modbus_exception": Outcome(DeviceFault, "answered Modbus exception"),
    },
    "rtu": {
        "lost_reply": Outcome(DeviceTimeout, "no reply"),
        "late_reply": Outcome(DeviceTimeout, "no reply"),
        "garbage": Outcome(TransportError, "garbled"),
        "disconnect": Outcome(DeviceTimeout, "no reply"),
        "modbus_exception": Outcome(DeviceFault, "answered Modbus exception"),
    },
}


def attempts(code: int | None) -> int:
    """Requests one operation sends when every attempt fails: exception codes but 6 are final."""
    return RETRIES + 1 if code in (None, DEVICE_BUSY) else 1


def _link_settings(framing: Framing) -> dict[str, object]:
    """What every emulated Modbus device of these tests shares: its wire, timeout and retries."""
    return {
        "driver": "modbus",
        "emulate": ModbusEmulatorConfig(framing=framing),
        "timeout_s": TIMEOUT_S[framing],
        "retries": RETRIES,
    }


def turntable_config(framing: Framing = "tcp", **overrides: object) -> ModbusTurntableConfig:
    """A Modbus drive config emulated over `framing`."""
    settings = _link_settings(framing) | {"poll_interval_s": 0.001}
    return ModbusTurntableConfig.model_validate(settings | overrides)


LIGHT_CHANNELS: list[dict[str, object]] = [
    {"name": "north", "address": 0, "azimuth_deg": 90, "elevation_deg": 20},
    {"name": "east", "address": 1, "azimuth_deg": 0, "elevation_deg": 20},
    {"name": "south", "address": 2, "azimuth_deg": 270, "elevation_deg": 20},
    {"name": "west", "address": 3, "azimuth_deg": 180, "elevation_deg": 20},
    {"name": "top", "address": 5, "azimuth_deg": 135, "elevation_deg": 60, "full_scale": 4095},
    {"name": "dome", "address": 0, "kind": "coil", "diffuse": True},
    {"name": "ring", "address": 1, "kind": "coil", "diffuse": True},
]
LIGHT_PATTERNS = {
    "raking_n": {"north": 1.0},
    "top": {"top": 0.8, "dome": 0.2},
    "mixed": {"east": 0.25, "west": 0.5, "ring": 1.0},
}


def lightbox_config(framing: Framing = "tcp", **overrides: object) -> ModbusLightboxConfig:
    """An LED controller config (7 channels, 3 patterns) emulated over `framing`."""
    settings = _link_settings(framing) | {
        "channels": LIGHT_CHANNELS,
        "patterns": LIGHT_PATTERNS,
        "settle_ms": 20.0,
    }
    return ModbusLightboxConfig.model_validate(settings | overrides)


def _framing(config: ModbusTurntableConfig | ModbusLightboxConfig) -> Framing:
    return config.emulate.framing if config.emulate is not None else "tcp"


class TurntableBench:
    """A drive emulator on the config's wire, its world and clock, and a driver (not connected)."""

    def __init__(self, config: ModbusTurntableConfig, clock: SimClock | None = None) -> None:
        self.config = config
        self.framing = _framing(config)
        self.world = World()
        self.clock = clock or SimClock(0)
        self.faults = FaultInjector()
        self.emulator = ModbusTurntableEmulator(
            config, world=self.world, clock=self.clock, faults=self.faults
        ).start()
        self.driver = ModbusTurntable(config, link=self.emulator.endpoint)

    def close(self) -> None:
        """Close the driver, then stop the emulator (and its serial line)."""
        self.driver.close()
        self.emulator.stop()


class LightboxBench:
    """An LED controller emulator, its world, and a connected driver that records its waits."""

    def __init__(self, config: ModbusLightboxConfig) -> None:
        self.config = config
        self.framing = _framing(config)
        self.world = World()
        self.faults = FaultInjector()
        self.emulator = ModbusLightboxEmulator(
            config, world=self.world, clock=SimClock(0), faults=self.faults
        ).start()
        self.waits: list[float] = []  # settling waits, recorded instead of slept
        sleep: Callable[[float], None] = self.waits.append
        self.driver = ModbusLightbox(config, link=self.emulator.endpoint, sleep=sleep)
        try:
            self.driver.connect()
        except BaseException:
            self.emulator.stop()
            raise

    def close(self) -> None:
        """Close the driver, then stop the emulator (and its serial line)."""
        self.driver.close()
        self.emulator.stop()


def turntable_bench(framing: Framing) -> Iterator[TurntableBench]:
    """A bench with its driver connected, for a fixture to `yield from`; closed afterwards."""
    rig = TurntableBench(turntable_config(framing))
    try:
        rig.driver.connect()
        yield rig
    finally:
        rig.close()


def lightbox_bench(framing: Framing) -> Iterator[LightboxBench]:
    """A lightbox bench, for a fixture to `yield from`; closed afterwards."""
    rig = LightboxBench(lightbox_config(framing))
    try:
        yield rig
    finally:
        rig.close()
