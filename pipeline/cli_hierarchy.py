r"""Ruler → type classification: `pipeline classify`, `train --task hierarchy`, `evaluate`.

Examples:
    pipeline train --task hierarchy --data datasets/sawhill --image-size 64 --epochs 100 \
        --out runs/hierarchy
    pipeline evaluate --run runs/hierarchy --data datasets/new-finds
    pipeline classify --data datasets/sawhill --model resnet-tiny --image-size 64 --epochs 10 \
        --folds 5 --baseline sift --out runs/classify
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli_support import expected_errors, fail
from training.errors import TrainingError
from training.hierarchy import ClassifierSettings, load_labelled_images, paired_line
from training.hierarchy_run import (
    ROWS,
    TASK,
    cross_validate_methods,
    evaluate_hierarchy_run,
    run_task,
    train_hierarchy_run,
    write_cv_results,
)
from training.outputs import check_output_folder


def _warn(line: str) -> None:
    typer.echo(f"warning: {line}", err=True)


def check_datasets(data: list[Path]) -> None:
    """Refuse a dataset folder that does not exist, in one line."""
    for d in data:
        if not d.is_dir():
            raise fail(f"dataset directory not found: {d}")


def refuse_other_task(out: Path, task: str) -> None:
    """Refuse to write a run of one task over a run of another in the same folder."""
    existing = run_task(out)
    if existing is not None and existing != task:
        raise fail(
            f"{out} holds a run of --task {existing}; give --out a new folder for --task {task}"
        )


def check_counts(**counts: int) -> None:
    """Refuse a count option under 1 (`--folds 0`, `--per-side -1`), naming it."""
    for name, value in counts.items():
        if value < 1:
            raise fail(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def parse_baseline(baseline: str) -> bool:
    """Whether to run the dense-SIFT baseline (`sift`) or not (`none`)."""
    if baseline not in ("sift", "none"):
        raise fail(f"--baseline must be sift or none, got {baseline!r}")
    return baseline == "sift"


def print_cv_table(results: dict[str, dict[str, Any]]) -> None:
    """The paper's table: balanced accuracy ± spread over folds, then each method's paired gain."""
    first = results["cnn"]
    table = Table(
        "method",
        *(title for _, title in ROWS),
        title=f"Balanced accuracy, {first['folds']}-fold CV, {first['coins']} coins, "
        f"{first['types']} types, {first['rulers']} rulers",
    )
    for result in results.values():
        table.add_row(
            result["method"],
            *(
                f"{100 * result[k]['balanced_accuracy']:.1f}% ± {100 * result[k]['fold_std']:.1f}"
                for k, _ in ROWS
            ),
        )
    Console().print(table)
    for result in results.values():
        typer.echo(paired_line(result))


def train_hierarchy(
    data: list[Path],
    out: Path,
    settings: ClassifierSettings,
    *,
    folds: int,
    per_side: int,
    derotate: bool,
    baseline: str,
    cache_dir: Path | None,
) -> None:
    """`pipeline train --task hierarchy`: cross-validate, train on every coin, save, report."""
    with expected_errors(TrainingError, ValueError, OSError):
        refuse_other_task(out, TASK)
        check_datasets(data)
        check_counts(folds=folds, per_side=per_side)
        results = train_hierarchy_run(
            data,
            out,
            settings,
            folds=folds,
            per_side=per_side,
            derotate=derotate,
            baseline=parse_baseline(baseline),
            cache_dir=cache_dir,
            warn=_warn,
        )
    print_cv_table(results)
    typer.echo(
        f"{out}: ruler and type classifiers trained on every coin → {out / 'checkpoints'}; "
        f"cross-validation → {out / 'cv'}"
    )


def evaluate_hierarchy(run: Path, data: list[Path], cache_dir: Path | None) -> None:
    """`pipeline evaluate` on a hierarchy run: its saved classifiers on other labelled coins."""
    with expected_errors(TrainingError, ValueError, OSError):
        if not data:
            raise fail(
                "a hierarchy run is evaluated on other coins: give --data (its cross-validation "
                f"is in {run / 'cv'})"
            )
        check_datasets(data)
        report = evaluate_hierarchy_run(run, data, cache_dir=cache_dir, warn=_warn)
    table = Table(
        "classifier",
        "balanced accuracy",
        "accuracy",
        title=f"{run} on {report['coins']} coins ({report['pairs']} obverse-reverse pairs)",
    )
    for key, title in ROWS:
        row = report[key]
        table.add_row(
            title, f"{100 * row['balanced_accuracy']:.1f}%", f"{100 * row['accuracy']:.1f}%"
        )
    Console().print(table)
    typer.echo(f"wrote {run / 'eval-hierarchy'}")


def classify_command(
    data: list[Path] = typer.Option(..., "--data", help="Dataset directory (repeat for several)."),
    model: str = typer.Option("resnet-tiny", help="Backbone of both classifiers."),
    image_size: int = typer.Option(64, help="Square input side in pixels."),
    epochs: int = typer.Option(10, help="Epochs per classifier and fold."),
    batch_size: int = typer.Option(32, help="Images per step."),
    lr: float = typer.Option(2e-3, help="Peak learning rate (AdamW, cosine decay)."),
    aug: str = typer.Option(
        "tuned", help="Augmentation preset: standard | tuned | archive | none."
    ),
    folds: int = typer.Option(5, help="Cross-validation folds (class-balanced, by coin)."),
    per_side: int = typer.Option(4, help="Images per coin side used, at most."),
    baseline: str = typer.Option("sift", help="sift | none: also run the dense-SIFT baseline."),
    derotate: bool = typer.Option(False, help="Undo the recorded turntable angle."),
    seed: int = typer.Option(0, help="Seed of the folds and of training."),
    cache_dir: Path | None = typer.Option(None, help="Preprocessed-image cache."),
    out: Path = typer.Option(Path("runs/classify"), "--out", help="Folder for results."),
) -> None:
    """Cross-validated ruler → type classification vs reverse-only, obverse-only and dense SIFT.

    Writes OUT/results.json and OUT/{cnn,sift}-{reverse_only,obverse_only,hierarchy}.png; saves
    no model (`pipeline train --task hierarchy` does both).

    Example: pipeline classify --data datasets/sawhill --epochs 10 --folds 5 --out runs/classify
    """
    with expected_errors(TrainingError, ValueError, OSError):
        check_datasets(data)
        check_output_folder(out, "classification results", lambda p: (p / "results.json").is_file())
        check_counts(folds=folds, per_side=per_side)
        run_baseline = parse_baseline(baseline)
        settings = ClassifierSettings(
            model=model, image_size=image_size, epochs=epochs, batch_size=batch_size, lr=lr,
            aug=aug, seed=seed,
        )  # fmt: skip
        settings.check()
        images = load_labelled_images(
            data, image_size, cache_dir=cache_dir, per_side=per_side, derotate=derotate
        )
        results = cross_validate_methods(
            images, settings, folds=folds, seed=seed, baseline=run_baseline, warn=_warn
        )
    write_cv_results(out, results)
    print_cv_table(results)
    typer.echo(f"wrote {out / 'results.json'} and confusion matrices")


def register(app: typer.Typer) -> None:
    """Add `classify` to the pipeline command."""
    app.command("classify")(classify_command)
