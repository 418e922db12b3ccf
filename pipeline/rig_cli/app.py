"""The `rig` command: configuration, devices, emulators, the digital twin, capture.

Examples:
    rig config validate sim
    rig config show sim > my-rig.yaml
    rig config schema > rig-config.schema.json
    rig probe --config sim
    rig devices
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from capture.plan import PLANS
from pipeline.cli_support import (
    DebugOption,
    VersionOption,
    expected_errors,
    fail,
    set_debug,
    setup_logging,
)
from pipeline.rig_cli import calibrate as rig_calibrate
from pipeline.rig_cli import capture as rig_capture
from pipeline.rig_cli import dataset as rig_dataset
from pipeline.rig_cli import devices as rig_devices
from pipeline.rig_cli import sim as rig_sim
from pipeline.rig_cli import simulate as rig_simulate
from rig.config import config_json_schema, load_config, presets

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
config_app = typer.Typer(
    no_args_is_help=True, help="Validate configuration files and print their schema."
)
app.add_typer(config_app, name="config")


@app.callback()
def main(
    debug: DebugOption = False,
    show_version: VersionOption = False,
) -> None:
    """Drive the coin-imaging rig, its emulators and its digital twin."""
    set_debug(debug)
    setup_logging(debug)


@config_app.command("validate")
def config_validate(path: Path = typer.Argument(..., help="YAML rig configuration")) -> None:
    """Check a rig configuration; name the first bad field and value in one line (exit 2).

    Example: rig config validate sim
    """
    with expected_errors():
        config = load_config(path)
    typer.echo(f"{path}: ok (rig {config.name!r})")


@config_app.command("presets")
def config_presets() -> None:
    """List the rig configs and capture plans shipped with coinrig (use them by name).

    Example: rig config presets
    """
    typer.echo(f"rig configs (--config NAME): {', '.join(presets.preset_names())}")
    typer.echo(f"capture plans (--plan NAME): {', '.join(presets.preset_names(PLANS))}")


@config_app.command("show")
def config_show(name: str = typer.Argument(..., help="a shipped config or plan name")) -> None:
    """Print a shipped rig config or capture plan, to copy and edit.

    Example: rig config show sim > my-rig.yaml
    """
    path = presets.preset_path(name) or presets.preset_path(name, PLANS)
    if path is None:
        raise fail(f"{name}: no such preset (see `rig config presets`)")
    typer.echo(path.read_text(encoding="utf-8"), nl=False)


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON schema of rig configuration files.

    Example: rig config schema > rig-config.schema.json
    """
    typer.echo(json.dumps(config_json_schema(), indent=2))


def _mount_commands() -> None:
    # The `rig` command is assembled from one module per command group.
    app.command("probe")(rig_devices.probe)
    app.command("devices")(rig_devices.devices)
    rig_sim.sim_app.command("serve")(rig_devices.serve)
    app.add_typer(rig_sim.sim_app, name="sim", help="Emulators and the digital twin.")
    rig_capture.register(app)
    app.command("simulate")(rig_simulate.simulate)
    rig_dataset.register(app)
    rig_calibrate.register(app)


_mount_commands()
