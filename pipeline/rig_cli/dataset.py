"""`rig dataset verify|summary|sheet`: check, count and view a dataset folder.

Examples:
    rig dataset verify data/demo
    rig dataset summary data/demo
    rig dataset sheet data/demo --coin SIM-0001
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from capture.checks import summary, verify
from capture.sheet import write_contact_sheet
from dataset.layout import DatasetError, validate_coin_id
from dataset.outputs import check_output_file
from pipeline.cli_support import expected_errors, fail

EXIT_FAILED = 1
EXIT_PAUSED = 3


def register(app: typer.Typer) -> None:
    """Add the `dataset` sub-app to the `rig` command."""
    dataset_app = typer.Typer(no_args_is_help=True, help="Verify, summarise and view datasets.")
    dataset_app.command("verify")(dataset_verify)
    dataset_app.command("summary")(dataset_summary)
    dataset_app.command("sheet")(dataset_sheet)
    app.add_typer(dataset_app, name="dataset")


def dataset_verify(
    root: Path = typer.Argument(..., help="Dataset folder."),
    strict: bool = typer.Option(False, "--strict", help="Warnings fail too."),
) -> None:
    """Check every file against its checksum, find orphans, account for every planned shot.

    Example: rig dataset verify data/demo
    """
    if not (root / "dataset.json").exists():
        raise fail(f"{root}: not a dataset folder (no dataset.json)")
    with expected_errors(DatasetError, OSError):
        problems = verify(root)  # a damaged file is a problem in the report, not an error
    for problem in problems:
        typer.echo(str(problem))
    errors = [p for p in problems if p.severity == "error"]
    warnings = len(problems) - len(errors)
    typer.echo(f"{root}: {len(errors)} error(s), {warnings} warning(s)")
    if errors or (strict and problems):
        raise typer.Exit(1)


def dataset_summary(
    root: Path = typer.Argument(..., help="Dataset folder."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Coins and images per side, light and angle.

    Example: rig dataset summary data/demo
    """
    if not (root / "dataset.json").exists():
        raise fail(f"{root}: not a dataset folder (no dataset.json)")
    with expected_errors(DatasetError, OSError):
        counts = summary(root)
    if as_json:
        typer.echo(json.dumps(counts, indent=2))
        return
    typer.echo(f"{root}: {counts['coins']} coin(s), {counts['images']} capture image(s)")
    typer.echo(f"  catalog images: {counts['catalog_images']}")
    for key in ("by_side", "by_light", "by_angle", "by_coin", "sessions"):
        cells = ", ".join(f"{k}: {v}" for k, v in counts[key].items())
        typer.echo(f"  {key.replace('_', ' ')}: {cells or '-'}")


def dataset_sheet(
    root: Path = typer.Argument(..., help="Dataset folder."),
    coin: str = typer.Option(..., "--coin", help="Coin id."),
    out: Path | None = typer.Option(None, "--out", help="PNG path (default: COIN-sheet.png)."),
    thumb_px: int = typer.Option(128, "--thumb", min=16, max=1024, help="Thumbnail size."),
) -> None:
    """Write a contact sheet PNG of one coin: rows side × light, columns by angle.

    Example: rig dataset sheet data/demo --coin SIM-0001
    """
    with expected_errors(DatasetError, OSError):
        validate_coin_id(coin)
        target = out or Path(f"{coin}-sheet.png")
        check_output_file(target, "--out")  # before any image is read
        if not (root / "dataset.json").exists():
            raise DatasetError(f"{root}: not a dataset folder (no dataset.json)")
        path = write_contact_sheet(root, coin, target, thumb_px=thumb_px)
    typer.echo(f"wrote {path}")
