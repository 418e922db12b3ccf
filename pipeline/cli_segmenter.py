"""`pipeline segmenter train`: fit the single-photo coin segmenter on twin renders.

The package ships weights made by this command's defaults (training/weights/); rerun it to
retrain after changing the network or the twin, then commit the file. See docs/segmentation.md.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

import numpy as np
import typer

from pipeline.cli_support import expected_errors, fail
from pipeline.segmenter_data import make_sample
from training.checkpoint import write_atomic
from training.errors import TrainingError
from training.parallel import ordered_map, progress_bar, resolve_workers
from training.segmenter import WEIGHTS_PATH, save_segmenter
from training.segmenter_fit import FitSettings, fit_segmenter

segmenter_app = typer.Typer(no_args_is_help=True, help="The single-photo coin segmenter.")


def _samples(count: int, seed: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` twin samples of stream `seed` as (crops, targets), rendered on `workers` cores."""
    crops, targets = [], []
    with progress_bar(count, "render") as advance:
        for sample in ordered_map(partial(make_sample, seed=seed), range(count), workers):
            crops.append(sample.crop)
            targets.append(sample.coverage)
            advance(1)
    return np.stack(crops), np.stack(targets)


@segmenter_app.command("train")
def train_segmenter_command(
    out: Path = typer.Option(WEIGHTS_PATH, "--out", help="Weights file to write (safetensors)."),
    samples: int = typer.Option(4000, help="Twin photos to render for training."),
    steps: int = typer.Option(FitSettings.steps, help="Optimiser steps."),
    batch_size: int = typer.Option(FitSettings.batch_size, help="Crops per step."),
    lr: float = typer.Option(FitSettings.lr, help="Peak learning rate (one-cycle schedule)."),
    seed: int = typer.Option(0, help="Sample stream and initialisation seed."),
    workers: int = typer.Option(0, help="Render processes (0: every core)."),
) -> None:
    """Render twin photos with their true coverage and fit the segmenter to them.

    Example: pipeline segmenter train --out runs/segmenter.safetensors --samples 4000 --steps 3000
    """
    if samples < 1 or steps < 1 or batch_size < 1 or not lr > 0:
        raise fail("--samples, --steps, --batch-size and --lr must be positive")
    if out.is_dir() or not out.parent.is_dir():
        # checked before minutes of rendering, not when the weights are written
        raise fail(f"--out must be a file in an existing folder: {out}")
    with expected_errors(TrainingError, OSError):
        started = time.monotonic()
        crops, targets = _samples(samples, seed, resolve_workers(workers))
        losses: list[float] = []
        with progress_bar(steps, "fit") as advance:

            def on_step(step: int, loss: float) -> None:
                losses.append(loss)
                advance(1)

            model = fit_segmenter(crops, targets, FitSettings(steps, batch_size, lr, seed), on_step)
        save_segmenter(model, out)
        tail = float(np.mean(losses[-100:]))
        record = {"samples": samples, "steps": steps, "batch_size": batch_size, "lr": lr,
                  "seed": seed, "final_loss": tail, "seconds": time.monotonic() - started}  # fmt: skip
        text = json.dumps(record, indent=2) + "\n"
        write_atomic(out.with_suffix(".json"), lambda p: p.write_text(text))
    typer.echo(f"wrote {out} (loss over the last 100 steps {tail:.4f})")


def register(app: typer.Typer) -> None:
    """Mount `segmenter` on the pipeline app."""
    app.add_typer(segmenter_app, name="segmenter")
