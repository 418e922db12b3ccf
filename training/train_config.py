"""`TrainConfig`: every setting of an embedding training run, saved as RUN/config.json."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from training.cache import Preprocess, default_cache_dir
from training.checks import check_model_and_augmentation
from training.data import REGIMES, parse_split
from training.errors import RunFolderError, SettingsError
from training.losses import LOSSES, LossSettings
from training.validation import (
    MAX_EMBEDDING_DIM,
    MAX_IMAGE_SIZE,
    MAX_LR,
    MAX_ROTATIONS,
    MAX_SEED,
    check_fields,
    number,
    whole,
)


def check_loss(loss: LossSettings) -> None:
    """Refuse loss parameters that cannot train: NaN, infinite, negative, no sub-centres.

    Raises:
        SettingsError: names the option (--margin, --scale) and the allowed range.
    """
    # an angular margin past a right angle turns the target logit's cosine around
    number("--margin", loss.margin_rad, low=0, high=math.pi / 2)
    number("--scale", loss.scale, low=0, low_open=True)
    number("triplet_margin", loss.triplet_margin, low=0)
    whole("sub_centers", loss.sub_centers, low=1)
    number("--margin-warmup", loss.margin_warmup, low=0, high=1)


# Fewest steps an epoch takes by default. One pass over a small collection is a handful of
# steps (16 coins: 9), and ArcFace needs a few hundred before coins part at all: with one pass
# per epoch a 16-coin set collapsed (every cosine above 0.999, top-1 at chance).
MIN_STEPS_PER_EPOCH = 100


def default_steps_per_epoch(images: int, images_per_step: int) -> int:
    """Steps per epoch when none is given: one pass over the images, at least MIN_STEPS_PER_EPOCH."""
    return max(MIN_STEPS_PER_EPOCH, math.ceil(images / images_per_step))


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as RUN/config.json so --resume rebuilds the run."""

    data: list[str]
    out: str
    model: str = "resnet-tiny"
    # The preprocessing defaults (image size, de-rotation, masking) live in Preprocess.
    image_size: int = Preprocess.image_size
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
    derotate: bool = Preprocess.derotate
    # Background outside the coin's outline replaced by a fixed colour (training.coinfind).
    mask_background: bool = Preprocess.mask_background
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
    # A run (or checkpoint folder) whose weights start this one: fine-tuning after twin
    # pretraining (training.init_weights; docs/pretraining.md).
    init: str | None = None
    compile: bool = False
    strict: bool = False
    cache_dir: str | None = None
    log_every: int = 10
    # Batches made this many ahead in a background thread, overlapping the model step
    # (training.batches; 0 = made in the training thread, between steps). Same seed, same run
    # (at the same thread counts).
    prefetch: int = 2
    # torch intra-op threads of that background thread; on a CPU the model step leaves it those
    # cores (benchmarks/train_throughput.py measures the choice).
    data_threads: int = 1
    # Validate (and keep `best`) every this many epochs, and after the last one. Validation took
    # 17-21 % of an epoch of the default length (resnet-tiny, 64 px, 8 rotations, 8 validation
    # coins of 80), almost all of it embedding: its inputs are 1.5 %, not worth caching.
    val_every: int = 1

    @classmethod
    def from_json(cls, data: object, where: str = "config.json") -> TrainConfig:
        """Rebuild from config.json (unknown keys from newer versions are ignored), checked.

        Raises:
            RunFolderError: not a JSON object, a value of the wrong type, `data` or `out`
                missing, or a setting `check` refuses.
        """
        if not isinstance(data, dict):
            raise RunFolderError(f"{where}: not a JSON object")
        try:
            check_fields(cls, data, where)
            known = {f.name for f in fields(cls)}
            values = {k: v for k, v in data.items() if k in known}
            loss = values.get("loss", {})
            loss_keys = {f.name for f in fields(LossSettings)}
            values["loss"] = LossSettings(**{k: v for k, v in loss.items() if k in loss_keys})
            if "data" not in values or "out" not in values:
                raise SettingsError(f"{where}: no data or out: not a training run's config")
            config = cls(**values)
            config.check()
        except SettingsError as e:
            raise RunFolderError(str(e) if str(e).startswith(where) else f"{where}: {e}") from e
        return config

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
        if self.init is not None and self.weights is not None:
            raise SettingsError("--init and --weights both give the starting weights: give one")
        for name in ("epochs", "batch_size", "per_class", "log_every", "data_threads", "val_every"):
            whole(f"--{name.replace('_', '-')}", getattr(self, name), low=1)
        whole("--prefetch", self.prefetch, low=0)
        whole("--image-size", self.image_size, low=1, high=MAX_IMAGE_SIZE)
        whole("--embedding-dim", self.embedding_dim, low=1, high=MAX_EMBEDDING_DIM)
        whole("--rotations", self.rotations, low=1, high=MAX_ROTATIONS)
        whole("--seed", self.seed, low=0, high=MAX_SEED)
        if self.steps_per_epoch is not None:
            whole("--steps-per-epoch", self.steps_per_epoch, low=1)
        # AdamW's step is about lr in every weight: past MAX_LR it only diverges (or overflows)
        number("--lr", self.lr, low=0, high=MAX_LR, low_open=True)
        number("weight_decay", self.weight_decay, low=0)
        number("warmup_fraction", self.warmup_fraction, low=0, high=1)
        number("min_lr_fraction", self.min_lr_fraction, low=0, high=1)
        number("--single-photo-p", self.single_photo_p, low=0, high=1)
        number("--ema-decay", self.ema_decay, low=0, high=1, high_open=True)
        check_loss(self.loss)

    def preprocess(self) -> Preprocess:
        """The preprocessing settings (part of the cache key)."""
        return Preprocess(
            image_size=self.image_size,
            derotate=self.derotate,
            mask_background=self.mask_background,
            single_photos=self.single_photo_p > 0,
        )

    def cache_path(self) -> Path:
        """Where preprocessed images are cached."""
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()
