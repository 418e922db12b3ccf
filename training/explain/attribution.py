"""Occlusion and gradient saliency (captum) with the seed paper's settings, for comparison.

Occlusion slides a patch of `patch` px (11 or 21 in the paper) over the image on a stride-3
grid, replaces it with the baseline, and records how much the score drops; a pixel's value is
the mean drop over the patches covering it. Saliency is |∂score/∂pixel| (max over colour
channels, captum's convention), box-smoothed by the same patch size so both maps live at the
same scale.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from training.explain.targets import Baseline, Target, baseline_image

PATCH_SIZES = (11, 21)
OCCLUSION_STRIDE = 3


@dataclass(frozen=True)
class AttributionResult:
    """A per-pixel map (higher = more discriminative) and what it cost."""

    heat: np.ndarray  # H×W float32
    score: float  # the target's score on the unchanged image
    evaluations: int  # images passed through the network
    seconds: float


def _check(image: Tensor, patch: int) -> None:
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"image must be 1×3×H×W, got {tuple(image.shape)}")
    if not 1 <= patch <= min(image.shape[-2:]):
        raise ValueError(f"patch {patch} px does not fit a {tuple(image.shape[-2:])} image")


def occlusion_map(
    target: Target,
    image: Tensor,
    *,
    patch: int = 11,
    stride: int = OCCLUSION_STRIDE,
    baseline: Baseline = 0.0,
    batch_size: int = 64,
) -> AttributionResult:
    """Score drop when each patch×patch square is set to `baseline`, averaged per pixel.

    `baseline` is a grey level or an RGB colour in [0, 1] (see explain_match).
    """
    _check(image, patch)
    start = time.perf_counter()
    image = image.detach()
    with torch.no_grad():
        score = float(target.score(image)[0])
        # captum imported here: it pulls in matplotlib, ~1 s of every `pipeline` start-up
        from captum.attr import Occlusion

        attr = Occlusion(target.score).attribute(
            image,
            sliding_window_shapes=(image.shape[1], patch, patch),
            strides=(image.shape[1], stride, stride),
            baselines=baseline_image(baseline, image),
            perturbations_per_eval=batch_size,
        )
    h, w = image.shape[-2:]
    windows = ((h - patch) // stride + 1) * ((w - patch) // stride + 1)
    # every channel of a pixel gets the same value (the window spans all channels)
    heat = attr[0].mean(0).cpu().numpy().astype(np.float32)
    return AttributionResult(heat, score, windows + 1, time.perf_counter() - start)


def saliency_map(target: Target, image: Tensor, *, patch: int = 11) -> AttributionResult:
    """|gradient| of the score per pixel (max over channels), box-smoothed over patch×patch."""
    _check(image, patch)
    start = time.perf_counter()
    x = image.detach().clone()
    with torch.no_grad():
        score = float(target.score(x)[0])
    from captum.attr import Saliency  # imported here: see Occlusion

    grads = Saliency(target.score).attribute(x.requires_grad_(True), abs=True)
    raw = grads.amax(dim=1, keepdim=True)
    # an odd patch centres the box on its pixel; an even one is off by half a pixel either way
    smoothed = F.avg_pool2d(raw, patch, stride=1, padding=patch // 2, count_include_pad=False)[
        ..., : x.shape[-2], : x.shape[-1]
    ]
    heat = smoothed[0, 0].detach().cpu().numpy().astype(np.float32)
    return AttributionResult(heat, score, 2, time.perf_counter() - start)
