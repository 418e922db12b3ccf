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

from rig.cli_support import expected_errors, print_version, set_debug
from rig.config import config_json_schema, load_config

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
config_app = typer.Typer(
    no_args_is_help=True, help="Validate configuration files and print their schema."
)
app.add_typer(config_app, name="config")


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for expected errors."),
    show_version: bool = typer.Option(
        False,
        "--version",
        callback=print_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """Drive the coin-imaging rig, its emulators and its digital twin."""
    set_debug(debug)


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
    # The CLI is the composition root: it may reach up into capture for `rig capture`, the one
    # import exempted from the layer contract in pyproject.toml.
    from rig.cli_devices import devices, probe, serve
    from rig.sim.cli import sim_app

    app.command("probe")(probe)
    app.command("devices")(devices)
    sim_app.command("serve")(serve)
    app.add_typer(sim_app, name="sim", help="Emulators and the digital twin.")

    from capture.cli import register as register_capture

    register_capture(app)

    from rig.calibration.cli import register as register_calibrate

    register_calibrate(app)


_mount_commands()
