"""Explanations of a model's decision: which regions of a coin drive a match or a class.

Every method explains a `Target`: a differentiable score of float B×3×H×W images in [0, 1]
(the model's ImageNet normalisation is applied inside), so the same code explains an embedding
model (cosine similarity to the matched image) and a classifier (the class probability).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from training.augment import normalize

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
