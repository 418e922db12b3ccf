r"""`pipeline explain`: which regions drive a match.

Examples:
    pipeline explain --run runs/tiny --query phone.jpg --method landmarks --epsilon 0.5
    pipeline explain --run runs/trunc --query phone.jpg --against catalog/SIM-0003/obverse.jpg \
        --method match --out explained/
    pipeline explain --run runs/tiny --query phone.jpg --method occlusion --window 11
    pipeline explain --run runs/tiny --query phone.jpg --method landmarks --target margin \
        --epsilon 0.1
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from pipeline.cli_support import expected_errors, fail
from training.cache import crop_photo, default_cache_dir
from training.coinfind import find_coin
from training.data import load_images, read_datasets, reference_records
from training.errors import TrainingError
from training.explain import METHODS, Explanation, background_baseline, explain_match
from training.explain.overlay import save_explanation
from training.imageio import load_photo
from training.outputs import check_output_folder, holds_files
from training.run_folder import read_run_config
from training.search import RunModel, embed_crops, load_run_model

TARGETS = ("similarity", "margin")


def _crop(path: Path, loaded: RunModel) -> np.ndarray:
    """The coin in a photo, cropped and resized exactly as the run's training preprocessed it."""
    image = load_photo(path)
    return crop_photo(image, find_coin(image), loaded.preprocess)


def _reference_gallery(run: Path, loaded: RunModel) -> tuple[list[np.ndarray], list[str]]:
    """The reference images of the run's datasets, cut out as training did, and their views."""
    if not (run / "config.json").is_file():
        raise fail(f"{run} records no datasets to match against; give --against IMAGE")
    data = [Path(d) for d in read_run_config(run)[0].data]
    refs = list(reference_records(read_datasets(data)).values())
    bank, _ = load_images(refs, loaded.preprocess, default_cache_dir())
    if not len(bank):
        raise fail(f"no readable reference images in {', '.join(map(str, data))}")
    crops = [np.asarray(bank.pixels([i])[0]) for i in range(len(bank))]
    return crops, [r.view for r in bank.records]


def _match_and_rival(
    run: Path, loaded: RunModel, query: np.ndarray, rival: bool
) -> tuple[np.ndarray, str, list[np.ndarray], list[str]]:
    """The closest reference to the query and, if asked, the runner-up: the closest other coin.

    The runner-up is taken among references of the matched image's side: the other side of
    the same coin is no rival, and neither is the other side of another coin.
    """
    crops, views = _reference_gallery(run, loaded)
    sims = embed_crops(loaded.model, crops) @ embed_crops(loaded.model, [query])[0]
    order = [int(i) for i in np.argsort(-sims)]
    best = order[0]
    if not rival:
        return crops[best], views[best], [], []
    coin, side = views[best].rsplit("/", 1)
    views_split = [v.rsplit("/", 1) for v in views]
    others = [i for i in order if views_split[i][0] != coin and views_split[i][1] == side]
    if not others:
        raise fail(f"no reference of another coin's {side} to take the margin over; give --rival")
    return crops[best], views[best], [crops[others[0]]], [views[others[0]]]


def _explain_command(
    run: Path = typer.Option(..., "--run", help="Training run (or checkpoint folder)."),
    query: Path = typer.Option(..., "--query", help="Photo of the coin to explain."),
    against: Path | None = typer.Option(
        None, "--against", help="Matched image (default: the closest reference of the run's data)."
    ),
    method: str = typer.Option("landmarks", help=f"{' | '.join(METHODS)}."),
    target: str = typer.Option(
        "similarity",
        help="similarity: to the matched image | margin: that similarity minus the highest to "
        "a rival (--rival, else the closest reference of another coin), which cancels the die "
        "design that same-die coins share.",
    ),
    rival: list[Path] = typer.Option(
        [], "--rival", help="Rival image for --target margin (repeat; e.g. same-die coins)."
    ),
    epsilon: float = typer.Option(
        0.5, help="Landmarks: allowed drop of the explained score (0.1-1.0; margins are smaller)."
    ),
    window: int = typer.Option(21, help="Landmark window / occlusion and saliency patch, px."),
    stride: int | None = typer.Option(None, help="Landmark window stride (default window/2)."),
    superpixels: int | None = typer.Option(
        None, help="Landmarks on about this many SLIC superpixels instead of windows."
    ),
    checkpoint: str = typer.Option("best", help="Checkpoint folder under RUN/checkpoints."),
    out: Path | None = typer.Option(None, "--out", help="Folder (default RUN/explain/QUERY)."),
) -> None:
    """Show which regions of a coin drive its match: overlay PNGs (red = more) and the map as .npy.

    Example: pipeline explain --run runs/tiny --query phone.jpg --method landmarks --epsilon 0.5
    """
    folder = out or run / "explain" / query.stem
    with expected_errors(TrainingError, ValueError, OSError):
        check_output_folder(folder, "explanations", holds_files((".png", ".npy")))
        if method not in METHODS:
            raise fail(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
        if not 0 <= epsilon <= 2:
            raise fail(f"--epsilon must be in [0, 2] (a cosine similarity drop), got {epsilon}")
        if window < 1 or (stride is not None and stride < 1):
            raise fail("--window and --stride must be positive pixel counts")
        if superpixels is not None and superpixels < 1:
            raise fail(f"--superpixels must be a positive count, got {superpixels}")
        if target not in TARGETS:
            raise fail(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")
        if rival and target != "margin":
            raise fail("--rival is only used with --target margin")
        margin = target == "margin"
        if margin and against is not None and not rival:
            raise fail("--target margin with --against needs --rival IMAGE (the rival to beat)")
        loaded = load_run_model(run, checkpoint)
        query_crop = _crop(query, loaded)
        rival_crops = [_crop(r, loaded) for r in rival]
        rival_names = [r.name for r in rival]
        if against is not None:
            against_crop, against_name = _crop(against, loaded), against.name
        else:
            against_crop, against_name, runner_up, runner_up_names = _match_and_rival(
                run, loaded, query_crop, margin and not rival
            )
            if not rival:
                rival_crops, rival_names = runner_up, runner_up_names
        result = explain_match(
            loaded.model.cpu(),
            query_crop,
            against_crop,
            method,
            epsilon=epsilon,
            window=window,
            stride=stride,
            superpixels=superpixels,
            rivals=rival_crops,
            baseline=background_baseline(loaded.preprocess.mask_background),
        )
        written = _save(folder, result, query_crop, against_crop)
    rival_name = None if result.rival is None else rival_names[result.rival]
    _report(result, against_name, rival_name, written)


def _save(folder: Path, result: Explanation, query: np.ndarray, against: np.ndarray) -> list[Path]:
    png, npy = save_explanation(
        folder, f"{result.method}-query", query, result.heat, value_range=result.value_range
    )
    written = [png, npy]
    if result.against_heat is not None:
        written.append(
            save_explanation(folder, f"{result.method}-against", against, result.against_heat)[0]
        )
    return written


def _report(
    result: Explanation, against_name: str, rival_name: str | None, written: list[Path]
) -> None:
    if rival_name is None:
        parts = [f"{result.method} vs {against_name}: similarity {result.initial_score:.3f}"]
    else:
        parts = [
            f"{result.method} vs {against_name}: margin {result.initial_score:.3f} "
            f"over rival {rival_name}"
        ]
    if result.fraction_kept is not None:
        parts.append(
            f"final score {result.score:.3f}, fraction kept {100 * result.fraction_kept:.1f}%"
        )
    parts.append(f"{result.iterations} iterations, {result.seconds:.2f} s")
    typer.echo("; ".join(parts))
    for path in written:
        typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add `explain` to the pipeline command."""
    app.command("explain")(_explain_command)
