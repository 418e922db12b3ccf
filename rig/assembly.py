"""Open a rig from its configuration: real drivers, on hardware or on the simulation backend."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

from rig.config import (
    BaslerCameraConfig,
    GcodeArmConfig,
    GrblTurntableConfig,
    ModbusLightboxConfig,
    ModbusTurntableConfig,
    OpenCvCameraConfig,
    RigConfig,
    SimCameraConfig,
)
from rig.devices import Arm, Camera, Device, Lightbox, Rig, TiltStage, Turntable, Twin
from rig.errors import ConfigError

if TYPE_CHECKING:  # the simulation is imported only when a config emulates something
    from rig.sim.coins import CoinCatalog
    from rig.sim.simulation import SimBackend
    from rig.turntable.grbl import GrblTurntable


def build_devices(config: RigConfig, backend: SimBackend | None = None) -> Rig:
    """Construct (not connect) every configured driver, pointed at the emulators when simulated.

    Raises:
        ConfigError: a device needs the simulation backend but none is running.
    """
    serial_ports = backend.serial_ports if backend is not None else {}
    modbus = backend.modbus_endpoints if backend is not None else {}

    turntable: Turntable
    grbl: GrblTurntable | None = None  # the GRBL driver drives a tilt axis too
    tt = config.turntable
    if isinstance(tt, GrblTurntableConfig):
        from rig.turntable.grbl import GrblTurntable

        turntable = grbl = GrblTurntable(tt, port=serial_ports.get("turntable"))
    elif isinstance(tt, ModbusTurntableConfig):
        from rig.turntable.modbus import ModbusTurntable

        turntable = ModbusTurntable(tt, link=modbus.get("turntable"), sleep=_scaled_sleep(backend))
    else:  # pragma: no cover - the discriminated union admits nothing else
        raise ConfigError(f"unsupported turntable driver {tt!r}")

    lightbox: Lightbox
    lb = config.lightbox
    if isinstance(lb, ModbusLightboxConfig):
        from rig.lightbox.modbus import ModbusLightbox

        lightbox = ModbusLightbox(lb, link=modbus.get("lightbox"), sleep=_scaled_sleep(backend))
    else:  # pragma: no cover
        raise ConfigError(f"unsupported lightbox driver {lb!r}")

    camera: Camera
    cam = config.camera
    if isinstance(cam, BaslerCameraConfig):
        from rig.camera.basler import BaslerCamera

        camera = BaslerCamera(cam)
    elif isinstance(cam, OpenCvCameraConfig):
        from rig.camera.opencv import OpenCvCamera

        camera = OpenCvCamera(cam)
    elif isinstance(cam, SimCameraConfig):
        if backend is None:
            raise ConfigError("camera driver `sim` needs the simulation backend")
        from rig.sim.camera import SimCamera

        assert config.simulation is not None  # a backend only runs with a simulation section
        camera = SimCamera(
            cam,
            backend.world,
            backend.catalog,
            backend.clock,
            coin_diameter_mm=config.simulation.coin_diameter_mm,
            axis_offset_mm=config.simulation.turntable_axis_offset_mm,
        )
    else:  # pragma: no cover
        raise ConfigError(f"unsupported camera driver {cam!r}")

    arm: Arm | None = None
    if isinstance(config.arm, GcodeArmConfig):
        from rig.arm.gcode_arm import GcodeArm

        assert config.tray is not None
        arm = GcodeArm(config.arm, tray=config.tray, port=serial_ports.get("arm"))

    tilt: TiltStage | None = None
    if isinstance(tt, GrblTurntableConfig) and tt.tilt is not None:
        tilt = grbl

    twin = None
    if backend is not None:
        twin = Twin(
            world=backend.world,
            clock=backend.clock,
            catalog=backend.catalog,
            emulators=backend.emulators,
        )
    return Rig(turntable=turntable, lightbox=lightbox, camera=camera, arm=arm, tilt=tilt, twin=twin)


def _scaled_sleep(backend: SimBackend | None) -> Callable[[float], None]:
    """Real sleeps on hardware; on the simulation backend, sleeps shrink with its time scale.

    The emulators already book settle times in the ledger, so this only paces wall time.
    """
    if backend is None:
        return time.sleep
    scale = backend.clock.scale
    return lambda seconds: time.sleep(seconds * scale) if scale > 0 else None


def needs_backend(config: RigConfig) -> bool:
    """Whether any device of this config is emulated or simulated."""
    emulated = [
        getattr(d, "emulate", None) for d in (config.turntable, config.lightbox, config.arm)
    ]
    return any(e is not None for e in emulated) or isinstance(config.camera, SimCameraConfig)


@contextmanager
def open_rig(
    config: RigConfig,
    *,
    faults: str | None = None,
    time_scale: float | None = None,
    connect: bool = True,
    catalog: CoinCatalog | None = None,
) -> Iterator[Rig]:
    """Open every device of the rig (starting emulators first when simulated); close all on exit.

    Raises:
        RigError: a device could not be reached or configured (already-open devices are closed).
    """
    with ExitStack() as stack:
        backend = None
        if needs_backend(config):
            from rig.sim.simulation import start_backend

            backend = start_backend(
                config, stack, faults=faults, time_scale=time_scale, catalog=catalog
            )
        rig = build_devices(config, backend)
        if connect:
            for device in _connect_order(rig):
                stack.callback(device.close)
                device.connect()
        yield rig


def _connect_order(rig: Rig) -> list[Device]:
    # the arm last: it must not move before the turntable and lights are known to be there
    return rig.devices()
