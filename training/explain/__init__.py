"""Explanations of a model's decision: which regions of a coin drive a match or a class.

Every method explains a `Target`: a differentiable score of float B×3×H×W images in [0, 1]
(the model's ImageNet normalisation is applied inside), so the same code explains an embedding
model (cosine similarity to the matched image), a classifier (the class probability), or the
identity margin of an embedding model (similarity to the matched image minus the highest
similarity to rival images, such as other coins struck from the same dies).

Why the margin: the similarity of a query to its own catalog image is mostly carried by the die
design, which every coin struck from those dies shares, so a map of it shows the design. What
tells this coin from its die-siblings is what lifts it above them: the margin.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from training.augment import normalize
from training.coinfind import BACKGROUND_RGB
from training.models.embedding import EmbeddingModel

ScoreKind = Literal["probability", "similarity", "margin"]
# what removed or occluded pixels become: one grey level, or an RGB colour, in [0, 1]
Baseline = float | tuple[float, float, float]


def background_baseline(mask_background: bool) -> Baseline:
    """What a run's crops show where there is no coin: its masking colour, else the dark stage."""
    if not mask_background:
        return 0.0
    red, green, blue = (c / 255 for c in BACKGROUND_RGB)
    return (red, green, blue)


def baseline_image(baseline: Baseline, like: Tensor) -> Tensor:
    """The baseline as a tensor of `like`'s shape (1×3×H×W), for any method to fade towards.

    Raises:
        ValueError: a colour without one value per channel, or values outside [0, 1].
    """
    values = torch.as_tensor(baseline, dtype=like.dtype, device=like.device).reshape(-1)
    if values.numel() not in (1, like.shape[1]):
        raise ValueError(f"baseline must be one value or one per channel, got {baseline}")
    if float(values.min()) < 0 or float(values.max()) > 1:
        raise ValueError(f"baseline values must lie in [0, 1], got {baseline}")
    return values.reshape(1, -1, 1, 1).expand_as(like).contiguous()


@dataclass(frozen=True)
class Target:
    """A differentiable score of [0, 1] images (B×3×H×W → B) and what kind of score it is."""

    score: Callable[[Tensor], Tensor]
    kind: ScoreKind

    def loss(self, score: Tensor) -> Tensor:
        """The loss the landmark search minimises: cross-entropy, else 1 − the score."""
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


def margin_target(model: nn.Module, against: Tensor, rivals: Tensor) -> Target:
    """Identity margin: similarity to `against` (1×3×H×W) minus the highest to any of `rivals`.

    `rivals` (R×3×H×W) are the images the match has to beat: other coins struck from the same
    dies where they are known, else the runner-up gallery entry. The max is taken per image, so
    a perturbation that makes another rival the closest is scored against that one.
    """
    if rivals.dim() != 4 or rivals.shape[0] < 1:
        raise ValueError(f"rivals must be R×3×H×W with R >= 1, got {tuple(rivals.shape)}")
    model.eval()
    with torch.no_grad():
        reference = model(normalize(against)).detach()
        others = model(normalize(rivals)).detach()

    def score(x: Tensor) -> Tensor:
        embedded = model(normalize(x))
        return (embedded * reference).sum(dim=1) - (embedded @ others.T).amax(dim=1)

    return Target(score, "margin")


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
    score: float  # the score the map explains (landmarks: of the kept image)
    initial_score: float  # the score of the whole images
    fraction_kept: float | None  # landmarks only
    iterations: int  # network evaluations
    seconds: float
    value_range: tuple[float, float] | None = None  # fixed range of `heat`, if it has one
    kind: ScoreKind = "similarity"  # what `score` is: similarity, or the identity margin
    rival: int | None = None  # margin: the rival closest to the whole query (index into rivals)


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
    others = torch.cat([to_tensor(x) for x in rivals]) if len(rivals) else None
    if others is not None and others.shape[1:] != q.shape[1:]:
        raise ValueError(f"rivals must be crops of the query's size, got {tuple(others.shape[1:])}")
    kind: ScoreKind = "similarity" if others is None else "margin"
    rival, rival_image = None, None
    if others is not None:
        rival = _closest_rival(model, q, others)
        rival_image = others[rival : rival + 1]
    if method == "match":
        m = match_map(model, q, a, rival_image)
        return Explanation(
            method, m.heat, m.heat, m.score, m.score, None, 1, m.seconds, kind=kind, rival=rival
        )
    target = similarity_target(model, a) if others is None else margin_target(model, a, others)
    if method == "landmarks":
        h, w = query.shape[:2]
        regions = (
            SegmentRegions(slic_labels(query, superpixels))
            if superpixels
            else WindowRegions(h, w, window, stride or max(1, window // 2))
        )
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


def _closest_rival(model: nn.Module, query: Tensor, rivals: Tensor) -> int:
    """Index of the rival most similar to the whole query: the one the margin is taken against."""
    model.eval()
    with torch.no_grad():
        sims = model(normalize(rivals)) @ model(normalize(query))[0]
    return int(sims.argmax())
