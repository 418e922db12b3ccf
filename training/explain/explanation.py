"""`explain_match`: one method's map of why an embedding model matches two coin crops.

The methods (METHODS): match maps (training.explain.match), landmarks (the smallest set of
regions that keeps the match, training.explain.landmarks), occlusion and gradient saliency
(training.explain.attribution). With rivals every method explains the identity margin rather
than the plain similarity (see training.explain.targets.margin_target).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from training.augment import normalize
from training.explain.attribution import occlusion_map, saliency_map
from training.explain.landmarks import (
    Regions,
    SegmentRegions,
    WindowRegions,
    find_landmarks,
    slic_labels,
)
from training.explain.match import match_map
from training.explain.targets import (
    Baseline,
    ScoreKind,
    margin_target,
    similarity_target,
    to_tensor,
)
from training.models.embedding import EmbeddingModel

METHODS = ("match", "landmarks", "occlusion", "saliency")


@dataclass(frozen=True)
class Explanation:
    """One method's map on the query (and, for match, on the matched image) and its cost."""

    method: str
    heat: np.ndarray  # H×W over the query, higher = more discriminative
    against_heat: np.ndarray | None  # H×W over the matched image (match maps only)
    score: float  # the score the map explains (landmarks: of the kept image)
    initial_score: float  # the score of the whole images
    fraction_kept: float | None  # landmarks only
    iterations: int  # network evaluations
    seconds: float
    value_range: tuple[float, float] | None = None  # fixed range of `heat`, if it has one
    kind: ScoreKind = "similarity"  # what `score` is: similarity, or the identity margin
    rival: int | None = None  # margin: the rival closest to the whole query (index into rivals)


def explain_match(
    model: EmbeddingModel,
    query: np.ndarray,
    against: np.ndarray,
    method: str,
    *,
    epsilon: float = 0.5,
    window: int = 21,
    stride: int | None = None,
    superpixels: int | None = None,
    rivals: Sequence[np.ndarray] = (),
    baseline: Baseline = 0.0,
) -> Explanation:
    """Explain why `model` matches two uint8 crops of its image size with one of METHODS.

    `window` is the landmark window and the occlusion/saliency patch; `stride` the landmark
    window stride (default window // 2; occlusion always uses the paper's stride 3);
    `superpixels` switches landmarks to about that many SLIC regions instead of windows.
    With `rivals` (crops of the same size) the map explains the identity margin (see
    margin_target; match maps: the query's cell similarity to `against` minus to the closest
    rival) instead of the plain similarity. `baseline` is what landmarks and occlusion fade
    removed pixels to: the background the model was trained on (a run that masks the
    background: coinfind.BACKGROUND_RGB / 255), so a removed region looks like no coin there.

    Raises:
        ValueError: unknown method, or settings the images or model cannot take.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    q, a = to_tensor(query), to_tensor(against)
    others, rival = _rivals(model, q, rivals)
    kind: ScoreKind = "similarity" if others is None else "margin"
    if method == "match":
        rival_image = None if others is None or rival is None else others[rival : rival + 1]
        m = match_map(model, q, a, rival_image)
        return Explanation(
            method, m.heat, m.heat, m.score, m.score, None, 1, m.seconds, kind=kind, rival=rival
        )
    target = similarity_target(model, a) if others is None else margin_target(model, a, others)
    if method == "landmarks":
        regions = _regions(query, window, stride, superpixels)
        r = find_landmarks(target, q, regions, epsilon=epsilon, baseline=baseline)
        return Explanation(
            method,
            r.mask,
            None,
            r.score,
            r.initial_score,
            r.fraction_kept,
            r.iterations,
            r.seconds,
            value_range=(0.0, 1.0),  # the kept weight of each pixel
            kind=kind,
            rival=rival,
        )
    if method == "occlusion":
        result = occlusion_map(target, q, patch=window, baseline=baseline)
    else:
        result = saliency_map(target, q, patch=window)
    return Explanation(
        method,
        result.heat,
        None,
        result.score,
        result.score,
        None,
        result.evaluations,
        result.seconds,
        kind=kind,
        rival=rival,
    )


def _rivals(
    model: nn.Module, query: Tensor, rivals: Sequence[np.ndarray]
) -> tuple[Tensor | None, int | None]:
    """The rival crops as one R×3×H×W tensor and which is closest to the query (None: no rivals).

    Raises:
        ValueError: a rival crop is not of the query's size.
    """
    if not len(rivals):
        return None, None
    others = torch.cat([to_tensor(x) for x in rivals])
    if others.shape[1:] != query.shape[1:]:
        raise ValueError(f"rivals must be crops of the query's size, got {tuple(others.shape[1:])}")
    return others, _closest_rival(model, query, others)


def _regions(
    query: np.ndarray, window: int, stride: int | None, superpixels: int | None
) -> Regions:
    """Landmark regions: about `superpixels` SLIC regions, else windows of `window` px."""
    h, w = query.shape[:2]
    if superpixels:
        return SegmentRegions(slic_labels(query, superpixels))
    return WindowRegions(h, w, window, stride or max(1, window // 2))


def _closest_rival(model: nn.Module, query: Tensor, rivals: Tensor) -> int:
    """Index of the rival most similar to the whole query: the one the margin is taken against."""
    model.eval()
    with torch.no_grad():
        sims = model(normalize(rivals)) @ model(normalize(query))[0]
    return int(sims.argmax())
