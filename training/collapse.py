"""Collapse detection: say so when a model's embeddings do not tell coins apart.

A model trained too briefly (a small collection and a few steps) maps every image to nearly the
same direction: every cosine above 0.99 and top-1 at chance, while training and evaluation
finish without complaint and the verdict's thresholds sit at 0.99. Two signs, either enough:

- spread: how far apart a query's cosines to the gallery's coins (of its side) lie. Models that
  work spread them over most of [-1, 1]; a collapsed one within a few hundredths.
- chance: top-1 no better than picking one of the gallery's coins at random, with enough coins
  to tell.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np

# Below this median span of a query's cosines to the gallery's coins, the embedding is collapsed.
COLLAPSED_RANGE = 0.05
# Top-1 within this factor of chance, with at least MIN_COINS_FOR_CHANCE coins in the
# gallery, is chance.
CHANCE_FACTOR = 1.25
MIN_COINS_FOR_CHANCE = 3

ADVICE = (
    "train longer (more --epochs or --steps-per-epoch; a small collection needs more steps per "
    "coin), or use a smaller --image-size"
)


def spread(
    similarity: np.ndarray,
    query_sides: Sequence[str],
    gallery_sides: Sequence[str],
    gallery_coins: Sequence[Hashable],
) -> dict[str, float | int | None]:
    """What collapse_note reads, from one protocol's query × gallery cosine similarities.

    `similarity_range`: the median over queries of (highest − lowest) cosine to the gallery
    entries of the query's side (None without such pairs): near 0 when every coin looks alike
    to the model. `chance_top1`: the top-1 of a random guess among the gallery's coins.
    """
    ranges = []
    gallery = np.asarray(gallery_sides)
    for row, side in zip(similarity, query_sides, strict=True):
        values = row[(gallery == side) & np.isfinite(row)]
        if len(values) > 1:
            ranges.append(float(values.max() - values.min()))
    coins = len(set(gallery_coins))
    return {
        "similarity_range": float(np.median(ranges)) if ranges else None,
        "chance_top1": 1.0 / coins if coins else 0.0,
        "gallery_coins": coins,
    }


def collapse_note(metrics: Mapping[str, object] | None, where: str) -> str | None:
    """One line saying the embeddings collapsed (with advice), or None when they look healthy.

    `metrics` is a protocol's metrics dict with `spread`'s keys; `where` names the set it was
    measured on ("validation", "test").
    """
    if not metrics:
        return None
    cosine_range = metrics.get("similarity_range")
    chance = metrics.get("chance_top1")
    top1 = metrics.get("top1")
    coins = metrics.get("gallery_coins", 0)
    signs = []
    if isinstance(cosine_range, float) and cosine_range < COLLAPSED_RANGE:
        signs.append(f"a query's cosines to the coins span only {cosine_range:.3f}")
    at_chance = (
        isinstance(top1, float)
        and isinstance(chance, float)
        and isinstance(coins, int)
        and coins >= MIN_COINS_FOR_CHANCE
        and top1 <= CHANCE_FACTOR * chance
    )
    if at_chance:
        signs.append(f"{where} top-1 {100 * top1:.1f}% is chance ({100 * chance:.1f}%)")  # type: ignore[operator]
    if not signs:
        return None
    return f"warning: the embeddings collapsed ({'; '.join(signs)}): {ADVICE}"


def validation_of_epoch(metrics_log: Path, epoch: int | None) -> dict[str, object] | None:
    """The validation metrics a run logged for `epoch` (None: its last validated epoch).

    Reads RUN/metrics.jsonl as `pipeline train` wrote it; torn or foreign lines are skipped.
    """
    found: dict[str, object] | None = None
    try:
        lines = metrics_log.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict) or row.get("kind") != "epoch":
            continue
        if isinstance(row.get("val"), dict) and (epoch is None or row.get("epoch") == epoch):
            found = row["val"]
    return found
