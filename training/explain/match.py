"""Match maps: where a query and its matched image agree, cell by cell, in a grid-keeping model.

A grid-keeping model (resnet50-truncated, resnet-tiny-truncated) embeds the flattened,
1×1-reduced feature grid, so cell (i, j) of the query is only ever compared with cell (i, j) of
the matched image. The cosine similarity of those two cell descriptors says how much that part
of the coin looks alike to the model; upsampled to the image, it shows which regions carry the
match, on both images at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from training.augment import normalize
from training.models.embedding import EmbeddingModel


@dataclass(frozen=True)
class MatchMap:
    """Per-cell similarity, its image-size upsampling, and the overall embedding similarity."""

    cells: np.ndarray  # h×w cosine similarity of the two cell descriptors, in [-1, 1]
    heat: np.ndarray  # H×W bilinear upsampling of `cells` (the same for both images)
    similarity: float  # cosine similarity of the two embeddings
    seconds: float


def match_map(model: EmbeddingModel, query: Tensor, against: Tensor) -> MatchMap:
    """Per-cell similarity of two 1×3×H×W [0, 1] images of the same size under `model`.

    Raises:
        ValueError: the model pools its features away (no grid to compare), or bad shapes.
    """
    if not model.keeps_grid:
        raise ValueError(
            f"match maps need a grid-keeping model (resnet50-truncated, resnet-tiny-truncated), "
            f"not {model.config.get('name')!r}; use --method landmarks, occlusion or saliency"
        )
    if query.dim() != 4 or query.shape != against.shape or query.shape[0] != 1:
        raise ValueError(
            f"query and against must both be 1×3×H×W of one size, got "
            f"{tuple(query.shape)} and {tuple(against.shape)}"
        )
    start = time.perf_counter()
    model.eval()
    with torch.no_grad():
        feats = model.spatial_features(normalize(torch.cat([query, against])))
        cells = F.cosine_similarity(feats[0], feats[1], dim=0, eps=1e-8)
        embeddings = model.embed_spatial(feats)
        similarity = float((embeddings[0] * embeddings[1]).sum())
        heat = F.interpolate(
            cells[None, None], size=query.shape[-2:], mode="bilinear", align_corners=False
        )[0, 0]
    return MatchMap(
        cells=cells.cpu().numpy().astype(np.float32),
        heat=heat.cpu().numpy().astype(np.float32),
        similarity=similarity,
        seconds=time.perf_counter() - start,
    )
