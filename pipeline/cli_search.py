r"""`pipeline index` and `pipeline search`: find a photographed coin among catalog images.

Examples:
    pipeline index --run runs/tiny --images catalogs/spring-sale --meta lots.csv --out idx/sales
    pipeline index --run runs/tiny --images datasets/sawhill --out idx/sawhill   # catalog images
    pipeline search --index idx/sales phone.jpg --top 5 --sheet sheet.png
    pipeline search --index idx/sales a.jpg b.tif --json > hits.json
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli_support import expected_errors, fail
from training.catalog import describe
from training.errors import TrainingError
from training.faiss_structure import KINDS
from training.outputs import check_output_image
from training.search import QueryResult, Searcher, index_folder, load_run_model

# Metadata columns worth a table column when present; everything else is in --json.
SHOWN_COLUMNS = ("sale", "lot", "date", "price")


def _index_command(
    run: Path = typer.Option(..., "--run", help="Training run whose model embeds the images."),
    images: Path = typer.Option(
        ..., "--images", help="Folder of catalog images (recursive) or a coinrig dataset."
    ),
    out: Path = typer.Option(..., "--out", help="Index directory (extended if it exists)."),
    meta: Path | None = typer.Option(
        None, "--meta", help="CSV of lot metadata, matched to images by file name."
    ),
    approximate: str | None = typer.Option(
        None,
        "--approximate",
        help=f"faiss structure: {' | '.join(KINDS)} (default: auto for a new index, else kept).",
    ),
    checkpoint: str = typer.Option("best", help="Checkpoint folder under RUN/checkpoints."),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Processes that read and crop images (default: every core)."
    ),
) -> None:
    """Embed every coin of a folder of catalog images into a searchable index.

    Plates (obverse and reverse side by side) are split into two coins, left obverse unless the
    CSV's plate_left column says reverse. Images already in the index are not embedded again.

    Example: pipeline index --run runs/tiny --images catalogs/sale --meta lots.csv --out idx/sale
    """
    with expected_errors(TrainingError, OSError):
        if not run.is_dir():
            raise fail(f"run directory not found: {run}")
        if meta is not None and not meta.is_file():
            raise fail(f"metadata CSV not found: {meta}")
        if approximate is not None and approximate not in KINDS:
            raise fail(f"--approximate must be one of {', '.join(KINDS)}, got {approximate!r}")
        report = index_folder(
            load_run_model(run, checkpoint),
            images,
            out,
            meta_csv=meta,
            kind=approximate,
            warn=lambda line: typer.echo(f"warning: {line}", err=True),
            workers=workers,
            progress=True,
        )
    typer.echo(
        f"{out}: added {report.added} coins, {report.already} images already indexed, "
        f"{len(report.problems)} skipped; {report.total} coins in the index"
    )
    if report.calibration is not None:
        typer.echo(report.calibration.summary())
    if report.domain is not None and report.domain.outside:
        line = report.domain.warning("the indexed coins", "median cosine between them")
        typer.echo(f"warning: {line}")


def _table(results: list[QueryResult]) -> Table:
    extra = [c for c in SHOWN_COLUMNS if any(c in h.item for r in results for h in r.candidates)]
    table = Table(
        "photo", "coin", "rank", "score", "outline", "verdict", "catalog coin", *extra, "file"
    )
    for r in results:
        for n, c in enumerate(r.candidates):
            first = n == 0
            table.add_row(
                Path(r.photo).name if first else "",
                str(r.coin_number) if first else "",
                str(c.rank),
                f"{c.score:.4f}",
                "" if c.outline_distance is None else f"{c.outline_distance:.4f}",
                c.label,
                describe(c.item),
                *(str(c.item.get(col, "")) for col in extra),
                str(c.item.get("file", "")),
            )
    return table


def _search_command(
    photos: list[Path] = typer.Argument(..., help="Photo(s) of the coin(s) to identify."),
    index: Path = typer.Option(..., "--index", help="Index directory from `pipeline index`."),
    top: int = typer.Option(5, "--top", min=1, help="Candidates per coin."),
    sheet: Path | None = typer.Option(None, "--sheet", help="Write a contact-sheet PNG here."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Processes that read and crop photos (default: every core)."
    ),
) -> None:
    """Rank catalog coins for every coin in the photos, with a match / possible / no match verdict.

    Example: pipeline search --index idx/sale phone.jpg --top 5 --sheet sheet.png
    """
    with expected_errors(TrainingError, OSError):
        if sheet is not None:  # before any photo is searched, and never over one of them
            check_output_image(sheet, "--sheet", photos)
        searcher = Searcher.open(index)
        results = searcher.search_photos(photos, top, workers=workers, progress=True)
        if sheet is not None:
            from training.contact_sheet import write_contact_sheet

            write_contact_sheet(results, sheet, top)
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in results], indent=2))
        return
    console = Console()
    console.print(_table(results))
    for r in results:
        console.print(f"{Path(r.photo).name} coin {r.coin_number}: {r.conclusion}")
        if r.domain is not None and r.domain.outside:
            console.print(
                f"warning: {r.domain.warning(f'{Path(r.photo).name} coin {r.coin_number}')}",
                markup=False,
                soft_wrap=True,
            )
    bars = searcher.bars
    if bars is not None:
        console.print(bars.summary(), markup=False, soft_wrap=True)
    grey_bars = searcher.bars_for(grey=True)
    if any(r.bars is not None and r.bars == grey_bars != bars for r in results):
        summary = grey_bars.summary() if grey_bars else ""
        console.print(
            f"grey photos (the index's grey view): {summary}", markup=False, soft_wrap=True
        )
    if searcher.verdict is None:
        note = (
            "labels come from the index's calibration alone"
            if bars
            else "scores are not calibrated"
        )
        console.print(f"note: the run has no verdict.json; {note}", soft_wrap=True)
    if sheet is not None:
        console.print(f"contact sheet: {sheet}")


def register(app: typer.Typer) -> None:
    """Add the `index` and `search` commands to the pipeline app."""
    app.command("index")(_index_command)
    app.command("search")(_search_command)
