"""ConvNeXt backbones in plain PyTorch, with torchvision's parameter and buffer names."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a B×C×H×W tensor."""

    def forward(self, x: Tensor) -> Tensor:
        """Normalise each pixel's channel vector."""
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Permute(nn.Module):
    """Permute dimensions (a module so that `block`'s Sequential indices match torchvision's)."""

    def __init__(self, dims: Sequence[int]) -> None:
        super().__init__()
        self.dims = list(dims)

    def forward(self, x: Tensor) -> Tensor:
        """Return `x` permuted."""
        return torch.permute(x, self.dims)


class StochasticDepth(nn.Module):
    """Drop the residual branch per sample with probability `p` while training ("row" mode)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"drop probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        """Zero whole samples of `x` and rescale the rest so the expectation is unchanged."""
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        noise = x.new_empty([x.shape[0]] + [1] * (x.ndim - 1)).bernoulli_(survival)
        if survival > 0.0:
            noise.div_(survival)
        return x * noise


class CNBlock(nn.Module):
    """ConvNeXt block: depthwise 7×7, LayerNorm, MLP ×4, layer scale, stochastic depth."""

    def __init__(self, dim: int, layer_scale: float, stochastic_depth_prob: float) -> None:
        super().__init__()
        # Indices 0, 2, 3, 5 carry weights; torchvision's checkpoints address them by index.
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True),
            Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Linear(4 * dim, dim),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block."""
        return x + self.stochastic_depth(self.layer_scale * self.block(x))


class ConvNeXt(nn.Module):
    """torchvision's ConvNeXt: `features` (stem, stages, downsamplers) and `classifier`."""

    stem_key = "features.0.0.weight"
    head_prefixes: tuple[str, ...] = ("classifier.2.",)

    def __init__(
        self,
        dims: Sequence[int],
        depths: Sequence[int],
        *,
        stochastic_depth_prob: float = 0.1,
        layer_scale: float = 1e-6,
        num_classes: int | None = 1000,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if len(dims) != len(depths):
            raise ValueError(f"need one depth per width, got dims={dims}, depths={depths}")
        layers: list[nn.Module] = [
            nn.Sequential(
                nn.Conv2d(in_channels, dims[0], kernel_size=4, stride=4),
                LayerNorm2d(dims[0], eps=1e-6),
            )
        ]
        total = sum(depths)
        block_id = 0
        for i, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
            stage = []
            for _ in range(depth):
                # Drop probability grows linearly with depth, from 0 to stochastic_depth_prob.
                sd_prob = stochastic_depth_prob * block_id / (total - 1.0)
                stage.append(CNBlock(dim, layer_scale, sd_prob))
                block_id += 1
            layers.append(nn.Sequential(*stage))
            if i + 1 < len(dims):
                layers.append(
                    nn.Sequential(
                        LayerNorm2d(dim, eps=1e-6),
                        nn.Conv2d(dim, dims[i + 1], kernel_size=2, stride=2),
                    )
                )
        self.features = nn.Sequential(*layers)
        self.out_channels = dims[-1]
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        # classifier.0 (the final norm) is part of the backbone; only classifier.2 is the head.
        head: nn.Module = nn.Linear(dims[-1], num_classes) if num_classes else nn.Identity()
        self.classifier = nn.Sequential(LayerNorm2d(dims[-1], eps=1e-6), nn.Flatten(1), head)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """Return the last stage's feature map, B×out_channels×h×w."""
        return self.features(x)

    def pool(self, feats: Tensor) -> Tensor:
        """Pool a feature map to torchvision's pre-classifier vector (avgpool, classifier.0), B×C."""
        return self.classifier[1](self.classifier[0](self.avgpool(feats)))

    def forward(self, x: Tensor) -> Tensor:
        """Return class logits (identity head when built with num_classes=None)."""
        return self.classifier(self.avgpool(self.features(x)))


def convnext_tiny(
    *, num_classes: int | None = 1000, in_channels: int = 3, stochastic_depth_prob: float = 0.1
) -> ConvNeXt:
    """Build torchvision's ConvNeXt-T (widths 96/192/384/768, depths 3/3/9/3)."""
    return ConvNeXt(
        (96, 192, 384, 768),
        (3, 3, 9, 3),
        stochastic_depth_prob=stochastic_depth_prob,
        num_classes=num_classes,
        in_channels=in_channels,
    )
