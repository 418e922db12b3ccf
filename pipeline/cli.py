r"""The `pipeline` command: train and evaluate embedding models, benchmark them.

Examples:
    pipeline train --data datasets/sawhill --model resnet-tiny --image-size 64 --epochs 5 \
        --out runs/tiny
    pipeline train --data datasets/sawhill --data datasets/auction --train-on catalog \
        --aug tuned --loss subcenter-arcface --out runs/catalog
    pipeline train --out runs/tiny --data datasets/sawhill --epochs 10 --resume
    pipeline evaluate --run runs/tiny --data datasets/sawhill --protocol all
    pipeline benchmark --data datasets/sawhill --models resnet-tiny,resnet18 \
        --aug none,standard,tuned --train-on catalog,captures,both --seeds 0,1,2 --epochs 5
    pipeline train --task hierarchy --data datasets/sawhill --image-size 64 --epochs 100 \
        --out runs/hierarchy
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli_hierarchy import (
    check_datasets,
    evaluate_hierarchy,
    refuse_other_task,
    train_hierarchy,
)
from pipeline.cli_support import DebugOption, VersionOption, expected_errors, fail, set_debug
from training.collapse import collapse_note, validation_of_epoch
from training.errors import TrainingError
from training.evaluate import (
    PROTOCOLS,
    evaluate_run,
)
from training.hierarchy import ClassifierSettings
from training.hierarchy_run import is_hierarchy_run
from training.init_weights import init_checkpoint, resolve_weights
from training.losses import LossSettings
from training.outputs import check_output_folder
from training.run_folder import read_run_config
from training.run_state import check_resumable
from training.train import train
from training.train_config import TrainConfig

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


@app.callback()
def main(
    debug: DebugOption = False,
    show_version: VersionOption = False,
) -> None:
    """Train, evaluate, search and explain coin-identification models on coinrig datasets."""
    set_debug(debug)


# `pipeline train`'s options. Defaults are read from their one home: TrainConfig and LossSettings
# for an embedding run (which read Preprocess for the preprocessing), ClassifierSettings for
# the hierarchy's learning rate.
_Data = Annotated[
    list[Path], typer.Option("--data", help="Dataset directory (repeat for several).")
]
_Task = Annotated[
    str,
    typer.Option(
        help="embedding (metric learning, the default) | hierarchy (ruler from the obverse, "
        "type from the reverse: cross-validated, then trained on every coin)."
    ),
]
_Out = Annotated[Path, typer.Option("--out", help="Run directory.")]
_Model = Annotated[str, typer.Option(help="Backbone name.")]
_ImageSize = Annotated[int, typer.Option(help="Square input side in pixels.")]
_EmbeddingDim = Annotated[int, typer.Option(help="Embedding length.")]
_Epochs = Annotated[int, typer.Option(help="Epochs (with --resume: the new total).")]
_BatchSize = Annotated[int, typer.Option(help="Images per step (per GPU under torchrun).")]
_PerClass = Annotated[int, typer.Option(help="Images per coin side in a batch.")]
_StepsPerEpoch = Annotated[
    int | None, typer.Option(help="Default: one pass over the training images, at least 100 steps.")
]
_Lr = Annotated[
    float | None,
    typer.Option(help="Peak learning rate, AdamW (default 3e-3 embedding, 2e-3 hierarchy)."),
]
_Loss = Annotated[str, typer.Option(help="arcface | subcenter-arcface | triplet.")]
_Margin = Annotated[float, typer.Option(help="ArcFace angular margin in radians.")]
_MarginWarmup = Annotated[
    float,
    typer.Option(help="Share of the steps over which the ArcFace margin rises from 0 (0: none)."),
]
_Scale = Annotated[
    float,
    typer.Option(help="ArcFace logit scale (64 suits thousands of classes; 16 a few hundred)."),
]
_Aug = Annotated[str, typer.Option(help="Augmentation preset: standard | tuned | archive | none.")]
_TrainOn = Annotated[str, typer.Option(help="captures | catalog | both.")]
_Split = Annotated[str, typer.Option(help="train,val,test fractions of coins.")]
_Seed = Annotated[int, typer.Option(help="Seed of the coin split and of training.")]
_Derotate = Annotated[bool, typer.Option(help="Undo the recorded turntable angle.")]
_Rotations = Annotated[
    int,
    typer.Option(help="Embed every image at this many rotations and average (1 = off; 4 = exact)."),
]
_EmaDecay = Annotated[
    float,
    typer.Option(help="Validate and keep a moving average of the weights (e.g. 0.999; 0 = off)."),
]
_SinglePhotoP = Annotated[
    float,
    typer.Option(
        help="Share of captures shown cut out alone, as a single photo would be (0-1; 0.5 for "
        "models that will search single photos)."
    ),
]
_Resume = Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")]
_Weights = Annotated[
    Path | None,
    typer.Option(
        help="torchvision-style backbone .pth to start from, or a torchvision name (resnet50, "
        "resnet18, convnext_tiny, inception_v3) whose file is in torch's hub cache."
    ),
]
_Init = Annotated[
    Path | None,
    typer.Option(
        help="A run (or checkpoint folder) whose weights start this one, those that fit: "
        "fine-tuning after pretraining (docs/pretraining.md)."
    ),
]
_Strict = Annotated[bool, typer.Option(help="Fail on an unreadable image instead of skipping it.")]
_Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the model.")]
_CacheDir = Annotated[
    Path | None, typer.Option(help="Preprocessed-image cache (default ~/.cache/coinrig).")
]
_Progress = Annotated[bool, typer.Option(help="Show a progress bar.")]
_Prefetch = Annotated[
    int, typer.Option(min=0, help="Batches made ahead in a background thread (0: between steps).")
]
_ValEvery = Annotated[
    int, typer.Option(min=1, help="Validate every N epochs (and after the last).")
]
_Workers = Annotated[
    int | None,
    typer.Option(min=1, help="Processes that preprocess images (default: every core)."),
]
_Folds = Annotated[int, typer.Option(help="hierarchy: cross-validation folds (class-balanced).")]
_PerSide = Annotated[int, typer.Option(help="hierarchy: images per coin side used, at most.")]
_Baseline = Annotated[str, typer.Option(help="hierarchy: sift | none (dense-SIFT baseline).")]


@app.command("train")
def train_command(
    data: _Data,
    task: _Task = "embedding",
    out: _Out = Path("runs/latest"),
    model: _Model = TrainConfig.model,
    image_size: _ImageSize = TrainConfig.image_size,
    embedding_dim: _EmbeddingDim = TrainConfig.embedding_dim,
    epochs: _Epochs = TrainConfig.epochs,
    batch_size: _BatchSize = TrainConfig.batch_size,
    per_class: _PerClass = TrainConfig.per_class,
    steps_per_epoch: _StepsPerEpoch = TrainConfig.steps_per_epoch,
    lr: _Lr = None,
    loss: _Loss = LossSettings.name,
    margin: _Margin = LossSettings.margin_rad,
    margin_warmup: _MarginWarmup = LossSettings.margin_warmup,
    scale: _Scale = LossSettings.scale,
    aug: _Aug = TrainConfig.aug,
    train_on: _TrainOn = TrainConfig.train_on,
    split: _Split = TrainConfig.split,
    seed: _Seed = TrainConfig.seed,
    derotate: _Derotate = TrainConfig.derotate,
    rotations: _Rotations = TrainConfig.rotations,
    ema_decay: _EmaDecay = TrainConfig.ema_decay,
    single_photo_p: _SinglePhotoP = TrainConfig.single_photo_p,
    resume: _Resume = False,
    weights: _Weights = None,
    init: _Init = None,
    strict: _Strict = TrainConfig.strict,
    compile_model: _Compile = TrainConfig.compile,
    prefetch: _Prefetch = TrainConfig.prefetch,
    val_every: _ValEvery = TrainConfig.val_every,
    cache_dir: _CacheDir = None,
    progress: _Progress = True,
    workers: _Workers = None,
    folds: _Folds = 5,
    per_side: _PerSide = 4,
    baseline: _Baseline = "sift",
) -> None:
    """Train an embedding model; writes RUN/{config.json, checkpoints/, metrics.jsonl, curves.png, summary.json}.

    With --task hierarchy: RUN/{config.json, checkpoints/hierarchy/, cv/} instead.

    Example: pipeline train --data datasets/sawhill --model resnet-tiny --image-size 64 --out runs/tiny
    """
    with expected_errors(TrainingError, OSError):
        if task not in ("embedding", "hierarchy"):
            raise fail(f"--task must be embedding or hierarchy, got {task!r}")
        if task == "hierarchy" and (resume or weights is not None or init is not None):
            raise fail("--resume, --weights and --init apply to --task embedding only")
        # before any image is read: a foreign or unwritable --out is refused now, not after
        check_output_folder(out, "a training run", lambda p: (p / "config.json").is_file())
        refuse_other_task(out, task)
    if task == "hierarchy":
        settings = ClassifierSettings(
            model=model, image_size=image_size, epochs=epochs, batch_size=batch_size,
            lr=ClassifierSettings.lr if lr is None else lr, aug=aug, seed=seed,
        )  # fmt: skip
        train_hierarchy(
            data, out, settings, folds=folds, per_side=per_side, derotate=derotate,
            baseline=baseline, cache_dir=cache_dir,
        )  # fmt: skip
        return
    cfg = TrainConfig(
        data=[str(d) for d in data], out=str(out), model=model, image_size=image_size,
        embedding_dim=embedding_dim, epochs=epochs, batch_size=batch_size, per_class=per_class,
        steps_per_epoch=steps_per_epoch, lr=TrainConfig.lr if lr is None else lr,
        loss=LossSettings(name=loss, margin_rad=margin, scale=scale, margin_warmup=margin_warmup),
        aug=aug, train_on=train_on, split=split, seed=seed, derotate=derotate, rotations=rotations,
        ema_decay=ema_decay, single_photo_p=single_photo_p, init=str(init) if init else None,
        weights=str(weights) if weights else None, compile=compile_model, strict=strict,
        cache_dir=str(cache_dir) if cache_dir else None, prefetch=prefetch, val_every=val_every,
    )  # fmt: skip
    with expected_errors(TrainingError, OSError):
        summary = train(
            _resumed_or_new(cfg, data, weights, resume),
            resume=resume,
            show_progress=progress,
            workers=workers,
        )
    _echo_training(out, summary)


def _resumed_or_new(
    cfg: TrainConfig, data: list[Path], weights: Path | None, resume: bool
) -> TrainConfig:
    """The run's saved config (with the new epoch count) when resuming one, else `cfg`, checked.

    Raises:
        typer.Exit: a dataset or the weights file is missing (reported by `fail`).
        RunFolderError: the run to resume is damaged (config.json or checkpoints/last).
        SettingsError: an option that cannot work.
    """
    out = Path(cfg.out)
    if resume and (out / "config.json").exists():
        saved, _ = read_run_config(out)
        if (out / "checkpoints" / "last").exists():
            check_resumable(out / "checkpoints" / "last")
        # The run's own settings win; only the length of training may change. It resumes in
        # the folder it was given (a copied or moved run never writes to where it came from),
        # and caches where this command says (a run folder must not say where we write).
        return replace(saved, epochs=cfg.epochs, out=cfg.out, cache_dir=cfg.cache_dir)
    check_datasets(data)
    if weights is not None:  # a file, or a torchvision name in torch's hub cache
        cfg = replace(cfg, weights=str(resolve_weights(str(weights), cfg.model)))
    if cfg.init is not None:
        init_checkpoint(Path(cfg.init))  # a run to start from, before any image is read
    cfg.check()
    return cfg


def _echo_training(out: Path, summary: dict[str, Any]) -> None:
    """One line for the person at the terminal: epochs, best validation top-1, skipped images."""
    if summary["rank"] != 0:
        return  # under torchrun only rank 0 reports
    best = summary["best_val_top1"]
    best_text = (
        "n/a (no validation coins)"
        if best is None
        else f"{100 * best:.1f}% (epoch {summary['best_epoch']})"
    )
    if summary.get("init"):
        typer.echo(summary["init"])
    typer.echo(
        f"{out}: {summary['epoch']} epochs, best validation top-1 {best_text}, "
        f"{summary['images_skipped']} images skipped, {summary['seconds']:.1f} s"
    )
    best_val = validation_of_epoch(out / "metrics.jsonl", summary["best_epoch"])
    note = collapse_note(best_val, "validation")
    if note:
        typer.echo(note)


@app.command("evaluate")
def evaluate_command(
    run: Path = typer.Option(..., "--run", help="Run directory written by `pipeline train`."),
    data: list[Path] | None = typer.Option(None, "--data", help="Dataset(s); default: the run's."),
    protocol: str = typer.Option("catalog", help=f"{' | '.join(PROTOCOLS)}."),
    checkpoint: str = typer.Option("best", help="Checkpoint folder under RUN/checkpoints."),
    cache_dir: Path | None = typer.Option(None, help="Preprocessed-image cache."),
    strict: bool = typer.Option(False, help="Fail on an unreadable image instead of skipping it."),
    workers: _Workers = None,
) -> None:
    """Retrieval metrics on held-out coins; writes RUN/eval-PROTOCOL/{metrics.json, report.md, failures.png}.

    On a hierarchy run: its classifiers on the labelled coins of --data (RUN/eval-hierarchy).

    Example: pipeline evaluate --run runs/tiny --data datasets/sawhill --protocol catalog
    """
    if is_hierarchy_run(run):
        evaluate_hierarchy(run, list(data or []), cache_dir)
        return
    with expected_errors(TrainingError, OSError):
        if not run.is_dir():
            raise fail(f"run directory not found: {run}")
        check_datasets(list(data or []))
        report = evaluate_run(
            run,
            data=data or None,
            protocol=protocol,
            cache_dir=cache_dir,
            checkpoint=checkpoint,
            strict=strict,
            workers=workers,
            progress=True,
        )
    o = report["overall"]
    for line in _collection_lines(report):
        typer.echo(line)
    Console().print(_accuracy_table(report))
    typer.echo(
        f"{run} [{protocol}]: top-1 {100 * o['top1']:.1f}%, top-5 {100 * o['top5']:.1f}%, "
        f"MAP@R {100 * o['map_at_r']:.1f}% ({o['queries']} queries, {report['coins']} coins) "
        f"→ {run / f'eval-{protocol}'}"
    )
    if "pooled" in o:
        pooled = o["pooled"]
        typer.echo(
            f"every capture of a coin side searched together: top-1 {100 * pooled['top1']:.1f}% "
            f"({pooled['queries']} coin sides)"
        )
    typer.echo(fusion_line(report))
    if "verdict" in report:
        typer.echo(f"same-coin verdict (validation pairs, {run / 'roc.png'}):\n{report['verdict']}")
    note = collapse_note(o, "test")
    if note:
        typer.echo(note)


def fusion_line(report: dict[str, Any]) -> str:
    """The figures with the outline re-ranking, or why there are none."""
    fused, fit = report["outline_fusion"], report["fusion_fit"]
    if fused["weight"] == 0:
        return f"outline re-ranking: off ({fit['note'] or 'weight 0 fitted on validation'})"
    line = (
        f"with the flan's outline (weight {fused['weight']:.3g}, fitted on "
        f"{fit['queries']} validation queries): top-1 {100 * fused['top1']:.1f}%, "
        f"top-5 {100 * fused['top5']:.1f}%"
    )
    if "pooled" in fused:
        line += f", coin sides searched together {100 * fused['pooled']['top1']:.1f}%"
    if fit.get("grey_weight") is not None:
        line += f"; grey queries weigh the outline {fit['grey_weight']:.3g}"
    return line


def _collection_lines(report: dict[str, Any]) -> list[str]:
    """Per collection: whether the run saw it, so which of its coins were evaluated."""
    lines = []
    for c in report["collections"]:
        if c["seen"]:
            lines.append(
                f"collection {c['collection']}: the run trained on it; its {c['held_out']} "
                f"held-out coins (of {c['coins']}) evaluated"
            )
        else:
            lines.append(
                f"collection {c['collection']}: not seen by the run; all its {c['coins']} "
                "coins evaluated"
            )
    return lines


def _accuracy_table(report: dict[str, Any]) -> Table:
    """Top-1/top-5 overall and by light, angle and side: what a person reads first."""
    o = report["overall"]
    table = Table(
        title=f"{report['protocol']} protocol, {report['coins']} held-out coins, {o['queries']} queries"
    )
    for column in ("", "queries", "top-1", "top-5"):
        table.add_column(column, justify="right" if column else "left")
    table.add_row("all", str(o["queries"]), f"{100 * o['top1']:.1f}%", f"{100 * o['top5']:.1f}%")
    for kind, rows in report["breakdown"].items():
        for value, m in rows.items():
            table.add_row(
                f"{kind} {value}",
                str(m["queries"]),
                f"{100 * m['top1']:.1f}%",
                f"{100 * m['top5']:.1f}%",
            )
    return table


if __name__ == "__main__":
    app()


def _mount_commands() -> None:
    # search and explanations live in their own modules to keep this one small
    from pipeline.cli_benchmark import register as register_benchmark
    from pipeline.cli_explain import register as register_explain
    from pipeline.cli_hierarchy import register as register_hierarchy
    from pipeline.cli_search import register as register_search
    from pipeline.cli_segmenter import register as register_segmenter

    register_search(app)
    register_segmenter(app)
    register_explain(app)
    register_hierarchy(app)
    register_benchmark(app)


_mount_commands()
