"""Fit the coin segmenter to crops with their true coverage (training.segmenter's network).

The crops come from the twin (pipeline.segmenter_data); here they are only arrays. Each step
draws a batch, turns it by quarter turns and mirrors (a coin's outline has no orientation),
and makes some of it grey or JPEG-compressed, as archive photos are, so the segmenter does not
lean on colour. The loss is binary cross-entropy plus a soft Dice term (the rim is a thin band
that cross-entropy alone, dominated by the easy interior and backdrop, under-weights).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from training.segmenter import CoinSegmenter, normalise

# Shares of a batch made grey and JPEG-compressed (quality 25-90).
GREY_P = 0.2
JPEG_P = 0.3


@dataclass(frozen=True)
class FitSettings:
    """How long and how fast to fit."""

    steps: int = 2000
    batch_size: int = 16
    lr: float = 3e-3
    seed: int = 0


def _augment(
    crop: np.ndarray, target: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One crop and its target, turned, mirrored, maybe grey or JPEG-compressed."""
    turns = int(rng.integers(0, 4))
    crop, target = np.rot90(crop, turns), np.rot90(target, turns)
    if rng.random() < 0.5:
        crop, target = crop[:, ::-1], target[:, ::-1]
    crop = np.ascontiguousarray(crop)
    if rng.random() < GREY_P:
        crop = np.repeat(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    if rng.random() < JPEG_P:
        quality = int(rng.integers(25, 90))
        _, encoded = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
        decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)  # the channel order round-trips
        if decoded is not None:
            crop = decoded
    return crop, np.ascontiguousarray(target)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice, for logits and soft targets (N, 1, H, W)."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * target).sum((1, 2, 3)) + 1) / (
        p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1
    )
    return bce + dice.mean()


def fit_segmenter(
    crops: np.ndarray,
    targets: np.ndarray,
    settings: FitSettings,
    on_step: Callable[[int, float], None] | None = None,
) -> CoinSegmenter:
    """A segmenter fitted to crops (N, H, W, 3 uint8) and coverage targets (N, H, W in 0..1)."""
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model = CoinSegmenter()
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=settings.lr, total_steps=settings.steps, pct_start=0.1
    )
    model.train()
    for step in range(1, settings.steps + 1):
        picks = rng.integers(0, len(crops), settings.batch_size)
        pairs = [_augment(crops[i], targets[i], rng) for i in picks]
        x = normalise(np.stack([c for c, _ in pairs]))
        y = torch.from_numpy(np.stack([t for _, t in pairs]))[:, None].float()
        loss = segmentation_loss(model(x), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if on_step is not None:
            on_step(step, loss.item())
    return model.eval()
