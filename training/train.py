r"""Train an embedding model with a metric-learning loss; keep the best by validation top-1.

Read `train` top to bottom like nanoGPT's train.py: settings (training.train_config), data,
model, loss and optimizer, then one loop of get_batch → augment → forward → loss → step, with
validation and a checkpoint at the end of every epoch (or every --val-every epochs); the helpers
above it are its steps. Batches are made ahead in a background thread (training.batches:
gather, copy and augmentation overlap the model step; with --prefetch 0 the same seed trains
the same weights, at the same thread counts). Validation is the catalog protocol's top-1 on the
validation coins (the same question the test answers, on coins the model never saw); each
epoch's log row has its seconds.

Several GPUs (one process each; RANK/WORLD_SIZE/LOCAL_RANK come from torchrun):

    torchrun --standalone --nproc_per_node=4 -m pipeline.cli train --data datasets/sawhill \
        --model resnet50-truncated --out runs/sawhill-r50

Each rank draws its own batches; gradients of the model and of the loss's class centres are
averaged by DistributedDataParallel; only rank 0 validates, logs and writes checkpoints (each
machine's first rank builds the image cache, the others then read it); at the end the ranks
check that their weights are bit-identical (summary.json's `ranks_agree`). Run for real, two
ranks on gloo, by tests/test_distributed.py.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from training.augment import build_augment
from training.batches import BatchSource, Prefetcher, TrainingSet, make_batches, training_set
from training.checkpoint import save_checkpoint
from training.data import (
    BalancedSampler,
    ImageBank,
    LoadReport,
    Split,
    load_images,
    parse_split,
    read_datasets,
    split_coins,
)
from training.distributed import Distributed, setup_distributed
from training.errors import SettingsError
from training.evaluate import autocast, run_protocol
from training.init_weights import init_from
from training.losses import build_loss, margin_at, set_margin
from training.models.embedding import EmbeddingModel, build_model
from training.report import write_curves
from training.run_state import check_finite_loss, json_safe, metrics_log
from training.run_state import load_state as _load_state
from training.run_state import save_state as _save_state
from training.train_config import TrainConfig, default_steps_per_epoch


def lr_at(
    step: int, *, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float
) -> float:
    """Linear warm-up to base_lr, then cosine decay to min_lr at total_steps."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (base_lr - min_lr)


class Objective(nn.Module):
    """Model and loss in one module, so DDP averages the loss's class centres too."""

    def __init__(self, model: nn.Module, loss: nn.Module):
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scalar loss of a batch (embeddings in float32: the margins need the precision)."""
        with autocast(x.device):
            emb = self.model(x)
        return self.loss(emb.float(), labels)


@contextmanager
def _progress(enabled: bool) -> Iterator[Progress]:
    """A rich progress bar with images/s (silent when disabled: tests, non-zero ranks)."""
    progress = Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  {task.fields[ips]:.0f} img/s"),
        TimeRemainingColumn(),
        disable=not enabled,
    )
    with progress:
        yield progress


@dataclass
class _Optimised:
    """The model and what trains it: its loss, the two as one objective, optimizer, average."""

    model: EmbeddingModel
    loss_fn: nn.Module
    objective: nn.Module  # model and loss together; DistributedDataParallel under torchrun
    opt: torch.optim.Optimizer
    schedule: Callable[[int], float]  # step → learning rate
    margin: Callable[[int], float]  # step → the loss's angular margin (its warm-up)
    ema: AveragedModel | None
    init: str | None = None  # where the starting weights came from (--init), in one line

    @property
    def evaluated(self) -> EmbeddingModel:
        """The weights validated and kept as `best`: the moving average when there is one."""
        return cast(EmbeddingModel, self.ema.module) if self.ema is not None else self.model


def _build_model(
    cfg: TrainConfig, device: torch.device, init: str | None = None
) -> tuple[EmbeddingModel, str | None]:
    """The embedding model as configured, on `device` (channels-last on a GPU).

    `init`: a run whose fitting weights it starts from (training.init_weights); returns the
    model and, then, the line saying what was copied.

    Raises:
        SettingsError: the model cannot be built (unknown name, unreadable weights), or `init`
            is no run, or one of another model family.
    """
    try:
        model = build_model(
            cfg.model,
            embedding_dim=cfg.embedding_dim,
            image_size=cfg.image_size,
            weights=Path(cfg.weights) if cfg.weights else None,
            bn_neck=cfg.bn_neck,
            rotations=cfg.rotations,
        )
    except ValueError as e:
        raise SettingsError(str(e)) from e
    report = init_from(model, Path(init)).line() if init is not None else None
    model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model, report


def _build_optimised(
    cfg: TrainConfig, ddp: Distributed, classes: int, total_steps: int, resume: bool = False
) -> _Optimised:
    """Model (from --init's weights, unless resuming), loss, optimizer, schedule and average."""
    # Seeded here, not only at the start of train: building the cache may draw from torch's
    # generator (the segmenter's first construction does), so a run that builds its cache
    # would start from other weights than the same run reading it.
    torch.manual_seed(cfg.seed + ddp.rank)
    device = ddp.device
    # a resumed run loads its own checkpoint: --init's run may be long gone by then
    resuming = resume and (Path(cfg.out) / "checkpoints" / "last").exists()
    model, report = _build_model(cfg, device, None if resuming else cfg.init)
    loss_fn = build_loss(cfg.loss, classes, cfg.embedding_dim).to(device)
    objective: nn.Module = Objective(torch.compile(model) if cfg.compile else model, loss_fn)  # type: ignore[arg-type]
    if ddp.world_size > 1:
        objective = DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None
        )
    # The loss's class centres get no weight decay: ArcFace normalises them, so decay only
    # shrinks their norm, which inflates their effective step size under Adam. (A larger learning
    # rate for them was measured and hurt: the random initial centres are nearly orthogonal, a
    # good target that is best left to move slowly.)
    opt = torch.optim.AdamW(
        [
            {"params": list(model.parameters()), "weight_decay": cfg.weight_decay},
            {"params": list(loss_fn.parameters()), "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    schedule = functools.partial(
        lr_at,
        base_lr=cfg.lr,
        warmup_steps=max(1, int(cfg.warmup_fraction * total_steps)),
        total_steps=total_steps,
        min_lr=cfg.lr * cfg.min_lr_fraction,
    )
    # The average follows the raw model's weights and BatchNorm statistics (use_buffers).
    ema = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        if cfg.ema_decay > 0
        else None
    )
    margin = functools.partial(margin_at, settings=cfg.loss, total_steps=total_steps)
    return _Optimised(model, loss_fn, objective, opt, schedule, margin, ema, report)


@dataclass
class _Loop:
    """Where the loop is: optimizer steps taken and images seen since this process started."""

    step: int
    images_seen: int = 0
    started: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class _EpochResult:
    """One epoch's mean training loss, its duration and throughput over every process."""

    train_loss: float
    seconds: float
    images_per_s: float


def _step(
    parts: _Optimised, batches: BatchSource | Prefetcher, lr: float, margin: float
) -> tuple[torch.Tensor, int]:
    """One optimizer step at learning rate `lr` and loss margin `margin`; returns loss and size."""
    for group in parts.opt.param_groups:
        group["lr"] = lr
    set_margin(parts.loss_fn, margin)
    x, y = batches.next()
    loss = parts.objective(x, y)
    parts.opt.zero_grad(set_to_none=True)
    loss.backward()
    parts.opt.step()
    if parts.ema is not None:
        parts.ema.update_parameters(parts.model)
    return loss, len(y)


def _train_epoch(
    cfg: TrainConfig,
    epoch: int,
    steps: int,
    parts: _Optimised,
    batches: BatchSource | Prefetcher,
    loop: _Loop,
    progress: Progress,
    log: Callable[[dict[str, Any]], None],
    world_size: int,
) -> _EpochResult:
    """`steps` optimizer steps, logging the loss every cfg.log_every steps."""
    task = progress.add_task("train", total=steps, epoch=epoch + 1, loss=0.0, ips=0.0)
    parts.objective.train()
    epoch_start = time.perf_counter()
    loss_sum = torch.zeros((), device=batches.device)
    for _ in range(steps):
        lr = parts.schedule(loop.step)
        loss, size = _step(parts, batches, lr, parts.margin(loop.step))
        loop.step += 1
        loop.images_seen += size
        loss_sum += loss.detach()
        if loop.step % cfg.log_every == 0:
            value = loss.item()  # a host-device sync point: only every log_every steps
            ips = loop.images_seen / (time.perf_counter() - loop.started)
            progress.update(task, loss=value, ips=ips)
            log({"kind": "step", "step": loop.step, "epoch": epoch + 1, "loss": value, "lr": lr})
        progress.advance(task)
    seconds = time.perf_counter() - epoch_start
    result = _EpochResult(
        train_loss=(loss_sum / steps).item(),
        seconds=seconds,
        images_per_s=steps * cfg.batch_size * world_size / seconds,
    )
    progress.update(task, loss=result.train_loss, ips=result.images_per_s)
    check_finite_loss(result.train_loss, epoch, log)  # a diverged epoch is logged, never saved
    return result


def _end_epoch(
    epoch: int,
    step: int,
    result: _EpochResult,
    parts: _Optimised,
    bank: ImageBank,
    split: Split,
    state: dict[str, Any],
    checkpoints: Path,
    log: Callable[[dict[str, Any]], None],
    validate: bool = True,
) -> dict[str, Any]:
    """Validate (if `validate`), log the epoch, save `last` (and `best` if validation improved).

    Returns the new state. Without validation coins `best` follows `last`; on an epoch that
    skips validation (--val-every) `best` stays as it is.
    """
    evaluated = parts.evaluated
    val_started = time.perf_counter()
    val = run_protocol(evaluated, bank, list(split.val), "catalog")[0] if validate else None
    val_top1 = val["top1"] if val else None
    log(
        {
            "kind": "epoch",
            "epoch": epoch + 1,
            "step": step,
            "train_loss": result.train_loss,
            "val": val,
            "seconds": result.seconds,
            "val_seconds": time.perf_counter() - val_started,
            "images_per_s": result.images_per_s,
        }
    )
    improved = (not split.val or validate) and (
        state["best_val_top1"] is None
        or (val_top1 is not None and val_top1 > state["best_val_top1"])
    )
    state = {
        "epoch": epoch + 1,
        "step": step,
        "best_val_top1": val_top1 if improved else state["best_val_top1"],
        "best_epoch": epoch + 1 if improved else state["best_epoch"],
    }
    _save_state(checkpoints / "last", parts.model, parts.loss_fn, parts.opt, state, parts.ema)
    if improved:
        save_checkpoint(checkpoints / "best", evaluated)
    return state


def _batch_source(
    cfg: TrainConfig,
    bank: ImageBank,
    data: TrainingSet,
    augment: Callable[[torch.Tensor], torch.Tensor],
    ddp: Distributed,
    start_epoch: int,
) -> BatchSource:
    """The training batches, drawn from generators seeded for this rank and starting epoch.

    Seeds depend on rank (each GPU its own batches) and on the epoch a resumed run starts at (so
    it does not replay the first epochs' batches and augmentations).
    """
    stream = cfg.seed + 1000 * ddp.rank + 100_000 * start_epoch
    torch.manual_seed(stream)
    sampler = BalancedSampler(data.labels, cfg.batch_size, cfg.per_class, seed=stream)
    return BatchSource(
        bank, data, sampler, np.random.default_rng(stream), cfg.single_photo_p, augment, ddp.device
    )


def _summary(
    cfg: TrainConfig,
    data: TrainingSet,
    split: Split,
    load: LoadReport,
    ddp: Distributed,
    init: str | None = None,
) -> dict[str, Any]:
    """What summary.json says of the run besides its state: data, split, images, processes."""
    return {
        "model": cfg.model,
        "init": init,  # what --init copied, in one line
        "train_images": len(data.positions),
        "train_views": len(data.views),
        "coins": {"train": len(split.train), "val": len(split.val), "test": len(split.test)},
        "images_decoded": load.decoded,
        "images_skipped": len(load.skipped),
        "skipped": load.skipped,
        "device": str(ddp.device),
        "world_size": ddp.world_size,
        "rank": ddp.rank,
    }


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    show_progress: bool = True,
    workers: int | None = None,
) -> dict[str, Any]:
    """Run training as configured; returns the summary written to RUN/summary.json.

    `workers` processes build the image cache if it must be built (None: every core).

    Raises:
        DataError: a dataset is missing or malformed (or an image unreadable with strict).
        SettingsError: an option cannot work (model, loss, preset, split, regime).
    """
    cfg.check()
    fractions = parse_split(cfg.split)
    augment = build_augment(cfg.aug)
    ddp = setup_distributed()
    run = Path(cfg.out)
    started = time.perf_counter()
    torch.manual_seed(cfg.seed + ddp.rank)

    # ---- data: every image of every dataset, preprocessed once into the cache
    records = read_datasets([Path(d) for d in cfg.data])
    split = split_coins([r.coin for r in records], fractions, cfg.seed)
    with ddp.main_first():  # rank 0 builds the cache, the others then read it
        bank, load = load_images(
            records, cfg.preprocess(), cfg.cache_path(), strict=cfg.strict, workers=workers,
            progress=show_progress and ddp.is_main,
        )  # fmt: skip
    data = training_set(bank, split, cfg.train_on, str(cfg.data))
    steps_per_epoch = cfg.steps_per_epoch or default_steps_per_epoch(
        len(data.positions), cfg.batch_size * ddp.world_size
    )

    # ---- model, loss (with its own parameters), optimizer, moving average
    parts = _build_optimised(cfg, ddp, len(data.views), cfg.epochs * steps_per_epoch, resume)
    state: dict[str, Any] = {"epoch": 0, "step": 0, "best_val_top1": None, "best_epoch": None}
    checkpoints = run / "checkpoints"
    if resume and (checkpoints / "last").exists():
        state = _load_state(checkpoints / "last", parts.model, parts.loss_fn, parts.opt, parts.ema)
    source = _batch_source(cfg, bank, data, augment, ddp, state["epoch"])
    if ddp.is_main:
        checkpoints.mkdir(parents=True, exist_ok=True)
        (run / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
        (run / "split.json").write_text(split.to_json())

    # ---- the loop: an epoch of steps, then (rank 0) validation and checkpoints
    metrics = metrics_log(run / "metrics.jsonl", enabled=ddp.is_main, append=resume)
    batches = make_batches(source, cfg.prefetch, cfg.data_threads)
    with metrics as log, _progress(show_progress and ddp.is_main) as progress, closing(batches):
        loop = _Loop(step=state["step"])
        for epoch in range(state["epoch"], cfg.epochs):
            result = _train_epoch(
                cfg, epoch, steps_per_epoch, parts, batches, loop, progress, log, ddp.world_size
            )
            if ddp.is_main:
                validate = bool(split.val) and (
                    (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs
                )
                state = _end_epoch(
                    epoch, loop.step, result, parts, bank, split, state, checkpoints, log, validate
                )
    # every rank takes part (a collective); DDP must have kept their weights bit-identical
    agree = ddp.ranks_agree([parts.model, parts.loss_fn])
    summary = {
        **state,
        **_summary(cfg, data, split, load, ddp, parts.init),
        "seconds": time.perf_counter() - started,
        "ranks_agree": agree,
    }
    if ddp.is_main:
        (run / "summary.json").write_text(json.dumps(json_safe(summary), indent=2))
        write_curves(run / "metrics.jsonl", run / "curves.png")
    ddp.leave()
    if not agree:
        raise RuntimeError(f"the {ddp.world_size} ranks ended with different weights")
    return summary
