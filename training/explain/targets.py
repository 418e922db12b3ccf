"""What a map explains: a differentiable `Target` score of images, and the removal baseline.

Every method in this package explains a `Target`: a score of float B×3×H×W images in [0, 1]
(the model's ImageNet normalisation is applied inside). The baseline is what removed or
occluded pixels fade to. See the package docstring for why the identity margin is a target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from training.augment import normalize
from training.coinfind import BACKGROUND_RGB

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


def to_tensor(image: np.ndarray) -> Tensor:
    """H×W×3 uint8 → 1×3×H×W float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255
