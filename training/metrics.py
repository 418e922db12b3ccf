"""Retrieval and verification metrics on L2-normalised embeddings (cosine similarity).

precision@1, MAP@R and R-precision come from pytorch-metric-learning's AccuracyCalculator;
top-k accuracy (is a right match among the k nearest?) and the per-group breakdowns are computed
here from the similarity matrix, which the failure gallery and the verification statistics need
anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN

# Impostor pairs grow as queries × gallery; a sample this large pins the tail down well enough.
MAX_IMPOSTOR_PAIRS = 200_000


@dataclass
class Retrieval:
    """Per-query results: nearest gallery index, whether it and the top 5 are right, similarities."""

    nearest: np.ndarray
    top1: np.ndarray
    top5: np.ndarray
    similarity: np.ndarray
    same_label: np.ndarray


def retrieve(
    queries: torch.Tensor,
    query_labels: Sequence[int],
    gallery: torch.Tensor,
    gallery_labels: Sequence[int],
    *,
    leave_one_out: bool = False,
) -> Retrieval:
    """Rank the gallery for every query; with leave_one_out, gallery is queries minus itself."""
    sim = (queries.float() @ gallery.float().T).cpu().numpy()
    same = np.asarray(query_labels)[:, None] == np.asarray(gallery_labels)[None, :]
    if leave_one_out:
        np.fill_diagonal(sim, -np.inf)
        np.fill_diagonal(same, False)
    return ranked(sim, same)


def ranked(scores: np.ndarray, same: np.ndarray) -> Retrieval:
    """Per-query results of a Q×G score matrix (higher is nearer) and its right-entry mask."""
    k = min(5, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hits = np.take_along_axis(same, order, axis=1)
    return Retrieval(order[:, 0], hits[:, 0], np.asarray(hits.any(axis=1)), scores, same)


def retrieval_metrics(
    queries: torch.Tensor,
    query_labels: Sequence[int],
    gallery: torch.Tensor,
    gallery_labels: Sequence[int],
    *,
    leave_one_out: bool = False,
) -> tuple[dict[str, float], Retrieval]:
    """top-1, top-5, precision@1, MAP@R and R-precision, and the per-query results."""
    result = retrieve(queries, query_labels, gallery, gallery_labels, leave_one_out=leave_one_out)
    calculator = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
        knn_func=CustomKNN(CosineSimilarity()),
        k="max_bin_count",
    )
    scores = calculator.get_accuracy(
        queries.float().cpu(),
        torch.as_tensor(list(query_labels)),
        gallery.float().cpu(),
        torch.as_tensor(list(gallery_labels)),
        ref_includes_query=leave_one_out,
    )
    metrics = {
        "top1": float(result.top1.mean()) if len(result.top1) else 0.0,
        "top5": float(result.top5.mean()) if len(result.top5) else 0.0,
        "precision_at_1": float(scores["precision_at_1"]),
        "map_at_r": float(scores["mean_average_precision_at_r"]),
        "r_precision": float(scores["r_precision"]),
        "queries": len(result.top1),
        "gallery": int(gallery.shape[0]),
    }
    return metrics, result


def pooled_top1(result: Retrieval, groups: Sequence[str]) -> dict[str, float]:
    """Top-1 when the queries of one group (a coin side's captures) answer together.

    A rig photographs every coin side from many poses; searching with all of them at once is
    what a person identifying a rig-captured coin does. Their similarity rows are averaged
    (the same ranking as the mean of their embeddings) and the group's nearest gallery image
    is right if it is right for the group's queries.
    """
    members: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    if not members:
        return {"top1": 0.0, "queries": 0}
    hits = [
        bool(result.same_label[rows[0], int(np.argmax(result.similarity[rows].mean(axis=0)))])
        for rows in members.values()
    ]
    return {"top1": float(np.mean(hits)), "queries": len(hits)}


def _natural(value: str) -> tuple[float, str]:
    """Sort key: numbers by value (so 90° comes before 180°), then text."""
    head = value.rstrip("°")
    try:
        return float(head), ""
    except ValueError:
        return float("inf"), value


def breakdown(result: Retrieval, groups: Sequence[str]) -> dict[str, dict[str, float]]:
    """top-1, top-5 and query count per group value (light pattern, angle or side)."""
    out: dict[str, dict[str, float]] = {}
    values = np.asarray(groups)
    for value in sorted(set(groups), key=_natural):
        chosen = values == value
        out[value] = {
            "top1": float(result.top1[chosen].mean()),
            "top5": float(result.top5[chosen].mean()),
            "queries": int(chosen.sum()),
        }
    return out


def genuine_impostor(result: Retrieval, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of same-identity pairs and of (a sample of) different-identity pairs."""
    valid = np.isfinite(result.similarity)
    genuine = result.similarity[result.same_label & valid]
    impostor = result.similarity[~result.same_label & valid]
    if impostor.size > MAX_IMPOSTOR_PAIRS:
        impostor = np.random.default_rng(seed).choice(impostor, MAX_IMPOSTOR_PAIRS, replace=False)
    return genuine.astype(np.float32), impostor.astype(np.float32)


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """(EER, threshold): where false accepts (impostor ≥ t) equal false rejects (genuine < t)."""
    if genuine.size == 0 or impostor.size == 0:
        return float("nan"), float("nan")
    thresholds = np.unique(np.concatenate([genuine, impostor]))
    # Counting through sorted arrays keeps this O(n log n) for hundreds of thousands of pairs.
    far = 1 - np.searchsorted(np.sort(impostor), thresholds, side="left") / impostor.size
    frr = np.searchsorted(np.sort(genuine), thresholds, side="left") / genuine.size
    i = int(np.argmin(np.abs(far - frr)))
    return float((far[i] + frr[i]) / 2), float(thresholds[i])


def verification_summary(genuine: np.ndarray, impostor: np.ndarray) -> dict[str, float]:
    """Means, spreads and EER of the genuine and impostor similarity distributions."""
    eer, threshold = equal_error_rate(genuine, impostor)
    return {
        "genuine_mean": float(genuine.mean()) if genuine.size else float("nan"),
        "genuine_std": float(genuine.std()) if genuine.size else float("nan"),
        "impostor_mean": float(impostor.mean()) if impostor.size else float("nan"),
        "impostor_std": float(impostor.std()) if impostor.size else float("nan"),
        "genuine_pairs": int(genuine.size),
        "impostor_pairs": int(impostor.size),
        "eer": eer,
        "eer_threshold": threshold,
    }


def worst_failures(result: Retrieval, limit: int) -> list[tuple[int, int, int]]:
    """(query, wrong match, best right match) for the most confident mistakes first."""
    rows = []
    for q in np.flatnonzero(~result.top1):
        right = np.flatnonzero(result.same_label[q])
        if right.size == 0:
            continue
        best_right = int(right[np.argmax(result.similarity[q, right])])
        wrong = int(result.nearest[q])
        gap = result.similarity[q, wrong] - result.similarity[q, best_right]
        rows.append((float(gap), int(q), wrong, best_right))
    rows.sort(reverse=True)
    return [(q, w, r) for _, q, w, r in rows[:limit]]
