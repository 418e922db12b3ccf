"""`rig probe`, `rig devices` and `rig sim serve`: see what is connected, and start emulators."""

from __future__ import annotations

import signal
import threading
from contextlib import ExitStack
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli_support import expected_errors, fail
from rig.config import (
    ModbusLightboxConfig,
    ModbusRtu,
    ModbusTcp,
    ModbusTurntableConfig,
    RigConfig,
    load_config,
)

DEFAULT_CONFIG = Path("sim")
console = Console()


def probe(
    config: Path = typer.Option(DEFAULT_CONFIG, "--config", "-c", help="Rig configuration (YAML)."),
    faults: str | None = typer.Option(
        None, help="Fault preset for emulated devices: none|light|heavy."
    ),
) -> None:
    """Connect every configured device and print its identity and state as a table.

    Example: rig probe --config sim
    """
    from rig.assembly import open_rig

    with expected_errors():
        rig_config = load_config(config)
        table = Table(title=f"rig {rig_config.name!r} ({config})")
        for column in ("device", "driver", "model", "serial", "firmware", "endpoint", "state"):
            table.add_column(column, overflow="fold")
        details: list[str] = []
        with open_rig(rig_config, faults=faults) as rig:
            named = [
                ("turntable", rig.turntable),
                ("lightbox", rig.lightbox),
                ("camera", rig.camera),
            ]
            if rig.arm is not None:
                named.append(("arm", rig.arm))
            for name, device in named:
                ident = device.identity()
                state = device.status()
                table.add_row(
                    name,
                    ident.driver,
                    ident.model,
                    ident.serial,
                    ident.firmware,
                    ident.endpoint,
                    state.state,
                )
                if state.details:
                    pairs = ", ".join(f"{k}={v}" for k, v in state.details.items())
                    details.append(f"[bold]{name}[/bold]: {pairs}")
    console.print(table)
    for line in details:
        console.print(line, highlight=False)


def devices(
    max_opencv_index: int = typer.Option(4, help="Highest OpenCV camera index to try."),
) -> None:
    """List serial ports, pylon cameras and OpenCV cameras on this machine.

    Example: rig devices
    """
    from rig import discovery

    with expected_errors():
        ports = discovery.find_serial_ports()
        pylon = discovery.find_pylon_cameras()
        webcams = discovery.find_opencv_cameras(discovery.default_opencv_sources(max_opencv_index))
    table = Table(title="devices")
    table.add_column("kind")
    table.add_column("address")
    table.add_column("description")
    for port in ports:
        table.add_row("serial", port.device, port.description)
    for camera in pylon.cameras:
        emulated = " [emulated]" if camera.emulated else ""
        table.add_row(
            "pylon camera", camera.serial, f"{camera.model} ({camera.device_class}){emulated}"
        )
    if not pylon.available:
        table.add_row("pylon", "-", f"unavailable: {pylon.reason}")
    for webcam in webcams:
        table.add_row(
            "opencv camera",
            str(webcam.source),
            f"{webcam.width}x{webcam.height} ({webcam.backend})",
        )
    if table.row_count == 0:
        table.add_row("-", "-", "nothing found")
    console.print(table)


def serve(
    config: Path = typer.Option(DEFAULT_CONFIG, "--config", "-c", help="Rig configuration (YAML)."),
    faults: str | None = typer.Option(None, help="Fault preset: none|light|heavy."),
    time_scale: float | None = typer.Option(None, help="0 = instant, 1 = real time."),
    duration_s: float | None = typer.Option(
        None, help="Stop after this many seconds (default: Ctrl-C)."
    ),
    modbus: str | None = typer.Option(
        None,
        "--modbus",
        help="Emulated Modbus devices speak tcp (a loopback port) or rtu (a pseudo-terminal "
        "serial line); default: each device's `emulate.framing`.",
    ),
) -> None:
    """Start the emulators of every emulated device and print their endpoints until Ctrl-C.

    Point a config's `link:` at the printed endpoints to drive them from another process.

    Examples:
        rig sim serve --config sim --time-scale 1
        rig sim serve --modbus rtu
    """
    from rig.sim.simulation import start_backend

    with expected_errors():
        rig_config = load_config(config)
        if rig_config.simulation is None:
            raise fail(f"{config}: no `simulation:` section, nothing to emulate")
        if modbus is not None:
            if modbus not in ("tcp", "rtu"):
                raise fail(f"--modbus must be tcp or rtu, got {modbus!r}")
            rig_config = with_modbus_framing(rig_config, modbus)
        stop = threading.Event()
        with ExitStack() as stack:
            backend = start_backend(rig_config, stack, faults=faults, time_scale=time_scale)
            # plain lines, not a table: a wrapped `link:` could not be copied into a config
            rows = [
                (name, "serial G-code", f"{{kind: serial, port: {port}}}")
                for name, port in backend.serial_ports.items()
            ]
            for name, endpoint in backend.modbus_endpoints.items():
                unit = getattr(getattr(rig_config, name), "unit_id", "?")
                rows.append((name, f"Modbus unit {unit}", _link_yaml(endpoint)))
            typer.echo("emulators (point a config's `link:` at them):")
            for name, protocol, link in rows:
                typer.echo(f"  {name:<10} {protocol:<14} link: {link}")
            console.print("serving; press Ctrl-C to stop", style="dim")
            previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
            try:
                stop.wait(timeout=duration_s)
            finally:
                signal.signal(signal.SIGINT, previous)


def _link_yaml(endpoint: ModbusTcp | ModbusRtu) -> str:
    """A Modbus endpoint as the `link:` YAML that reaches it."""
    if isinstance(endpoint, ModbusTcp):
        return f"{{kind: tcp, host: {endpoint.host}, port: {endpoint.port}}}"
    return (
        f"{{kind: rtu, port: {endpoint.port}, baudrate: {endpoint.baudrate}, "
        f"parity: {endpoint.parity}}}"
    )


def with_modbus_framing(config: RigConfig, framing: str) -> RigConfig:
    """The config with every emulated Modbus device speaking `framing` (tcp or rtu)."""
    updates: dict[str, object] = {}
    for name in ("turntable", "lightbox"):
        device = getattr(config, name)
        if isinstance(device, ModbusTurntableConfig | ModbusLightboxConfig) and device.emulate:
            emulate = device.emulate.model_copy(update={"framing": framing})
            updates[name] = device.model_copy(update={"emulate": emulate})
    return config.model_copy(update=updates)
