"""Landmark discovery: the smallest set of regions that keeps a decision (the seed paper's method).

The image is split into K regions (sliding windows of a size and stride, or superpixels) and
re-assembled as a weighted sum: mask = Σ x_k·region_k / Σ region_k (the normalisation keeps
overlapping windows in [0, 1]) and image(x) = mask·image + (1 − mask)·baseline. Starting from
x = 1 (the whole image) we minimise loss(f(image(x))) + λ·|x|₁ subject to
score(f(image(x))) > score(f(image)) − ε by gradient steps with back-projection: while the
constraint is broken, steps follow the loss alone until it holds again; x is clipped to [0, 1].

The loss gradient is rescaled to unit max-norm at every step, so λ weighs the sparsity pull
against the strongest region's loss pull and one default serves every model and score scale.
With λ >= 1 every region but the strongest is pulled down while the constraint holds, so ε
alone decides how much is kept (the default, λ = 1); with λ < 1 regions whose loss pull
exceeds λ stay even when ε would allow removing them.
The answer is the feasible iterate with the lowest objective, so the constraint always holds
at the end (x = 1 is feasible by construction).

Superpixels: scikit-image is not installed and OpenCV's ximgproc is not in opencv-python, so
`slic_labels` is a small SLIC of our own (k-means on Lab colour and position, seeded on a grid);
it does not enforce connectivity, so a label may own a few detached pixels.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from training.explain.targets import Baseline, Target, baseline_image


class Regions:
    """K image regions and how region weights x compose into a per-pixel mask in [0, 1]."""

    count: int

    def compose(self, x: Tensor) -> Tensor:
        """Per-pixel H×W mask Σ x_k·region_k / Σ region_k for weights x of shape (K,)."""
        raise NotImplementedError


class WindowRegions(Regions):
    """Square windows of `window` px every `stride` px; the last row and column reach the edge."""

    def __init__(self, height: int, width: int, window: int, stride: int) -> None:
        if window < 1 or stride < 1:
            raise ValueError(f"window and stride must be >= 1 px, got {window}, {stride}")
        if window > min(height, width):
            raise ValueError(f"window {window} px is larger than the {height}×{width} image")
        self.height, self.width, self.window, self.stride = height, width, window, stride
        # enough windows that the last one reaches (or overhangs) the far edge
        self.rows = math.ceil((height - window) / stride) + 1
        self.cols = math.ceil((width - window) / stride) + 1
        self.count = self.rows * self.cols
        # windows are boxes, so painting them is separable: mask = A · X · Bᵀ with A[y, i] = 1
        # where window row i covers pixel row y (two small matmuls instead of K×H×W masks)
        self._rows_cover = self._cover(height, self.rows)
        self._cols_cover = self._cover(width, self.cols)
        self._coverage = self._paint(torch.ones(self.count))

    def _cover(self, length: int, windows: int) -> Tensor:
        pixel = torch.arange(length)[:, None]
        first = torch.arange(windows)[None, :] * self.stride
        return ((pixel >= first) & (pixel < first + self.window)).float()

    def _paint(self, x: Tensor) -> Tensor:
        rows = self._rows_cover.to(device=x.device, dtype=x.dtype)
        cols = self._cols_cover.to(device=x.device, dtype=x.dtype)
        return rows @ x.reshape(self.rows, self.cols) @ cols.T

    def compose(self, x: Tensor) -> Tensor:
        """Per-pixel mask: the mean weight of the windows covering each pixel."""
        return self._paint(x) / self._coverage.to(x.device)


class SegmentRegions(Regions):
    """Regions given by an integer label image (superpixels), one region per label."""

    def __init__(self, labels: np.ndarray) -> None:
        _, dense = np.unique(labels, return_inverse=True)
        self.labels = torch.from_numpy(dense.reshape(labels.shape).astype(np.int64))
        self.count = int(self.labels.max()) + 1

    def compose(self, x: Tensor) -> Tensor:
        """Per-pixel mask: each pixel takes its region's weight (regions do not overlap)."""
        return x[self.labels.to(x.device)]


def slic_labels(
    image: np.ndarray, segments: int, *, compactness: float = 10.0, iterations: int = 10
) -> np.ndarray:
    """SLIC superpixels of an RGB uint8 image: H×W int labels, about `segments` of them."""
    h, w = image.shape[:2]
    lab = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2LAB).astype(np.float32)
    step = math.sqrt(h * w / max(1, segments))
    ys = np.arange(step / 2, h, step)
    xs = np.arange(step / 2, w, step)
    cy, cx = (a.ravel() for a in np.meshgrid(ys, xs, indexing="ij"))
    centres = np.column_stack([cy, cx, lab[cy.astype(int), cx.astype(int)]]).astype(np.float32)
    py, px = (a.ravel().astype(np.float32) for a in np.mgrid[0:h, 0:w])
    colour = lab.reshape(-1, 3)
    spatial_weight = (compactness / step) ** 2
    labels = np.zeros(h * w, np.int64)
    for _ in range(iterations):
        d_xy = (py[:, None] - centres[None, :, 0]) ** 2 + (px[:, None] - centres[None, :, 1]) ** 2
        d_col = ((colour[:, None, :] - centres[None, :, 2:]) ** 2).sum(-1)
        dist = d_col + spatial_weight * d_xy
        # SLIC searches a 2S×2S box around each centre; farther centres are not candidates
        dist[d_xy > (2 * step) ** 2] = np.inf
        labels = dist.argmin(1)
        for k in range(len(centres)):
            members = labels == k
            if members.any():
                centres[k] = [py[members].mean(), px[members].mean(), *colour[members].mean(0)]
    return labels.reshape(h, w)


@dataclass(frozen=True)
class LandmarkResult:
    """The kept-region mask and how the search went."""

    mask: np.ndarray  # H×W float32 in [0, 1]: how much of each pixel is kept
    weights: np.ndarray  # (K,) region weights x
    initial_score: float  # score of the whole image, score(f(1))
    score: float  # score of the kept image; >= initial_score − epsilon
    epsilon: float
    fraction_kept: float  # mean of the mask: the share of the image that is kept
    iterations: int  # network evaluations (one forward and one backward pass each)
    backprojection_steps: int  # of those, steps taken on the loss alone
    seconds: float


def _evaluate(
    target: Target, regions: Regions, x: Tensor, image: Tensor, fade: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Score and loss of the image that region weights x keep, and the loss gradient in x."""
    x.requires_grad_(True)
    mask = regions.compose(x)
    score = target.score(mask * image + (1 - mask) * fade)[0]
    loss = target.loss(score)
    (loss_grad,) = torch.autograd.grad(loss, x)
    return score.detach(), loss.detach(), loss_grad


def find_landmarks(
    target: Target,
    image: Tensor,
    regions: Regions,
    *,
    epsilon: float = 0.5,
    sparsity: float = 1.0,
    step: float = 0.1,
    max_iterations: int = 200,
    patience: int = 20,
    tolerance: float = 1e-3,
    baseline: Baseline = 0.0,
) -> LandmarkResult:
    """Search the sparsest region weights that keep target's score within epsilon of the full image's.

    Args:
        target: the score to keep (class probability or similarity to the matched image).
        image: 1×3×H×W float in [0, 1].
        regions: the K regions the image is cut into.
        epsilon: allowed drop of the score below the whole image's score.
        sparsity: λ, the weight of |x|₁ against the (unit max-norm) loss gradient.
        step: the largest change of any region weight in one step.
        max_iterations: network evaluations at most.
        patience: stop once the best feasible objective has not improved by more than
            `tolerance` for this many steps.
        tolerance: the smallest objective decrease that counts as progress.
        baseline: grey level or RGB colour ([0, 1]) that removed regions fade to; 0 is the
            rig's dark stage, the masked background of a run's crops is BACKGROUND_RGB / 255.
    """
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"image must be 1×3×H×W, got {tuple(image.shape)}")
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    start = time.perf_counter()
    image = image.detach()
    fade = baseline_image(baseline, image)
    with torch.no_grad():
        initial = float(target.score(image)[0])
    bound = initial - epsilon
    x = torch.ones(regions.count, device=image.device)
    best_x, best_objective, best_score = x.clone(), math.inf, initial
    since_best = backprojections = iterations = 0
    while iterations < max_iterations:
        iterations += 1
        score, loss, loss_grad = _evaluate(target, regions, x, image, fade)
        x = x.detach()
        feasible = float(score) >= bound
        direction = loss_grad / loss_grad.abs().max().clamp_min(1e-12)
        since_best += 1
        if feasible:
            objective = float(loss) + sparsity * float(x.mean())
            if objective < best_objective - tolerance:
                best_x, best_objective, best_score = x.clone(), objective, float(score)
                since_best = 0
            if float(x.max()) == 0.0:
                break
            # the subgradient of λ·|x|₁ on x >= 0, on the scale of the normalised loss pull
            direction = direction + sparsity * (x > 0).float()
        else:
            # back-projection: the loss alone until the constraint holds again
            backprojections += 1
        if since_best >= patience:
            break
        x = (x - step * direction).clamp(0.0, 1.0)
    with torch.no_grad():
        mask_np = regions.compose(best_x).cpu().numpy().astype(np.float32)
    return LandmarkResult(
        mask=mask_np,
        weights=best_x.cpu().numpy(),
        initial_score=initial,
        score=best_score,
        epsilon=epsilon,
        fraction_kept=float(mask_np.mean()),
        iterations=iterations,
        backprojection_steps=backprojections,
        seconds=time.perf_counter() - start,
    )
