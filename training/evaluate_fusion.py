"""Appearance plus outline in evaluation: fit the run's weight on validation, score the test.

training.fusion holds the scoring and the fit; this module feeds them a protocol's results and
the bank's outline profiles (training.outline), and reports the fused figures beside the
appearance-only ones, so neither hides the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from training.data import ImageBank
from training.fusion import RERANK_DEPTH, Fusion, fit_fusion, fused_scores
from training.metrics import Retrieval, breakdown, pooled_top1, ranked
from training.outline import outline_distances


def protocol_distances(bank: ImageBank, q_pos: Sequence[int], g_pos: Sequence[int]) -> np.ndarray:
    """Outline distances of every query to every gallery entry (Q×G, NaN where unknown).

    A capture's outline is its pose's (all lights' frames together), as the rig gives it.
    """
    return outline_distances(bank.outlines(q_pos), bank.outlines(g_pos))


def fit_on_validation(
    bank: ImageBank,
    result: Retrieval,
    q_pos: Sequence[int],
    g_pos: Sequence[int],
    grey_similarity: np.ndarray | None = None,
) -> Fusion:
    """The run's outline weights, fitted on a validation protocol's results.

    grey_similarity: the same queries' cosines when turned grey (to the gallery's grey view),
        for the grey queries' weight.
    """
    distance = protocol_distances(bank, q_pos, g_pos)
    fusion = fit_fusion(result.similarity, distance, result.same_label)
    if grey_similarity is None or fusion.note:  # no grey weight where none could be fitted
        return fusion
    grey = fit_fusion(grey_similarity, distance, result.same_label)
    return replace(
        fusion,
        grey_weight=grey.weight,
        grey_val_top1_appearance=grey.val_top1_appearance,
        grey_val_top1_fused=grey.val_top1_fused,
    )


def fused_figures(
    bank: ImageBank,
    result: Retrieval,
    q_pos: Sequence[int],
    g_pos: Sequence[int],
    fusion: Fusion,
    *,
    pooled: bool,
) -> dict[str, Any]:
    """top-1, top-5 (and pooled top-1, per-light top-1) of a protocol re-ranked with outlines."""
    distance = protocol_distances(bank, q_pos, g_pos)
    fused = ranked(fused_scores(result.similarity, distance, fusion.weight), result.same_label)
    queries = [bank.records[i] for i in q_pos]
    known = np.isfinite(distance).any(axis=1)
    figures: dict[str, Any] = {
        "weight": fusion.weight,
        "rerank_depth": RERANK_DEPTH,
        "top1": float(fused.top1.mean()) if len(fused.top1) else 0.0,
        "top5": float(fused.top5.mean()) if len(fused.top5) else 0.0,
        "queries": len(fused.top1),
        "queries_without_outline": int((~known).sum()),
        # the outline by itself, for scale: how much of the answer it could give alone
        "outline_alone_top1": _outline_alone_top1(distance, result.same_label),
        "light": breakdown(fused, [r.light for r in queries]),
    }
    if pooled:
        figures["pooled"] = pooled_top1(fused, [r.view for r in queries])
    return figures


def _outline_alone_top1(distance: np.ndarray, same: np.ndarray) -> float | None:
    """Top-1 by outline distance alone over queries with a known outline (None: none has one)."""
    known = np.isfinite(distance).any(axis=1)
    if not known.any():
        return None
    nearest = np.where(np.isfinite(distance), distance, np.inf)[known].argmin(axis=1)
    return float(np.mean(same[known][np.arange(int(known.sum())), nearest]))
