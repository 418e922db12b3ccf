"""Open a rig from its configuration: real drivers, on hardware or on the simulation backend.

A config may emulate some devices and keep others on hardware (a real turntable under the
twin's camera, for a bench test). The twin then cannot know what the real devices did, so its
ground truth is withheld: the sim camera writes no `sim` fields unless every device that moves
the twin (turntable and tilt, lightbox, arm) is emulated (`twin_ground_truth`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
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
from rig.connect import ConnectPolicy, connect_with_retries, transient
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

    camera = _camera(config, backend)

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
            on_hardware=tuple(devices_on_hardware(config)),
            ground_truth=twin_ground_truth(config),
        )
    return Rig(turntable=turntable, lightbox=lightbox, camera=camera, arm=arm, tilt=tilt, twin=twin)


def _camera(config: RigConfig, backend: SimBackend | None) -> Camera:
    """The configured camera's driver; the sim camera renders the backend's twin."""
    cam = config.camera
    if isinstance(cam, BaslerCameraConfig):
        from rig.camera.basler import BaslerCamera

        return BaslerCamera(cam)
    if isinstance(cam, OpenCvCameraConfig):
        from rig.camera.opencv import OpenCvCamera

        return OpenCvCamera(cam)
    if isinstance(cam, SimCameraConfig):
        if backend is None:
            raise ConfigError("camera driver `sim` needs the simulation backend")
        from rig.sim.camera import SimCamera

        assert config.simulation is not None  # a backend only runs with a simulation section
        return SimCamera(
            cam,
            backend.world,
            backend.catalog,
            backend.clock,
            coin_diameter_mm=config.simulation.coin_diameter_mm,
            axis_offset_mm=config.simulation.turntable_axis_offset_mm,
            ground_truth=twin_ground_truth(config),
        )
    raise ConfigError(f"unsupported camera driver {cam!r}")  # pragma: no cover


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
    return len(devices_on_hardware(config)) < len(_configured(config))


def devices_on_hardware(config: RigConfig) -> list[str]:
    """The configured devices that are real hardware: not emulated, or a camera other than sim.

    A Basler camera under pylon's own emulation counts as hardware: it does not see the twin.
    """
    return [name for name, settings in _configured(config).items() if not _emulated(settings)]


def twin_ground_truth(config: RigConfig) -> bool:
    """Whether the twin knows the truth: every device that moves it is emulated.

    The turntable (and its tilt axis) turns the twin's coin, the lightbox lights it and the arm
    puts it on the turntable; a real one of these changes the real world, never the twin's, and
    the twin's angle, lights or coin would be recorded wrong.
    """
    movers = ("turntable", "lightbox", "arm")
    return not any(name in movers for name in devices_on_hardware(config))


def _configured(config: RigConfig) -> dict[str, object]:
    devices: dict[str, object] = {
        "turntable": config.turntable,
        "lightbox": config.lightbox,
        "camera": config.camera,
    }
    if config.arm is not None:
        devices["arm"] = config.arm
    return devices


def _emulated(settings: object) -> bool:
    return isinstance(settings, SimCameraConfig) or getattr(settings, "emulate", None) is not None


@contextmanager
def open_rig(
    config: RigConfig,
    *,
    faults: str | None = None,
    time_scale: float | None = None,
    connect: bool = True,
    catalog: CoinCatalog | None = None,
    connect_policy: ConnectPolicy | None = None,
) -> Iterator[Rig]:
    """Open every device of the rig (starting emulators first when simulated); close all on exit.

    Each device's connect is retried on transient errors, with backoff (rig.connect).

    Raises:
        DeviceUnreachable: a device kept failing to connect (already-open devices are closed).
        RigError: a device could not be configured, or refused its setup for good.
    """
    with ExitStack() as stack:
        backend = None
        if needs_backend(config):
            from rig.sim.simulation import start_backend

            backend = start_backend(
                config, stack, faults=faults, time_scale=time_scale, catalog=catalog
            )
        rig = build_devices(config, backend)
        on_hardware = devices_on_hardware(config)
        if connect:
            for name, device in _connect_order(rig):
                stack.callback(device.close)
                connect_with_retries(
                    device,
                    name,
                    is_transient=partial(transient, config, name),
                    policy=connect_policy,
                    # an emulator's faults do not wear off with time: back off in twin time
                    sleep=time.sleep if name in on_hardware else _scaled_sleep(backend),
                )
        yield rig


def _connect_order(rig: Rig) -> list[tuple[str, Device]]:
    # the arm last: it must not move before the turntable and lights are known to be there
    named: list[tuple[str, Device]] = [
        ("turntable", rig.turntable),
        ("lightbox", rig.lightbox),
        ("camera", rig.camera),
    ]
    if rig.arm is not None:
        named.append(("arm", rig.arm))
    return named
