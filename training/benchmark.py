"""`pipeline benchmark`: the seed poster's table, each row the mean of several split seeds.

A row is one model × augmentation preset × training regime. Each is trained once per split
seed (the seed picks which coins train and which are held out, and seeds the training) and
scored on its held-out coins two ways: queries that are augmented copies of each test coin's
catalog image (the poster's "augmented catalog" column, what training on one image per coin
optimises) and rig captures against the catalog images (the catalog protocol). One split is
one draw: a row reports the mean, the spread and every seed's figure.

Each run's scores are kept in RUN/benchmark-score.json, so a benchmark that stopped goes on
where it stopped and a finished one is re-tabled without training again.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from training.data import load_images, read_datasets
from training.evaluate import augmented_catalog_top1, load_run, run_protocol
from training.train import train
from training.train_config import TrainConfig

SCORE_FILE = "benchmark-score.json"
FIGURES = ("augmented_catalog_top1", "capture_top1")
COLUMNS = (
    "model",
    "augmentation",
    "trained on",
    "augmented catalog top-1",
    "capture (real-photo) top-1",
    "splits",
)


@dataclass(frozen=True)
class Cell:
    """One row of the table: a model, an augmentation preset, a training regime."""

    model: str
    aug: str
    train_on: str


@dataclass(frozen=True)
class BenchmarkRun:
    """One training of one cell on one split seed."""

    cell: Cell
    seed: int
    config: TrainConfig


def plan_runs(
    base: TrainConfig,
    models: Sequence[str],
    augs: Sequence[str],
    regimes: Sequence[str],
    seeds: Sequence[int],
) -> list[BenchmarkRun]:
    """Every cell × seed, each with its own run folder under base.out, checked before any trains.

    Raises:
        SettingsError: a model, preset or regime that `TrainConfig.check` refuses.
    """
    runs = []
    for model in models:
        for aug in augs:
            for regime in regimes:
                cell = Cell(model, aug, regime)
                for seed in seeds:
                    out = Path(base.out) / f"{model}-{aug}-{regime}-seed{seed}"
                    config = replace(
                        base, out=str(out), model=model, aug=aug, train_on=regime, seed=seed
                    )
                    config.check()
                    runs.append(BenchmarkRun(cell, seed, config))
    return runs


def score_run(run: Path, data: Sequence[Path], cache_dir: Path | None) -> dict[str, float]:
    """Augmented-catalog and capture top-1 of a run's best checkpoint on its held-out coins."""
    trained = load_run(run)
    bank, _ = load_images(
        read_datasets(list(data)), trained.preprocess, cache_dir or trained.cache_dir
    )
    test = trained.held_out(bank)
    capture, _, _, _ = run_protocol(trained.model, bank, test, "catalog")
    return {
        "augmented_catalog_top1": augmented_catalog_top1(trained.model, bank, test),
        "capture_top1": float(capture["top1"]),
    }


def _kept_scores(path: Path) -> dict[str, float] | None:
    """The scores an earlier benchmark kept for a run; None if absent or not a score file."""
    try:
        scores = json.loads(path.read_text())
    except (OSError, ValueError):  # absent, unreadable or not JSON: the run is trained again
        return None
    if isinstance(scores, dict) and all(isinstance(scores.get(k), float) for k in FIGURES):
        return {k: float(scores[k]) for k in FIGURES}
    return None


def run_one(
    planned: BenchmarkRun, data: Sequence[Path], cache_dir: Path | None
) -> dict[str, float]:
    """Train and score one run, or read the scores it kept from an earlier benchmark."""
    out = Path(planned.config.out)
    score_file = out / SCORE_FILE
    kept = _kept_scores(score_file)
    if kept is not None:
        return kept
    train(planned.config, show_progress=False)
    scores = score_run(out, data, cache_dir)
    tmp = score_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(scores))
    tmp.replace(score_file)  # a half-written score file must never be read back as a result
    return scores


def run_benchmark(
    planned: Sequence[BenchmarkRun],
    data: Sequence[Path],
    cache_dir: Path | None,
    on_done: Callable[[BenchmarkRun], None] = lambda run: None,
) -> list[dict[str, Any]]:
    """Every planned run's scores, one dict per run (cell, seed and both figures)."""
    rows = []
    for run in planned:
        scores = run_one(run, data, cache_dir)
        rows.append({"model": run.cell.model, "aug": run.cell.aug,
                     "train_on": run.cell.train_on, "seed": run.seed, **scores})  # fmt: skip
        on_done(run)
    return rows


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per cell, in first-seen order: each figure's mean, sd (0 for one seed) and values."""
    cells: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for run in rows:
        cells.setdefault((run["model"], run["aug"], run["train_on"]), []).append(run)
    summary = []
    for (model, aug, regime), runs in cells.items():
        row: dict[str, Any] = {"model": model, "aug": aug, "train_on": regime}
        row["seeds"] = [r["seed"] for r in runs]
        for figure in FIGURES:
            values = [float(r[figure]) for r in runs]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            row[figure] = {"mean": statistics.mean(values), "sd": sd, "values": values}
        summary.append(row)
    return summary


def _figure(cell: dict[str, Any]) -> str:
    values = ", ".join(f"{100 * v:.1f}" for v in cell["values"])
    return f"{100 * cell['mean']:.1f} ± {100 * cell['sd']:.1f} % ({values})"


def table_rows(summary: Sequence[dict[str, Any]]) -> list[list[str]]:
    """The table's cells as text, in COLUMNS order."""
    return [
        [
            row["model"],
            row["aug"],
            row["train_on"],
            *(_figure(row[figure]) for figure in FIGURES),
            str(len(row["seeds"])),
        ]
        for row in summary
    ]


def benchmark_markdown(summary: Sequence[dict[str, Any]]) -> str:
    """The seed poster's table in Markdown: one row per model × augmentation × regime."""
    lines = [
        "# Benchmark",
        "",
        "Top-1 on held-out coins, mean ± sd over the split seeds (each seed's figure in "
        "brackets). Augmented catalog: queries are augmented copies of each test coin's "
        "catalog image. Capture: queries are rig photos against the catalog images "
        "(catalog protocol).",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(summary)]
    return "\n".join(lines) + "\n"
