"""The `rig` command: configuration, devices, emulators, the digital twin, capture.

Examples:
    rig config validate configs/sim.yaml
    rig config schema > rig-config.schema.json
    rig probe --config configs/sim.yaml
    rig devices
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline.cli_support import (
    DebugOption,
    VersionOption,
    expected_errors,
    set_debug,
    setup_logging,
)
from pipeline.rig_cli import calibrate as rig_calibrate
from pipeline.rig_cli import capture as rig_capture
from pipeline.rig_cli import dataset as rig_dataset
from pipeline.rig_cli import devices as rig_devices
from pipeline.rig_cli import sim as rig_sim
from pipeline.rig_cli import simulate as rig_simulate
from rig.config import config_json_schema, load_config

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

    Example: rig config validate configs/sim.yaml
    """
    with expected_errors():
        config = load_config(path)
    typer.echo(f"{path}: ok (rig {config.name!r})")


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
