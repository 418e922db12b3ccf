"""`TrainConfig`: every setting of an embedding training run, saved as RUN/config.json."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from training.cache import Preprocess, default_cache_dir
from training.checks import check_model_and_augmentation
from training.data import REGIMES, parse_split
from training.errors import SettingsError
from training.losses import LOSSES, LossSettings


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
