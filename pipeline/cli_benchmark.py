r"""`pipeline benchmark`: every model × augmentation × regime, each the mean of split seeds.

Example:
    pipeline benchmark --data data/demo --models resnet-tiny,resnet18 \
        --aug none,standard,tuned --train-on catalog,captures,both --seeds 0,1,2 --out runs/bench
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from pipeline.cli_hierarchy import check_datasets
from pipeline.cli_support import expected_errors, fail
from training.benchmark import (
    COLUMNS,
    BenchmarkRun,
    benchmark_markdown,
    plan_runs,
    run_benchmark,
    summarize,
    table_rows,
)
from training.errors import TrainingError
from training.outputs import check_output_folder
from training.train_config import TrainConfig


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _seeds(text: str) -> list[int]:
    """Split seeds from `0,1,2`; one line and exit 2 for anything else."""
    try:
        seeds = [int(part) for part in _csv(text)]
    except ValueError:
        raise fail(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise fail(f"--seeds must name one or more distinct non-negative integers, got {text!r}")
    return seeds


def _holds_benchmark(folder: Path) -> bool:
    """Whether a folder holds an earlier benchmark: its table, or only training runs."""
    return (folder / "benchmark.md").is_file() or all(
        (p / "config.json").is_file() for p in folder.iterdir()
    )


def benchmark_command(
    data: list[Path] = typer.Option(..., "--data", help="Dataset directory (repeat for several)."),
    models: str = typer.Option("resnet-tiny", help="Comma-separated model names."),
    aug: str = typer.Option("none,standard,tuned", help="Comma-separated augmentation presets."),
    train_on: str = typer.Option(
        "catalog,captures,both", help="Comma-separated regimes (what the training coins give)."
    ),
    seeds: str = typer.Option("0,1,2", help="Split seeds; each row is their mean."),
    epochs: int = typer.Option(5, help="Epochs per run."),
    image_size: int = typer.Option(64, help="Square input side in pixels."),
    batch_size: int = typer.Option(32, help="Images per step."),
    lr: float = typer.Option(1e-3, help="Peak learning rate."),
    steps_per_epoch: int | None = typer.Option(
        None, help="Default: one pass over the training images, at least 100 steps."
    ),
    split: str = typer.Option("0.7,0.1,0.2", help="train,val,test fractions of coins."),
    out: Path = typer.Option(
        Path("runs/benchmark"), "--out", help="Folder for runs, benchmark.md and benchmark.json."
    ),
    cache_dir: Path | None = typer.Option(None, help="Preprocessed-image cache."),
) -> None:
    """Train every model × augmentation × regime on each split seed; table of mean top-1.

    Example: pipeline benchmark --data datasets/sawhill --models resnet-tiny,resnet18 --seeds 0,1,2
    """
    split_seeds = _seeds(seeds)
    with expected_errors(TrainingError, OSError):
        check_datasets(data)
        check_output_folder(out, "a benchmark", _holds_benchmark)
        base = TrainConfig(
            data=[str(d) for d in data], out=str(out), image_size=image_size, epochs=epochs,
            batch_size=batch_size, lr=lr, steps_per_epoch=steps_per_epoch, split=split,
            cache_dir=str(cache_dir) if cache_dir else None,
        )  # fmt: skip
        planned = plan_runs(base, _csv(models), _csv(aug), _csv(train_on), split_seeds)
        progress = Progress(
            TextColumn("benchmark {task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(),
        )  # fmt: skip
        with progress:
            task = progress.add_task("", total=len(planned))

            def done(run: BenchmarkRun) -> None:
                progress.update(task, advance=1, description=Path(run.config.out).name)

            rows = run_benchmark(planned, data, cache_dir, on_done=done)
    summary = summarize(rows)
    table = Table(*COLUMNS, title=f"Top-1 on held-out coins, mean ± sd over seeds {seeds}")
    for cells in table_rows(summary):
        table.add_row(*cells)
    Console().print(table)
    (out / "benchmark.json").write_text(json.dumps({"runs": rows, "rows": summary}, indent=2))
    (out / "benchmark.md").write_text(benchmark_markdown(summary))
    typer.echo(f"wrote {out / 'benchmark.md'}")


def register(app: typer.Typer) -> None:
    """Mount `benchmark` on the pipeline app."""
    app.command("benchmark")(benchmark_command)
