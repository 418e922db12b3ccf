"""Occlusion and saliency: they run on a tiny model and find a planted discriminative patch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from training.explain import class_target, similarity_target
from training.explain.attribution import occlusion_map, saliency_map
from training.explain.landmarks import WindowRegions, find_landmarks
from training.explain.scoring import pointing_game
from training.models.embedding import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SIZE = 48
PATCH = (slice(30, 40), slice(8, 18))  # rows, cols of the planted patch


class PatchDetector(nn.Module):
    """Class 1 fires on a bright patch at one place; every other pixel counts a tenth as much."""

    def __init__(self) -> None:
        super().__init__()
        w = torch.full((SIZE, SIZE), 0.1)
        w[PATCH] = 3.0
        self.register_buffer("w", w / w.sum())

    def forward(self, x: Tensor) -> Tensor:
        logit = 4.0 * (x.mean(1) * self.w).sum((1, 2))
        return torch.stack([torch.zeros_like(logit), logit], dim=1)


def _scene() -> tuple[Tensor, np.ndarray]:
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.uniform(0.3, 0.7, (1, 3, SIZE, SIZE)).astype(np.float32))
    image[..., PATCH[0], PATCH[1]] = 1.0
    truth = np.zeros((SIZE, SIZE), np.float32)
    truth[PATCH] = 1.0
    return image, truth


@pytest.mark.parametrize("patch", [5, 11])
def test_planted_patch_ranked_highest(patch: int) -> None:
    image, truth = _scene()
    target = class_target(PatchDetector(), 1)
    occ = occlusion_map(target, image, patch=patch)
    sal = saliency_map(target, image, patch=patch)
    for heat in (occ.heat, sal.heat):
        assert heat.shape == (SIZE, SIZE)
        assert pointing_game(heat, truth) == 1.0
        assert heat[truth > 0].mean() > 3 * heat[truth == 0].mean()
    assert occ.evaluations == ((SIZE - patch) // 3 + 1) ** 2 + 1
    landmarks = find_landmarks(target, image, WindowRegions(SIZE, SIZE, patch, 3), epsilon=0.05)
    assert landmarks.mask[truth > 0].mean() > 2 * landmarks.mask[truth == 0].mean()


class MeanBrightness(nn.Module):
    """Class 1's logit is the mean normalised pixel value: any image size."""

    def forward(self, x: Tensor) -> Tensor:
        logit = x.mean((1, 2, 3))
        return torch.stack([torch.zeros_like(logit), logit], dim=1)


def test_occlusion_value_is_the_mean_score_drop_over_covering_windows() -> None:
    # 14 px image, 11 px patch, stride 3: two window positions per axis (at 0 and 3), so the
    # corner pixel is covered by one window, the centre by all four; compute both by hand
    image = torch.full((1, 3, 14, 14), 0.6)
    target = class_target(MeanBrightness(), 1)
    occ = occlusion_map(target, image, patch=11)
    assert occ.evaluations == 2 * 2 + 1
    with torch.no_grad():
        whole = float(target.score(image)[0])
        drops = []
        for top in (0, 3):
            for left in (0, 3):
                occluded = image.clone()
                occluded[..., top : top + 11, left : left + 11] = 0.0
                drops.append(whole - float(target.score(occluded)[0]))
    # all four windows remove the same area, so every covered pixel gets that one drop
    assert occ.heat[0, 0] == pytest.approx(drops[0], rel=1e-5)
    assert occ.heat[7, 7] == pytest.approx(np.mean(drops), rel=1e-5)
    assert occ.score == pytest.approx(whole)


def test_occlusion_and_saliency_run_on_a_tiny_embedding_model() -> None:
    torch.manual_seed(0)
    model = build_model("resnet-tiny", image_size=64, embedding_dim=32)
    rng = np.random.default_rng(0)
    query = torch.from_numpy(rng.random((1, 3, 64, 64)).astype(np.float32))
    target = similarity_target(model, query.flip(-2))
    occ = occlusion_map(target, query, patch=21)
    sal = saliency_map(target, query, patch=21)
    assert occ.evaluations == ((64 - 21) // 3 + 1) ** 2 + 1
    for result in (occ, sal):
        assert result.heat.shape == (64, 64) and np.isfinite(result.heat).all()
        assert -1.0 <= result.score <= 1.0
        assert result.heat.std() > 0
    assert (sal.heat >= 0).all()
    with pytest.raises(ValueError, match="does not fit"):
        occlusion_map(target, query, patch=65)
