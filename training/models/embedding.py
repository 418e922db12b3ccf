"""Embedding models: a backbone, a pooled or grid-keeping head, and L2-normalised output."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from kornia.geometry.transform import rotate
from torch import Tensor, nn

from training.models.convnext import ConvNeXt, convnext_tiny
from training.models.inception import Inception3, inception_v3
from training.models.resnet import ResNet, resnet18, resnet50, resnet_tiny

Backbone = ResNet | ConvNeXt | Inception3

# Channels the 1×1 conv reduces a kept grid to: few enough that flatten → Linear stays small
# (14×14×32 = 6,272 inputs at 224 px) while each cell keeps a descriptor for match maps.
GRID_CHANNELS = 32


@dataclass(frozen=True)
class _Spec:
    """How to build one named model: backbone factory (in_channels → backbone) and head kind."""

    build_backbone: Callable[[int], Backbone]
    keeps_grid: bool
    image_size: int


_SPECS: dict[str, _Spec] = {
    "resnet18": _Spec(lambda c: resnet18(num_classes=None, in_channels=c), False, 224),
    "resnet50": _Spec(lambda c: resnet50(num_classes=None, in_channels=c), False, 224),
    # Cut after torchvision's layer3 (stride 16, 1024 channels): finer grid for match maps.
    "resnet50-truncated": _Spec(
        lambda c: resnet50(num_stages=3, num_classes=None, in_channels=c), True, 224
    ),
    "convnext-tiny": _Spec(lambda c: convnext_tiny(num_classes=None, in_channels=c), False, 224),
    # transform_input: our inputs are ImageNet-normalised, the Google weights expect [-1, 1].
    "inception-v3": _Spec(
        lambda c: inception_v3(
            num_classes=None, aux_logits=False, transform_input=c == 3, in_channels=c
        ),
        False,
        299,
    ),
    "resnet-tiny": _Spec(lambda c: resnet_tiny(num_classes=None, in_channels=c), False, 224),
    "resnet-tiny-truncated": _Spec(
        lambda c: resnet_tiny(num_stages=3, num_classes=None, in_channels=c), True, 224
    ),
}


def model_names() -> list[str]:
    """Return every name build_model accepts."""
    return list(_SPECS)


class EmbeddingModel(nn.Module):
    """Backbone → (pool | 1×1 reduce + flatten) → Linear → optional BatchNorm1d → L2 norm."""

    def __init__(
        self,
        backbone: Backbone,
        *,
        embedding_dim: int,
        grid_size: int | None,
        bn_neck: bool,
        config: dict[str, Any],
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.grid_size = grid_size
        self.config = dict(config)
        if grid_size is None:
            self.reduce: nn.Conv2d | None = None
            in_features = backbone.out_channels
        else:
            self.reduce = nn.Conv2d(backbone.out_channels, GRID_CHANNELS, kernel_size=1)
            in_features = GRID_CHANNELS * grid_size * grid_size
        self.fc = nn.Linear(in_features, embedding_dim)
        self.bn = nn.BatchNorm1d(embedding_dim) if bn_neck else None

    @property
    def keeps_grid(self) -> bool:
        """Whether the embedding is a function of a fixed spatial grid (not of a pooled vector)."""
        return self.grid_size is not None

    def spatial_features(self, x: Tensor) -> Tensor:
        """Return the last B×C×h×w map before space is collapsed (reduced grid, or pre-pool map)."""
        feats = self.backbone.forward_features(x)
        return feats if self.reduce is None else self.reduce(feats)

    def embed_spatial(self, feats: Tensor) -> Tensor:
        """Map spatial_features' output to B×D L2-normalised embeddings."""
        if self.grid_size is None:
            vec = self.backbone.pool(feats)
        else:
            if feats.shape[-2:] != (self.grid_size, self.grid_size):
                raise ValueError(
                    f"{self.config['name']} keeps a {self.grid_size}×{self.grid_size} grid "
                    f"(image_size={self.config['image_size']}), got a {tuple(feats.shape[-2:])} "
                    "grid: resize inputs to image_size"
                )
            vec = torch.flatten(feats, 1)
        emb = self.fc(vec)
        if self.bn is not None:
            emb = self.bn(emb)
        return F.normalize(emb, dim=1)

    @property
    def rotations(self) -> int:
        """How many evenly spaced rotations of each image the eval-mode embedding averages."""
        return int(self.config.get("rotations", 1))

    def forward(self, x: Tensor) -> Tensor:
        """Embed ImageNet-normalised B×C×H×W images as B×D unit vectors.

        In eval mode with `rotations` > 1, the embedding is the normalised mean over that many
        rotations of the image: a coin has no upright in a rig photo, and pooling over rotations
        makes the answer the same whichever way the coin lies (training learns the rest by
        augmentation, at a single rotation per image to keep steps cheap).
        """
        if self.training or self.rotations == 1:
            return self.embed_spatial(self.spatial_features(x))
        total = torch.zeros((), device=x.device)
        for turned in rotated_copies(x, self.rotations):
            total = total + self.embed_spatial(self.spatial_features(turned))
        return F.normalize(total, dim=1)


def rotated_copies(x: Tensor, count: int) -> list[Tensor]:
    """`count` copies of B×C×H×W images turned by multiples of 360°/count.

    Quarter turns are exact pixel permutations (torch.rot90); other angles are resampled
    bilinearly, the corners filled by replicating the border (the crop's backdrop).
    """
    if 4 % count == 0:
        return [torch.rot90(x, k * 4 // count, dims=(2, 3)) for k in range(count)]
    copies = [x]
    for k in range(1, count):
        angle = torch.full((x.shape[0],), 360.0 * k / count, device=x.device, dtype=x.dtype)
        copies.append(rotate(x, angle, padding_mode="border"))
    return copies


def build_model(
    name: str,
    *,
    embedding_dim: int = 512,
    weights: Path | None = None,
    in_channels: int = 3,
    image_size: int | None = None,
    bn_neck: bool = False,
    rotations: int = 1,
) -> EmbeddingModel:
    """Build a named embedding model; `weights` is a torchvision-style backbone `.pth` file.

    Args:
        name: one of model_names().
        embedding_dim: length D of the output embeddings.
        weights: optional backbone state_dict (torchvision names); classifier heads are ignored.
        in_channels: input channels; with 3-channel weights the stem is averaged to fit.
        image_size: square input side; fixes the grid of grid-keeping models. Default: the
            backbone's native size (299 for inception-v3, else 224).
        bn_neck: add BatchNorm1d after the embedding Linear.
        rotations: eval-mode rotation pooling (1 = none; 4 = quarter turns; 8 = every 45°).

    Raises:
        ValueError: unknown name, bad sizes, or weights that do not fit the backbone.
    """
    if name not in _SPECS:
        raise ValueError(f"unknown model {name!r}; choose one of {model_names()}")
    if embedding_dim < 1 or in_channels < 1:
        raise ValueError(
            f"embedding_dim and in_channels must be >= 1, got {embedding_dim}, {in_channels}"
        )
    if not 1 <= rotations <= 36:
        raise ValueError(f"rotations must be between 1 and 36, got {rotations}")
    spec = _SPECS[name]
    size = spec.image_size if image_size is None else image_size
    # Inception's valid (unpadded) convs and pools need at least 75 px; the others need 32.
    min_size = 75 if name == "inception-v3" else 32
    if size < min_size:
        raise ValueError(f"{name} needs image_size >= {min_size}, got {size}")
    backbone = spec.build_backbone(in_channels)
    if weights is not None:
        load_torchvision_weights(backbone, weights)
    grid_size = None
    if spec.keeps_grid:
        assert isinstance(backbone, ResNet)  # only ResNets are built truncated
        grid_size = backbone.output_size(size)
    config = {
        "name": name,
        "embedding_dim": embedding_dim,
        "image_size": size,
        "in_channels": in_channels,
        "bn_neck": bn_neck,
        "rotations": rotations,
    }
    return EmbeddingModel(
        backbone, embedding_dim=embedding_dim, grid_size=grid_size, bn_neck=bn_neck, config=config
    )


def load_torchvision_weights(model: nn.Module, path: Path) -> None:
    """Load a torchvision-named `.pth` state_dict into a backbone (or an EmbeddingModel's).

    Keys under the backbone's head_prefixes (classifier, aux head, cut-off stages) are ignored on
    both sides; every other key must match in name and shape. The file is read with
    torch.load(weights_only=True), so it cannot run code.

    Raises:
        ValueError: the file is not a plain state_dict, or its keys or shapes do not fit.
    """
    backbone = model.backbone if isinstance(model, EmbeddingModel) else model
    head: tuple[str, ...] = getattr(backbone, "head_prefixes", ())
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refused an object that could run code
        raise ValueError(f"{path}: not a plain state_dict: {e}") from e
    # Training scripts often wrap the weights ({"state_dict": ...}) or save a DDP model.
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise ValueError(f"{path}: expected a state_dict of tensors, got {type(raw).__name__}")
    state = {k.removeprefix("module."): v for k, v in raw.items()}
    state = {k: v for k, v in state.items() if not k.startswith(head)}
    _adapt_stem(backbone, state)
    try:
        result = backbone.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches raise even when strict=False
        raise ValueError(f"{path}: weights do not fit {type(backbone).__name__}: {e}") from e
    missing = [k for k in result.missing_keys if not k.startswith(head)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{path}: weights do not fit {type(backbone).__name__}: "
            f"missing {missing[:5]} ({len(missing)} in all), "
            f"unexpected {result.unexpected_keys[:5]} ({len(result.unexpected_keys)} in all)"
        )


def _adapt_stem(backbone: nn.Module, state: dict[str, Tensor]) -> None:
    # RGB weights for a k-channel stem: sum over RGB divided by k, copied to each channel, so a
    # grey image given as k equal channels gets the same response it would as RGB.
    key: str | None = getattr(backbone, "stem_key", None)
    if key is None or key not in state:
        return
    want = backbone.get_parameter(key).shape[1]
    have = state[key]
    if have.shape[1] == 3 and want != 3:
        state[key] = have.sum(1, keepdim=True).repeat(1, want, 1, 1) / want
