"""Match maps: where a query and its matched image agree, cell by cell, in a grid-keeping model.

A grid-keeping model (resnet50-truncated, resnet-tiny-truncated) embeds the flattened,
1×1-reduced feature grid, so cell (i, j) of the query is only ever compared with cell (i, j) of
the matched image. The cosine similarity of those two cell descriptors says how much that part
of the coin looks alike to the model; upsampled to the image, it shows which regions carry the
match, on both images at once.

A model that pools its embedding over rotations (`rotations` > 1, the trainer's default) compares
the grids of every turned copy: the map is the mean of those copies' maps, each turned back to
the image's own frame, and the similarity is the model's own (pooled) one. A single upright pass
would explain a similarity the model never computes.

Against a rival (another coin struck from the same dies, or the runner-up), the map is the
difference of the query's cell similarities to the matched image and to the rival: where the
query looks more like its own coin than like the rival, which is where the identity margin is
earned. The shared die design cancels out of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.transform import rotate
from torch import Tensor

from training.augment import normalize
from training.models.embedding import EmbeddingModel, rotated_copies


@dataclass(frozen=True)
class MatchMap:
    """Per-cell similarity (or margin), its image-size map, and the model's overall score."""

    cells: np.ndarray  # h×w cell similarity of the upright pass (against a rival: difference)
    heat: np.ndarray  # H×W: upsampled cells, averaged over the model's rotations (both images)
    similarity: float  # the model's cosine similarity of the query and the matched image
    score: float  # `similarity`, or against a rival the margin: similarity − rival's similarity
    seconds: float


def _cells(feats: Tensor, with_rival: bool) -> Tensor:
    """Per-cell similarity of image 0 to image 1, minus to image 2 when there is a rival."""
    cells = F.cosine_similarity(feats[0], feats[1], dim=0, eps=1e-8)
    if with_rival:
        cells = cells - F.cosine_similarity(feats[0], feats[2], dim=0, eps=1e-8)
    return cells


def _turn_back(heat: Tensor, k: int, count: int) -> Tensor:
    """Undo rotated_copies' k-th turn on a 1×1×H×W map."""
    if 4 % count == 0:
        return torch.rot90(heat, -k * 4 // count, dims=(2, 3))
    angle = torch.full((1,), -360.0 * k / count, dtype=heat.dtype)
    return rotate(heat, angle, padding_mode="border")


def match_map(
    model: EmbeddingModel, query: Tensor, against: Tensor, rival: Tensor | None = None
) -> MatchMap:
    """Per-cell similarity of two 1×3×H×W [0, 1] images of the same size under `model`.

    With `rival` (1×3×H×W), the per-cell similarity to the rival is subtracted (see above).

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
    if rival is not None and rival.shape != query.shape:
        raise ValueError(f"rival must be 1×3×H×W like the query, got {tuple(rival.shape)}")
    start = time.perf_counter()
    model.eval()
    batch = normalize(torch.cat([query, against] if rival is None else [query, against, rival]))
    count = model.rotations
    with torch.no_grad():
        embeddings = model(batch)  # the model's own embedding, pooled over rotations if it does
        similarity = float((embeddings[0] * embeddings[1]).sum())
        score = similarity
        if rival is not None:
            score = similarity - float((embeddings[0] * embeddings[2]).sum())
        heat = torch.zeros((1, 1, *query.shape[-2:]))
        upright = None
        for k, turned in enumerate(rotated_copies(batch, count)):
            cells = _cells(model.spatial_features(turned), rival is not None)
            upright = cells if upright is None else upright
            up = F.interpolate(
                cells[None, None], size=query.shape[-2:], mode="bilinear", align_corners=False
            )
            heat += _turn_back(up, k, count)
        heat /= count
    assert upright is not None  # count >= 1
    return MatchMap(
        cells=upright.cpu().numpy().astype(np.float32),
        heat=heat[0, 0].cpu().numpy().astype(np.float32),
        similarity=similarity,
        score=score,
        seconds=time.perf_counter() - start,
    )
