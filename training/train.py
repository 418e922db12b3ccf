r"""Train an embedding model with a metric-learning loss; keep the best by validation top-1.

Read it top to bottom like nanoGPT's train.py: settings, data, model, loss and optimizer, then
one loop of get_batch → augment → forward → loss → step, with validation and a checkpoint at the
end of every epoch. Validation is the catalog protocol's top-1 on the validation coins (the same
question the test answers, on coins the model never saw).

Several GPUs (one process each; RANK/WORLD_SIZE/LOCAL_RANK come from torchrun):

    torchrun --standalone --nproc_per_node=4 -m pipeline.cli train --data datasets/sawhill \
        --model resnet50-truncated --out runs/sawhill-r50

Each rank draws its own batches; gradients of the model and of the loss's class centres are
averaged by DistributedDataParallel; only rank 0 validates, logs and writes checkpoints.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from training.augment import build_augment, normalize
from training.cache import Preprocess, default_cache_dir
from training.checkpoint import (
    load_checkpoint,
    load_optimizer,
    read_checkpoint_meta,
    save_checkpoint,
    save_optimizer,
)
from training.checks import check_model_and_augmentation
from training.data import (
    REGIMES,
    BalancedSampler,
    load_images,
    parse_split,
    read_datasets,
    split_coins,
    to_tensor,
    training_records,
)
from training.errors import SettingsError
from training.evaluate import autocast, run_protocol
from training.losses import LOSSES, LossSettings, build_loss
from training.models.embedding import EmbeddingModel, build_model
from training.report import write_curves

# The loss's own parameters (ArcFace class centres) live beside the model weights.
LOSS_FILE = "loss.safetensors"
# The weights' moving average, beside the raw weights in checkpoints/last (for --resume).
EMA_FOLDER = "ema"


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as RUN/config.json so --resume rebuilds the run."""

    data: list[str]
    out: str
    model: str = "resnet-tiny"
    image_size: int = 224
    embedding_dim: int = 512
    epochs: int = 10
    batch_size: int = 32
    # 2 images per identity → 16 identities per batch of 32: ArcFace is a classification loss and
    # learns faster from more classes per step (4 per class only matters for triplet mining).
    per_class: int = 2
    steps_per_epoch: int | None = None
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    min_lr_fraction: float = 0.05
    loss: LossSettings = field(default_factory=LossSettings)
    aug: str = "tuned"
    # Captures and the catalog image of each training coin: without catalog images in training
    # the model never sees the catalog's lighting and rendering, and catalog-protocol top-1 on
    # held-out coins collapses (see README, "Training recipe").
    train_on: str = "both"
    split: str = "0.7,0.1,0.2"
    seed: int = 0
    derotate: bool = False
    # Background outside the coin's outline replaced by a fixed colour (training.coinfind).
    mask_background: bool = True
    # BatchNorm1d on the embedding before L2 normalisation: centres the features, whose mean
    # (post-ReLU, all positive) otherwise dominates every embedding and makes all cosines ≈ 1.
    bn_neck: bool = True
    # Eval-mode rotation pooling (training.models.embedding): 8 turns of 45° lifted demo top-1
    # by about 9 points over none, at 8× the cost of embedding an image (not of a train step).
    rotations: int = 8
    # Exponential moving average of the weights, validated and kept as `best` (0 = off): the
    # raw weights of a small model swing by several points of top-1 from epoch to epoch.
    ema_decay: float = 0.0
    # Share of captures shown cut out by themselves rather than with the other frames of their
    # pose (training.cache.crop_frames): search queries are single photos, whose raking-lit dark
    # side cannot be told from the turntable. 0.5 lifted closed-set search top-1 by 4-9 points
    # and cost about 1 point in the catalog protocol (README, "Training recipe"), so it is off
    # by default and meant for models that will search single photos.
    single_photo_p: float = 0.0
    weights: str | None = None
    compile: bool = False
    strict: bool = False
    cache_dir: str | None = None
    log_every: int = 10

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild from config.json (unknown keys from newer versions are ignored)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["loss"] = LossSettings(**values.get("loss", {}))
        return cls(**values)

    def check(self) -> None:
        """Fail fast on settings that cannot work, before any image is decoded.

        Raises:
            SettingsError: unknown model, loss, preset or regime; bad split or sizes.
        """
        check_model_and_augmentation(self.model, self.aug)
        if self.loss.name not in LOSSES:
            raise SettingsError(f"unknown loss {self.loss.name!r}; choose from {', '.join(LOSSES)}")
        if self.train_on not in REGIMES:
            raise SettingsError(
                f"unknown --train-on {self.train_on!r}; choose from {', '.join(REGIMES)}"
            )
        parse_split(self.split)
        if min(self.epochs, self.batch_size, self.per_class, self.image_size) < 1:
            raise SettingsError("epochs, batch size, images per class and image size must be >= 1")
        if not 0.0 <= self.single_photo_p <= 1.0:
            raise SettingsError(f"--single-photo-p must be in [0, 1], got {self.single_photo_p}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise SettingsError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")

    def preprocess(self) -> Preprocess:
        """The preprocessing settings (part of the cache key)."""
        return Preprocess(
            image_size=self.image_size,
            derotate=self.derotate,
            mask_background=self.mask_background,
        )

    def cache_path(self) -> Path:
        """Where preprocessed images are cached."""
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()


def lr_at(
    step: int, *, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float
) -> float:
    """Linear warm-up to base_lr, then cosine decay to min_lr at total_steps."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (base_lr - min_lr)


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this process validates, logs and saves."""
        return self.rank == 0


def setup_distributed() -> Distributed:
    """Join the torchrun process group if RANK/WORLD_SIZE say so; pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        device = (
            torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
        )
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return Distributed(dist.get_rank(), world_size, device)
    return Distributed(0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu"))


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


def _save_state(
    folder: Path,
    model: EmbeddingModel,
    loss: nn.Module,
    opt: torch.optim.Optimizer,
    state: dict[str, Any],
    ema: AveragedModel | None,
) -> None:
    """Loss centres, optimizer, average, then the model with the loop state (written last)."""
    folder.mkdir(parents=True, exist_ok=True)
    if ema is not None:
        save_checkpoint(folder / EMA_FOLDER, cast(EmbeddingModel, ema.module))
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in loss.state_dict().items()},
        str(folder / LOSS_FILE),
    )
    save_optimizer(folder, opt)
    save_checkpoint(folder, model, extra=state)


def _load_state(
    folder: Path,
    model: EmbeddingModel,
    loss: nn.Module,
    opt: torch.optim.Optimizer,
    ema: AveragedModel | None,
) -> dict[str, Any]:
    """Restore what _save_state wrote; returns the saved loop state (epoch, step, best)."""
    device = next(model.parameters()).device
    model.load_state_dict(load_checkpoint(folder, device=device).state_dict())
    loss.load_state_dict(load_file(str(folder / LOSS_FILE), device=str(device)))
    load_optimizer(folder, opt, device=device)
    state: dict[str, Any] = read_checkpoint_meta(folder)["extra"]
    if ema is not None:
        if (folder / EMA_FOLDER).exists():
            ema.module.load_state_dict(
                load_checkpoint(folder / EMA_FOLDER, device=device).state_dict()
            )
        else:  # the run was started without an average: begin it at the resumed weights
            ema.module.load_state_dict(model.state_dict())
        # a non-zero count makes the next update average rather than copy
        ema.n_averaged.fill_(max(1, int(state["step"])))
    return state


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


def train(cfg: TrainConfig, *, resume: bool = False, show_progress: bool = True) -> dict[str, Any]:
    """Run training as configured; returns the summary written to RUN/summary.json.

    Raises:
        DataError: a dataset is missing or malformed (or an image unreadable with strict).
        SettingsError: an option cannot work (model, loss, preset, split, regime).
    """
    cfg.check()
    fractions = parse_split(cfg.split)
    augment = build_augment(cfg.aug)
    ddp = setup_distributed()
    device = ddp.device
    run = Path(cfg.out)
    started = time.perf_counter()
    torch.manual_seed(cfg.seed + ddp.rank)

    # ---- data: every image of every dataset, preprocessed once into the cache
    records = read_datasets([Path(d) for d in cfg.data])
    split = split_coins([r.coin_id for r in records], fractions, cfg.seed)
    bank, load = load_images(records, cfg.preprocess(), cfg.cache_path(), strict=cfg.strict)
    train_set = {id(r) for r in training_records(bank.records, split.train, cfg.train_on)}
    train_pos = [i for i, r in enumerate(bank.records) if id(r) in train_set]
    if not train_pos:
        raise SettingsError(f"no training images for --train-on {cfg.train_on} in {cfg.data}")
    views = sorted({bank.records[i].view for i in train_pos})
    class_of = {v: i for i, v in enumerate(views)}
    labels = [class_of[bank.records[i].view] for i in train_pos]
    steps_per_epoch = cfg.steps_per_epoch or max(
        1, math.ceil(len(train_pos) / (cfg.batch_size * ddp.world_size))
    )
    total_steps = cfg.epochs * steps_per_epoch

    # ---- model, loss (with its own parameters), optimizer
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
    model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    loss_fn = build_loss(cfg.loss, len(views), cfg.embedding_dim).to(device)
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
    evaluated = cast(EmbeddingModel, ema.module) if ema is not None else model

    state: dict[str, Any] = {"epoch": 0, "step": 0, "best_val_top1": None, "best_epoch": None}
    checkpoints = run / "checkpoints"
    if resume and (checkpoints / "last").exists():
        state = _load_state(checkpoints / "last", model, loss_fn, opt, ema)
    # Seeds depend on rank (each GPU its own batches) and on the epoch a resumed run starts at
    # (so it does not replay the first epochs' batches and augmentations).
    stream = cfg.seed + 1000 * ddp.rank + 100_000 * state["epoch"]
    torch.manual_seed(stream)
    sampler = BalancedSampler(labels, cfg.batch_size, cfg.per_class, seed=stream)
    coin_flips = np.random.default_rng(stream)
    in_pose = [bank.records[i].pose is not None for i in train_pos]
    if ddp.is_main:
        checkpoints.mkdir(parents=True, exist_ok=True)
        (run / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
        (run / "split.json").write_text(json.dumps(asdict(split), indent=2))
    metrics_file = (run / "metrics.jsonl").open("a" if resume else "w") if ddp.is_main else None

    def log(row: dict[str, Any]) -> None:
        if metrics_file is not None:
            metrics_file.write(json.dumps(row) + "\n")
            metrics_file.flush()

    step = state["step"]
    images_seen = 0
    loop_started = time.perf_counter()
    with _progress(show_progress and ddp.is_main) as progress:
        for epoch in range(state["epoch"], cfg.epochs):
            task = progress.add_task(
                "train", total=steps_per_epoch, epoch=epoch + 1, loss=0.0, ips=0.0
            )
            objective.train()
            epoch_start = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            for _ in range(steps_per_epoch):
                lr = schedule(step)
                for group in opt.param_groups:
                    group["lr"] = lr
                batch = sampler.next_batch()
                alone = [in_pose[i] and coin_flips.random() < cfg.single_photo_p for i in batch]
                x = to_tensor(bank.pixels([train_pos[i] for i in batch], alone), device)
                y = torch.tensor([labels[i] for i in batch], device=device)
                with torch.no_grad():
                    x = normalize(augment(x))
                if device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                loss = objective(x, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if ema is not None:
                    ema.update_parameters(model)
                step += 1
                images_seen += len(batch)
                loss_sum += loss.detach()
                if step % cfg.log_every == 0:
                    value = loss.item()  # a host-device sync point: only every log_every steps
                    ips = images_seen / (time.perf_counter() - loop_started)
                    progress.update(task, loss=value, ips=ips)
                    log({"kind": "step", "step": step, "epoch": epoch + 1, "loss": value, "lr": lr})
                progress.advance(task)
            seconds = time.perf_counter() - epoch_start
            train_loss = (loss_sum / steps_per_epoch).item()
            ips_epoch = steps_per_epoch * cfg.batch_size * ddp.world_size / seconds
            progress.update(task, loss=train_loss, ips=ips_epoch)
            if not ddp.is_main:
                continue
            val = (
                run_protocol(evaluated, bank, list(split.val), "catalog")[0] if split.val else None
            )
            val_top1 = val["top1"] if val else None
            log(
                {
                    "kind": "epoch",
                    "epoch": epoch + 1,
                    "step": step,
                    "train_loss": train_loss,
                    "val": val,
                    "seconds": seconds,
                    "images_per_s": ips_epoch,
                }
            )
            improved = state["best_val_top1"] is None or (
                val_top1 is not None and val_top1 > state["best_val_top1"]
            )
            state = {
                "epoch": epoch + 1,
                "step": step,
                "best_val_top1": val_top1 if improved else state["best_val_top1"],
                "best_epoch": epoch + 1 if improved else state["best_epoch"],
            }
            _save_state(checkpoints / "last", model, loss_fn, opt, state, ema)
            if improved:
                save_checkpoint(checkpoints / "best", evaluated)
    if metrics_file is not None:
        metrics_file.close()
    summary: dict[str, Any] = {
        **state,
        "model": cfg.model,
        "train_images": len(train_pos),
        "train_views": len(views),
        "coins": {"train": len(split.train), "val": len(split.val), "test": len(split.test)},
        "images_decoded": load.decoded,
        "images_skipped": len(load.skipped),
        "skipped": load.skipped,
        "seconds": time.perf_counter() - started,
        "device": str(device),
        "world_size": ddp.world_size,
        "rank": ddp.rank,
    }
    if ddp.is_main:
        (run / "summary.json").write_text(json.dumps(summary, indent=2))
        write_curves(run / "metrics.jsonl", run / "curves.png")
    if ddp.world_size > 1:
        dist.destroy_process_group()
    return summary
