"""Metric-learning losses from pytorch-metric-learning, behind one small constructor.

ArcFace and SubCenterArcFace own a weight matrix (one learned centre per class, or several for
sub-centres): those are parameters the optimizer must update, alongside the model's.
The triplet loss has no parameters; its miner picks the semi-hard triplets of each batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pytorch_metric_learning import losses, miners
from torch import nn

from training.errors import SettingsError

LOSSES = ("arcface", "subcenter-arcface", "triplet")


@dataclass(frozen=True)
class LossSettings:
    """Loss choice and its parameters (margins in radians, as the ArcFace paper states them)."""

    name: str = "arcface"
    margin_rad: float = 0.5
    # The paper's 64 is for face sets with thousands of identities; the tens to hundreds of coin
    # sides here need far less (AdaCos's fixed scale, sqrt(2)·ln(C-1), is about 7 for 200
    # classes). The demo recipe was tuned at 16; 64 was not re-measured.
    scale: float = 16.0
    sub_centers: int = 3
    triplet_margin: float = 0.1
    # Share of the run's steps over which the angular margin rises linearly from 0 to
    # margin_rad (the full margin makes every target logit negative at first). On the demo it
    # did not shorten the first epochs at chance (README, figures), so it is off by default.
    margin_warmup: float = 0.0


def margin_at(step: int, settings: LossSettings, total_steps: int) -> float:
    """The angular margin (radians) at `step`: a linear ramp over margin_warmup of the run."""
    ramp_steps = settings.margin_warmup * total_steps
    if ramp_steps <= 0 or step >= ramp_steps:
        return settings.margin_rad
    return settings.margin_rad * step / ramp_steps


def set_margin(loss: nn.Module, margin_rad: float) -> None:
    """Set an ArcFace loss's angular margin in place (a loss without one is left alone)."""
    if isinstance(loss, losses.ArcFaceLoss):  # SubCenterArcFaceLoss is one too
        loss.margin = margin_rad  # radians once constructed (ArcFaceLoss.init_margin)


class MinedTripletLoss(nn.Module):
    """Triplet margin loss over the triplets a miner finds in the batch."""

    def __init__(self, margin: float):
        super().__init__()
        self.miner = miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard")
        self.loss = losses.TripletMarginLoss(margin=margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean loss over mined triplets (zero when the batch has none)."""
        return self.loss(embeddings, labels, self.miner(embeddings, labels))


def build_loss(settings: LossSettings, num_classes: int, embedding_dim: int) -> nn.Module:
    """A loss module called as loss(embeddings, labels) → scalar.

    Raises:
        SettingsError: unknown loss name.
    """
    # pytorch-metric-learning takes the angular margin in degrees.
    margin_deg = math.degrees(settings.margin_rad)
    if settings.name == "arcface":
        return losses.ArcFaceLoss(
            num_classes, embedding_dim, margin=margin_deg, scale=settings.scale
        )
    if settings.name == "subcenter-arcface":
        return losses.SubCenterArcFaceLoss(
            num_classes=num_classes,
            embedding_size=embedding_dim,
            margin=margin_deg,
            scale=settings.scale,
            sub_centers=settings.sub_centers,
        )
    if settings.name == "triplet":
        return MinedTripletLoss(settings.triplet_margin)
    raise SettingsError(f"unknown loss {settings.name!r}; choose from {', '.join(LOSSES)}")
