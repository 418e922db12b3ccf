"""Explanations measured against the twin's ground truth: where a coin's identifying marks lie.

- pointing game: does the map's single highest pixel fall on a mark (truth >= 0.5), or
  within a tolerance of one?
- top-area precision: the share of the map's top-ranked `fraction` of the support (the coin)
  that lies on marks, truth-weighted;
- energy in mask: the share of the map's positive mass inside the marks, truth-weighted.

A random region scores what the marks' share of the support is, on average; `random_baseline`
measures it with smooth random maps at the methods' own scale, so the comparison is like for like.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

HIT_LEVEL = 0.5


@dataclass(frozen=True)
class Scores:
    """The three measures of one map against one truth mask."""

    pointing: float  # 1.0 hit, 0.0 miss
    precision: float  # truth-weighted share of the top-ranked area on the marks
    energy: float  # truth-weighted share of the positive map mass on the marks


def _support(truth: np.ndarray, support: np.ndarray | None) -> np.ndarray:
    return np.ones(truth.shape, bool) if support is None else support.astype(bool)


def pointing_game(
    heat: np.ndarray,
    truth: np.ndarray,
    support: np.ndarray | None = None,
    tolerance_px: int = 0,
) -> float:
    """1.0 if the map's maximum within the support lies within tolerance_px of truth >= 0.5.

    The tolerance is the pointing game's usual allowance (15 px at 224 px in Zhang et al.): a
    map smoothed at a patch's scale cannot peak exactly on a scratch one pixel wide. A plateau
    of tied maxima (a landmark mask keeps whole windows at 1.0) scores the share of its pixels
    that hit: what pointing at one of them at random would score on average.
    """
    where = _support(truth, support)
    hits: np.ndarray = (truth >= HIT_LEVEL).astype(np.uint8)
    if tolerance_px > 0:
        disc = cv2.getStructuringElement(
            cv2.MORPH_ELLIPSE, (2 * tolerance_px + 1, 2 * tolerance_px + 1)
        )
        hits = cv2.dilate(hits, disc)
    masked = np.where(where, heat, -np.inf)
    peak = masked == masked.max()
    return float(hits[peak].mean())


def top_area(heat: np.ndarray, fraction: float, support: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the highest-ranked `fraction` of the support's pixels.

    Ties are broken by a fixed pseudo-random order, not by position: a flat plateau cut by
    position would favour the top rows of the image.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    where = _support(heat, support)
    flat = np.flatnonzero(where)
    keep = max(1, round(fraction * flat.size))
    shuffle = np.random.default_rng(0).random(flat.size)
    order = flat[np.lexsort((shuffle, -heat.ravel()[flat]))[:keep]]
    chosen = np.zeros(heat.size, bool)
    chosen[order] = True
    return chosen.reshape(heat.shape)


def top_area_precision(
    heat: np.ndarray, truth: np.ndarray, fraction: float, support: np.ndarray | None = None
) -> float:
    """Mean truth over the top-ranked `fraction` of the support."""
    return float(truth[top_area(heat, fraction, support)].mean())


def energy_in_mask(heat: np.ndarray, truth: np.ndarray, support: np.ndarray | None = None) -> float:
    """Σ max(heat, 0)·truth / Σ max(heat, 0) over the support (0 when the map has no mass)."""
    where = _support(truth, support)
    mass = np.clip(heat, 0, None) * where
    total = float(mass.sum())
    return float((mass * truth).sum() / total) if total > 0 else 0.0


def score_map(
    heat: np.ndarray,
    truth: np.ndarray,
    fraction: float,
    support: np.ndarray | None = None,
    tolerance_px: int = 0,
) -> Scores:
    """Pointing game (with tolerance_px), top-area precision and energy in mask of one map."""
    return Scores(
        pointing_game(heat, truth, support, tolerance_px),
        top_area_precision(heat, truth, fraction, support),
        energy_in_mask(heat, truth, support),
    )


def random_heat(shape: tuple[int, int], scale_px: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth random map: white noise blurred to blobs of about scale_px, shifted to be >= 0."""
    noise = rng.standard_normal(shape).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), max(0.5, scale_px / 2))
    return blurred - blurred.min()


def random_baseline(
    truth: np.ndarray,
    fraction: float,
    *,
    support: np.ndarray | None = None,
    scale_px: float = 11.0,
    trials: int = 32,
    seed: int = 0,
    tolerance_px: int = 0,
) -> Scores:
    """Mean scores of `trials` random maps: what a method scores by chance on this mask."""
    rng = np.random.default_rng(seed)
    runs = [
        score_map(random_heat(truth.shape, scale_px, rng), truth, fraction, support, tolerance_px)
        for _ in range(trials)
    ]
    return Scores(
        float(np.mean([r.pointing for r in runs])),
        float(np.mean([r.precision for r in runs])),
        float(np.mean([r.energy for r in runs])),
    )
