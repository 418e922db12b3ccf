"""The identity margin: what tells a coin from its die-siblings, not what it shares with them.

A toy embedding sees a 32 px image as its 8×8 block means. Every coin carries the same bright
"die design" in the middle; each carries its own small mark. The query and its matched image
are one coin (mark at P), the rival a die-sibling (mark at Q). The plain similarity is carried
by the shared design; the margin over the sibling only by the marks, so margin maps must point
at P where similarity maps point at the design.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.augment import IMAGENET_MEAN, IMAGENET_STD, normalize
from training.explain import (
    background_baseline,
    baseline_image,
    explain_match,
    margin_target,
    similarity_target,
    to_tensor,
)
from training.explain.attribution import occlusion_map
from training.explain.match import match_map
from training.explain.scoring import pointing_game
from training.models.embedding import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SIZE = 32
MARK_P = (slice(4, 8), slice(24, 28))  # the query coin's own mark, one 4 px block
MARK_Q = (slice(24, 28), slice(4, 8))  # the die-sibling's mark


class BlockEmbedder(nn.Module):
    """Unit vector of an image's 8×8 grey block means (ImageNet-normalised input undone)."""

    def forward(self, x: Tensor) -> Tensor:
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        grey = (x * std + mean).mean(1, keepdim=True)
        return F.normalize(F.avg_pool2d(grey, 4).flatten(1), dim=1)


def _coin(mark: tuple[slice, slice], noise_seed: int | None = None) -> np.ndarray:
    image = np.full((SIZE, SIZE, 3), 20, np.uint8)
    image[8:24, 8:24] = 230  # the die design every sibling shares
    image[mark] = 160
    if noise_seed is not None:
        rng = np.random.default_rng(noise_seed)
        image = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
    return image


def _truth(mark: tuple[slice, slice]) -> np.ndarray:
    truth = np.zeros((SIZE, SIZE), np.float32)
    truth[mark] = 1.0
    return truth


def test_margin_is_similarity_minus_the_closest_rival_by_hand() -> None:
    model = BlockEmbedder()
    query, against = to_tensor(_coin(MARK_P, 0)), to_tensor(_coin(MARK_P))
    far = _coin(MARK_Q)
    far[8:24, 8:24] = 40  # another design altogether: a weaker rival than the sibling
    rivals = torch.cat([to_tensor(far), to_tensor(_coin(MARK_Q))])
    target = margin_target(model, against, rivals)
    with torch.no_grad():
        e = model(normalize(torch.cat([query, against, rivals])))
        sims = (e[0] * e[1:]).sum(1)
        expected = float(sims[0] - sims[1:].max())
        assert float(sims[2]) > float(sims[1])  # the sibling is the closest rival
        assert float(target.score(query)[0]) == pytest.approx(expected, abs=1e-6)
        plain = float(similarity_target(model, against).score(query)[0])
    assert plain == pytest.approx(float(sims[0]), abs=1e-6)
    assert 0 < expected < plain  # the margin is what is left once the design is shared
    with pytest.raises(ValueError, match="rivals"):
        margin_target(model, against, rivals[0])


@pytest.mark.parametrize("method", ["landmarks", "occlusion", "saliency"])
def test_margin_maps_point_at_the_coins_own_mark(method: str) -> None:
    model = BlockEmbedder()
    query, against, sibling = _coin(MARK_P, 0), _coin(MARK_P), _coin(MARK_Q)
    truth, design = _truth(MARK_P), np.zeros((SIZE, SIZE), np.float32)
    design[8:24, 8:24] = 1.0
    margin = explain_match(
        model, query, against, method, window=4, stride=4, epsilon=0.02, rivals=[sibling]
    )
    plain = explain_match(model, query, against, method, window=4, stride=4, epsilon=0.02)
    assert margin.kind == "margin" and plain.kind == "similarity" and margin.rival == 0
    if method == "saliency":
        # |gradient| is as large where the query lacks the sibling's mark: brightening Q
        # would make it look like the sibling, so both marks tell the two apart
        truth = np.maximum(truth, _truth(MARK_Q))
    assert pointing_game(margin.heat, truth) == 1.0
    if method != "saliency":  # at a similarity of ~1 its gradient is ~0 and says nothing
        # the plain similarity's map is drawn to the shared design, not to the mark
        assert plain.heat[design > 0].mean() > plain.heat[truth > 0].mean()
    assert margin.heat[truth > 0].mean() > margin.heat[design > 0].mean()
    if method == "landmarks":
        assert margin.score >= margin.initial_score - 0.02


def test_match_map_against_a_rival_is_the_difference_of_two_maps() -> None:
    torch.manual_seed(0)
    model = build_model("resnet-tiny-truncated", image_size=64).eval()
    rng = np.random.default_rng(0)
    q, a, r = (torch.from_numpy(rng.random((1, 3, 64, 64)).astype(np.float32)) for _ in range(3))
    to_a, to_r, margin = match_map(model, q, a), match_map(model, q, r), match_map(model, q, a, r)
    np.testing.assert_allclose(margin.heat, to_a.heat - to_r.heat, atol=1e-5)
    assert margin.similarity == pytest.approx(to_a.similarity, abs=1e-6)
    assert margin.score == pytest.approx(to_a.similarity - to_r.similarity, abs=1e-6)


def test_match_map_follows_a_rotation_pooling_model() -> None:
    # the model pools quarter turns: its similarity is the pooled one, and its map turns with
    # the images (one upright pass would give neither)
    torch.manual_seed(0)
    model = build_model("resnet-tiny-truncated", image_size=64, rotations=4).eval()
    rng = np.random.default_rng(1)
    q, a = (torch.from_numpy(rng.random((1, 3, 64, 64)).astype(np.float32)) for _ in range(2))
    m = match_map(model, q, a)
    with torch.no_grad():
        pooled = float((model(normalize(q)) * model(normalize(a))).sum())
    assert m.similarity == pytest.approx(pooled, abs=1e-5)
    turned = match_map(model, torch.rot90(q, 1, (2, 3)), torch.rot90(a, 1, (2, 3)))
    np.testing.assert_allclose(turned.heat, np.rot90(m.heat, 1), atol=1e-5)
    assert turned.similarity == pytest.approx(m.similarity, abs=1e-5)


def test_removed_pixels_fade_to_the_baseline_colour() -> None:
    model = BlockEmbedder()
    image = torch.full((1, 3, SIZE, SIZE), 0.6)
    target = similarity_target(model, image.clone())
    # occluding with the image's own colour changes nothing: every window's drop is zero
    same = occlusion_map(target, image, patch=8, baseline=(0.6, 0.6, 0.6))
    assert np.abs(same.heat).max() < 1e-6
    assert np.abs(occlusion_map(target, image, patch=8, baseline=0.0).heat).max() > 0
    colour = background_baseline(True)
    assert isinstance(colour, tuple) and len(colour) == 3 and all(0 < c < 1 for c in colour)
    assert background_baseline(False) == 0.0
    assert baseline_image(colour, image)[0, :, 5, 5].tolist() == pytest.approx(list(colour))
    with pytest.raises(ValueError, match="one per channel"):
        baseline_image((0.1, 0.2), image)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        baseline_image(1.5, image)
