"""Explanations of a model's decision: which regions of a coin drive a match or a class.

Every method explains a `Target`: a differentiable score of float B×3×H×W images in [0, 1]
(the model's ImageNet normalisation is applied inside), so the same code explains an embedding
model (cosine similarity to the matched image) and a classifier (the class probability).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from training.augment import normalize
from training.models.embedding import EmbeddingModel

ScoreKind = Literal["probability", "similarity"]


@dataclass(frozen=True)
class Target:
    """A differentiable score of [0, 1] images (B×3×H×W → B) and what kind of score it is."""

    score: Callable[[Tensor], Tensor]
    kind: ScoreKind

    def loss(self, score: Tensor) -> Tensor:
        """The loss the landmark search minimises: cross-entropy, or 1 − cosine similarity."""
        if self.kind == "probability":
            return -torch.log(score.clamp_min(1e-8))
        return 1.0 - score


def similarity_target(model: nn.Module, against: Tensor) -> Target:
    """Cosine similarity of an embedding model's output to the embedding of `against` (1×3×H×W)."""
    model.eval()
    with torch.no_grad():
        reference = model(normalize(against)).detach()

    def score(x: Tensor) -> Tensor:
        # both embeddings are unit vectors, so the dot product is the cosine similarity
        return (model(normalize(x)) * reference).sum(dim=1)

    return Target(score, "similarity")


def class_target(classifier: nn.Module, label: int) -> Target:
    """Softmax probability of class `label` under a classifier returning B×classes logits."""
    classifier.eval()

    def score(x: Tensor) -> Tensor:
        return torch.softmax(classifier(normalize(x)), dim=1)[:, label]

    return Target(score, "probability")


METHODS = ("match", "landmarks", "occlusion", "saliency")


@dataclass(frozen=True)
class Explanation:
    """One method's map on the query (and, for match, on the matched image) and its cost."""

    method: str
    heat: np.ndarray  # H×W over the query, higher = more discriminative
    against_heat: np.ndarray | None  # H×W over the matched image (match maps only)
    score: float  # the similarity the map explains (landmarks: of the kept image)
    initial_score: float  # the similarity of the whole images
    fraction_kept: float | None  # landmarks only
    iterations: int  # network evaluations
    seconds: float
    value_range: tuple[float, float] | None = None  # fixed range of `heat`, if it has one


def to_tensor(image: np.ndarray) -> Tensor:
    """H×W×3 uint8 → 1×3×H×W float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255


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
) -> Explanation:
    """Explain why `model` matches two uint8 crops of its image size with one of METHODS.

    `window` is the landmark window and the occlusion/saliency patch; `stride` the landmark
    window stride (default window // 2; occlusion always uses the paper's stride 3);
    `superpixels` switches landmarks to about that many SLIC regions instead of windows.

    Raises:
        ValueError: unknown method, or settings the images or model cannot take.
    """
    # submodules import Target from this package, so they are imported here, not at the top
    from training.explain.attribution import occlusion_map, saliency_map
    from training.explain.landmarks import (
        SegmentRegions,
        WindowRegions,
        find_landmarks,
        slic_labels,
    )
    from training.explain.match import match_map

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    q, a = to_tensor(query), to_tensor(against)
    if method == "match":
        m = match_map(model, q, a)
        return Explanation(method, m.heat, m.heat, m.similarity, m.similarity, None, 1, m.seconds)
    target = similarity_target(model, a)
    if method == "landmarks":
        h, w = query.shape[:2]
        regions = (
            SegmentRegions(slic_labels(query, superpixels))
            if superpixels
            else WindowRegions(h, w, window, stride or max(1, window // 2))
        )
        r = find_landmarks(target, q, regions, epsilon=epsilon)
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
        )
    run = occlusion_map if method == "occlusion" else saliency_map
    result = run(target, q, patch=window)
    return Explanation(
        method,
        result.heat,
        None,
        result.score,
        result.score,
        None,
        result.evaluations,
        result.seconds,
    )
