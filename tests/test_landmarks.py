"""Landmark discovery: constraint kept, kept area shrinking with epsilon, back-projection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from training.augment import normalize
from training.explain import Target, class_target, similarity_target
from training.explain.landmarks import (
    SegmentRegions,
    WindowRegions,
    find_landmarks,
    slic_labels,
)
from training.models.embedding import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SIZE = 48


class CentreWeighted(nn.Module):
    """Two-class 'classifier' whose class-1 logit is a Gaussian-weighted sum of the pixels.

    Removing any region lowers the score a little, the centre most: the sparsest region set
    that keeps the score within epsilon grows from the centre as epsilon shrinks.
    """

    def __init__(self, size: int, sigma: float) -> None:
        super().__init__()
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        w = torch.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * sigma**2))
        self.register_buffer("w", w / w.sum())

    def forward(self, x: Tensor) -> Tensor:
        logit = 3.0 * (x.mean(1) * self.w).sum((1, 2))
        return torch.stack([torch.zeros_like(logit), logit], dim=1)


def _image(value: float = 0.8) -> Tensor:
    return torch.full((1, 3, SIZE, SIZE), value)


def test_window_regions_compose_whole_image_and_partial_weights() -> None:
    regions = WindowRegions(SIZE, SIZE, window=11, stride=5)
    assert regions.count == (((SIZE - 11) + 4) // 5 + 1) ** 2
    torch.testing.assert_close(regions.compose(torch.ones(regions.count)), torch.ones(SIZE, SIZE))
    assert float(regions.compose(torch.zeros(regions.count)).max()) == 0.0
    x = torch.zeros(regions.count)
    x[0] = 1.0  # the top-left window alone: full weight at its corner, none far away
    mask = regions.compose(x)
    assert float(mask[0, 0]) == 1.0 and float(mask[-1, -1]) == 0.0
    with pytest.raises(ValueError, match="larger than"):
        WindowRegions(8, 8, window=11, stride=3)


def test_constraint_holds_and_kept_area_shrinks_as_epsilon_grows() -> None:
    model = CentreWeighted(SIZE, sigma=10.0)
    target = class_target(model, 1)
    regions = WindowRegions(SIZE, SIZE, window=11, stride=5)
    kept = []
    for eps in (0.02, 0.08, 0.2):
        result = find_landmarks(target, _image(), regions, epsilon=eps, max_iterations=150)
        assert result.score >= result.initial_score - eps
        # the reported score is the score of the reported mask
        masked = torch.from_numpy(result.mask) * _image()
        with torch.no_grad():
            assert float(target.score(masked)[0]) == pytest.approx(result.score, abs=1e-5)
        kept.append(result.fraction_kept)
    assert kept[0] > kept[1] > kept[2]
    assert kept[0] < 0.95  # even the tightest epsilon drops the far corners


def test_kept_regions_are_the_ones_the_score_depends_on() -> None:
    result = find_landmarks(
        class_target(CentreWeighted(SIZE, 6.0), 1),
        _image(),
        WindowRegions(SIZE, SIZE, 11, 5),
        epsilon=0.05,
    )
    centre = result.mask[SIZE // 2 - 4 : SIZE // 2 + 4, SIZE // 2 - 4 : SIZE // 2 + 4].mean()
    corners = np.mean([result.mask[:8, :8].mean(), result.mask[-8:, -8:].mean()])
    assert centre > 0.9 and corners < 0.1


def test_back_projection_climbs_until_the_constraint_holds() -> None:
    inner = class_target(CentreWeighted(SIZE, 10.0), 1)
    scores: list[float] = []

    def recording(x: Tensor) -> Tensor:
        s = inner.score(x)
        scores.append(float(s[0].detach()))
        return s

    eps = 0.05
    result = find_landmarks(
        Target(recording, "probability"),
        _image(),
        WindowRegions(SIZE, SIZE, 11, 5),
        epsilon=eps,
        sparsity=2.0,  # a strong pull: the constraint breaks often
        max_iterations=80,
    )
    trace = scores[1:]  # scores[0] is the whole image
    bound = scores[0] - eps
    broken = [i for i, s in enumerate(trace[:-1]) if s < bound]
    assert result.backprojection_steps == len(broken) + (trace[-1] < bound)
    assert broken, "a strong sparsity pull must break the constraint at least once"
    # a loss-only step on this monotone score always raises it
    assert all(trace[i + 1] > trace[i] for i in broken)
    assert result.score >= bound


def test_loose_epsilon_never_binds_and_the_objective_decides() -> None:
    target = class_target(CentreWeighted(SIZE, 10.0), 1)
    regions = WindowRegions(SIZE, SIZE, 21, 10)
    lam = 1.5
    result = find_landmarks(target, _image(), regions, epsilon=1.0, sparsity=lam)
    assert result.backprojection_steps == 0  # a probability cannot drop by more than 1

    def objective(weights: Tensor) -> float:
        with torch.no_grad():
            score = target.score(regions.compose(weights) * _image())[0]
            return float(target.loss(score)) + lam * float(weights.mean())

    found = objective(torch.from_numpy(result.weights))
    assert found < objective(torch.ones(regions.count))
    assert found < objective(torch.zeros(regions.count))
    assert 0.0 < result.fraction_kept < 1.0


def test_embedding_model_and_superpixels() -> None:
    torch.manual_seed(0)
    model = build_model("resnet-tiny", image_size=64, embedding_dim=32)
    rng = np.random.default_rng(0)
    pixels = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    labels = slic_labels(pixels, 36)
    assert labels.shape == (64, 64) and 20 <= len(np.unique(labels)) <= 40
    query = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    against = query.flip(-1)
    target = similarity_target(model, against)
    result = find_landmarks(target, query, SegmentRegions(labels), epsilon=0.1, max_iterations=15)
    assert result.score >= result.initial_score - 0.1
    assert result.mask.shape == (64, 64) and 0.0 <= result.fraction_kept <= 1.0
    assert result.iterations <= 15
    with torch.no_grad():
        expected = float((model(normalize(query)) * model(normalize(against))).sum())
    assert result.initial_score == pytest.approx(expected, abs=1e-5)
