"""Start the simulation backend: the twin's world, its clock, and one emulator per emulated device.

The real drivers then connect to the emulators' endpoints (pty paths, loopback Modbus ports)
exactly as they would to hardware; nothing in a driver knows it is simulated.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict

from rig.config import (
    MODBUS_FAULTS,
    SERIAL_FAULTS,
    EmulatorConfig,
    FaultRule,
    GcodeArmConfig,
    GrblTurntableConfig,
    ModbusLightboxConfig,
    ModbusRtu,
    ModbusTcp,
    ModbusTurntableConfig,
    RigConfig,
    SimulationConfig,
)
from rig.errors import ConfigError
from rig.sim.clock import SimClock
from rig.sim.faults import FAULT_PRESETS, FaultInjector
from rig.sim.world import LightState, World

if TYPE_CHECKING:  # each emulator is imported only when a config asks for it
    from rig.sim.arm_emulator import GcodeArmEmulator
    from rig.sim.coins import CoinCatalog
    from rig.sim.grbl_emulator import GrblEmulator
    from rig.sim.modbus_bus import SerialBus
    from rig.sim.modbus_drive import ModbusTurntableEmulator
    from rig.sim.modbus_lights import ModbusLightboxEmulator

# Which fault kinds make sense on which wire (a preset applies only those): a serial G-code
# device cannot answer with a Modbus exception code; a Modbus drive's `alarm` latches its fault
# bit, and an LED controller has none.
_SERIAL_FAULTS: set[str] = set(SERIAL_FAULTS)
_MODBUS_FAULTS: set[str] = set(MODBUS_FAULTS)
_DRIVE_FAULTS = _MODBUS_FAULTS | {"alarm"}


class Emulators(TypedDict, total=False):
    """The running emulators by device; a device on hardware (or not fitted) has none."""

    turntable: GrblEmulator | ModbusTurntableEmulator
    lightbox: ModbusLightboxEmulator
    arm: GcodeArmEmulator


@dataclass
class SimBackend:
    """The running simulation: world, clock, coin catalog, emulators and their endpoints."""

    world: World
    clock: SimClock
    catalog: CoinCatalog
    emulators: Emulators = field(default_factory=lambda: Emulators())
    serial_ports: dict[str, str] = field(default_factory=dict)
    modbus_endpoints: dict[str, ModbusTcp | ModbusRtu] = field(default_factory=dict)


def reseed_faults(config: RigConfig, fault_seed: int) -> RigConfig:
    """The config with every emulator's fault seed shifted by `fault_seed` (0: unchanged).

    A rerun draws a new `fault_seed` (`fresh_fault_seed`) so that it meets other faults than
    the run before, as a real rig's faults do not repeat on cue; the session record's config
    snapshot keeps the shifted seeds, so a run's faults can be replayed.
    """
    updates: dict[str, object] = {}
    for name in ("turntable", "lightbox", "arm"):
        device = getattr(config, name)
        emulate = getattr(device, "emulate", None)
        if emulate is not None:
            shifted = emulate.model_copy(update={"seed": emulate.seed + 7919 * fault_seed})
            updates[name] = device.model_copy(update={"emulate": shifted})
    return config.model_copy(update=updates)


def fresh_fault_seed() -> int:
    """A fault seed no earlier run is likely to have used (from the OS's entropy)."""
    return secrets.randbelow(2**31)


def fault_rules(
    emulate: EmulatorConfig, preset: str | None, allowed: set[str]
) -> tuple[FaultRule, ...]:
    """The fault rules for one emulator: the preset (when given) replaces the config's rules."""
    if preset is not None:
        if preset not in FAULT_PRESETS:
            raise ConfigError(
                f"unknown fault preset {preset!r}; choose one of {sorted(FAULT_PRESETS)}"
            )
        rules = FAULT_PRESETS[preset]
    else:
        rules = emulate.faults
    return tuple(rule for rule in rules if rule.kind in allowed)


def catalog_of(sim: SimulationConfig) -> CoinCatalog:
    """The twin's coin catalog a config's `simulation:` section describes."""
    from rig.sim.coins import CoinCatalog

    return CoinCatalog(
        seed=sim.seed,
        rulers=sim.rulers,
        types=sim.types,
        coins=sim.coins,
        dies_per_design=sim.dies_per_design,
        shared_reverses=sim.shared_reverses,
    )


def start_backend(
    config: RigConfig,
    stack: ExitStack,
    *,
    faults: str | None = None,
    time_scale: float | None = None,
    catalog: CoinCatalog | None = None,
) -> SimBackend:
    """Start every emulator the config asks for; they stop when `stack` closes.

    Raises:
        ConfigError: the config has emulated devices but no simulation section.
    """
    sim = config.simulation
    if sim is None:
        raise ConfigError("this config has no `simulation:` section")
    clock = SimClock(sim.time_scale if time_scale is None else time_scale)
    world = World()
    if catalog is None:
        catalog = catalog_of(sim)
    backend = SimBackend(world=world, clock=clock, catalog=catalog)

    def injector(emulate: EmulatorConfig, allowed: set[str]) -> FaultInjector:
        return FaultInjector(fault_rules(emulate, faults, allowed), seed=emulate.seed + sim.seed)

    rtu_bus = _shared_rtu_bus(config, stack)
    _start_turntable(config, backend, stack, injector, rtu_bus)
    _start_lightbox(config, backend, stack, injector, rtu_bus)
    _start_arm(config, backend, stack, injector)
    return backend


# The fault injector of one emulator: its config, and the fault kinds its wire admits.
_Injector = Callable[[EmulatorConfig, set[str]], FaultInjector]


def _start_turntable(
    config: RigConfig,
    backend: SimBackend,
    stack: ExitStack,
    injector: _Injector,
    rtu_bus: SerialBus | None,
) -> None:
    """Start the turntable's emulator (GRBL on a pty, or a Modbus drive), if it is emulated."""
    world, clock = backend.world, backend.clock
    turntable = config.turntable
    if isinstance(turntable, GrblTurntableConfig) and turntable.emulate is not None:
        from rig.sim.grbl_emulator import GrblEmulator

        grbl = GrblEmulator.for_config(
            turntable, world=world, clock=clock, faults=injector(turntable.emulate, _SERIAL_FAULTS)
        )
        stack.enter_context(grbl)
        backend.emulators["turntable"] = grbl
        backend.serial_ports["turntable"] = grbl.port
    elif isinstance(turntable, ModbusTurntableConfig) and turntable.emulate is not None:
        from rig.sim.modbus_drive import ModbusTurntableEmulator

        drive = ModbusTurntableEmulator(
            turntable,
            world=world,
            clock=clock,
            faults=injector(turntable.emulate, _DRIVE_FAULTS),
            bus=rtu_bus,
        )
        stack.enter_context(drive)
        backend.emulators["turntable"] = drive
        backend.modbus_endpoints["turntable"] = drive.endpoint


def _start_lightbox(
    config: RigConfig,
    backend: SimBackend,
    stack: ExitStack,
    injector: _Injector,
    rtu_bus: SerialBus | None,
) -> None:
    """Put the lightbox's channels in the twin's world; start its emulator if it is emulated."""
    world, clock = backend.world, backend.clock
    lightbox = config.lightbox
    if not isinstance(lightbox, ModbusLightboxConfig):
        return
    for channel in lightbox.channels:
        world.set_light(
            channel.name,
            LightState(0.0, channel.azimuth_deg, channel.elevation_deg, channel.diffuse),
        )
    if lightbox.emulate is not None:
        from rig.sim.modbus_lights import ModbusLightboxEmulator

        lights = ModbusLightboxEmulator(
            lightbox,
            world=world,
            clock=clock,
            faults=injector(lightbox.emulate, _MODBUS_FAULTS),
            bus=rtu_bus,
        )
        stack.enter_context(lights)
        backend.emulators["lightbox"] = lights
        backend.modbus_endpoints["lightbox"] = lights.endpoint


def _start_arm(
    config: RigConfig, backend: SimBackend, stack: ExitStack, injector: _Injector
) -> None:
    """Start the arm's G-code emulator on a pty, if it is emulated."""
    arm = config.arm
    if isinstance(arm, GcodeArmConfig) and arm.emulate is not None:
        from rig.sim.arm_emulator import GcodeArmEmulator

        assert config.tray is not None  # RigConfig guarantees a tray with an arm
        arm_emulator = GcodeArmEmulator(
            config=arm,
            tray=config.tray,
            world=backend.world,
            clock=backend.clock,
            faults=injector(arm.emulate, _SERIAL_FAULTS),
        )
        stack.enter_context(arm_emulator)
        backend.emulators["arm"] = arm_emulator
        backend.serial_ports["arm"] = arm_emulator.port


def _shared_rtu_bus(config: RigConfig, stack: ExitStack) -> SerialBus | None:
    """One serial line for the emulated RTU devices when their unit ids differ, else None.

    That is an RS-485 bus, as a real rig wires a drive and an LED controller; with equal unit
    ids (or one RTU device) each emulator gets a line of its own.
    """
    units = [
        device.unit_id
        for device in (config.turntable, config.lightbox)
        if isinstance(device, ModbusTurntableConfig | ModbusLightboxConfig)
        and device.emulate is not None
        and device.emulate.framing == "rtu"
    ]
    if len(units) < 2 or len(set(units)) < len(units):
        return None
    from rig.sim.modbus_bus import SerialBus

    return stack.enter_context(SerialBus("rtu-bus"))
