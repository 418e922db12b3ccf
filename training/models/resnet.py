"""ResNet backbones in plain PyTorch, with torchvision's parameter and buffer names."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = _downsample(in_ch, width * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 → 3×3 → 1×1 bottleneck; the stride sits on the 3×3 conv (torchvision's "v1.5")."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = _conv1x1(in_ch, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_ch, out_ch, stride)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _downsample(in_ch: int, out_ch: int, stride: int) -> nn.Sequential | None:
    # torchvision names this Sequential "downsample" with children 0 (conv) and 1 (bn).
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(_conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))


class ResNet(nn.Module):
    """ResNet whose state_dict keys match torchvision's; optionally cut after `num_stages` stages."""

    # torchvision's stem conv, adapted when in_channels != 3.
    stem_key = "conv1.weight"

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        *,
        widths: Sequence[int] = (64, 128, 256, 512),
        num_stages: int = 4,
        num_classes: int | None = 1000,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if not 1 <= num_stages <= len(layers) == len(widths):
            raise ValueError(
                f"num_stages must be in 1..{len(layers)} with one width per stage, got "
                f"num_stages={num_stages}, layers={list(layers)}, widths={list(widths)}"
            )
        self.num_stages = num_stages
        self.conv1 = nn.Conv2d(
            in_channels, widths[0], kernel_size=7, stride=2, padding=3, bias=False
        )
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = widths[0]
        for i in range(num_stages):
            blocks = []
            for j in range(layers[i]):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(block(in_ch, widths[i], stride))
                in_ch = widths[i] * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.out_channels = in_ch
        # The classifier exists only so that a full torchvision checkpoint round-trips.
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_ch, num_classes) if num_classes is not None else None
        # Prefixes a torchvision file may have that this model may lack, and vice versa.
        self.head_prefixes: tuple[str, ...] = (
            "fc.",
            *(f"layer{i + 1}." for i in range(num_stages, len(layers))),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # Same scheme as torchvision, so training from scratch behaves like theirs.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """Return the last kept stage's feature map, B×out_channels×h×w."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x

    def pool(self, feats: Tensor) -> Tensor:
        """Global-average-pool a feature map to B×C."""
        return torch.flatten(self.avgpool(feats), 1)

    def forward(self, x: Tensor) -> Tensor:
        """Return class logits (needs a classifier head)."""
        if self.fc is None:
            raise RuntimeError("this ResNet was built with num_classes=None; use forward_features")
        return self.fc(self.pool(self.forward_features(x)))

    def output_size(self, image_size: int) -> int:
        """Return the side of forward_features' grid for a square `image_size` input."""
        # Every stride-2 layer here (stem conv, max pool, first conv of stages 2+) maps n to
        # ceil(n / 2) given its padding, so the grid side is image_size halved that many times.
        side = image_size
        for _ in range(2 + self.num_stages - 1):
            side = (side + 1) // 2
        return side


def resnet18(
    *, num_stages: int = 4, num_classes: int | None = 1000, in_channels: int = 3
) -> ResNet:
    """Build torchvision's ResNet-18 layout."""
    return ResNet(
        BasicBlock,
        (2, 2, 2, 2),
        num_stages=num_stages,
        num_classes=num_classes,
        in_channels=in_channels,
    )


def resnet50(
    *, num_stages: int = 4, num_classes: int | None = 1000, in_channels: int = 3
) -> ResNet:
    """Build torchvision's ResNet-50 (v1.5) layout."""
    return ResNet(
        Bottleneck,
        (3, 4, 6, 3),
        num_stages=num_stages,
        num_classes=num_classes,
        in_channels=in_channels,
    )


def resnet_tiny(
    *, num_stages: int = 4, num_classes: int | None = 1000, in_channels: int = 3
) -> ResNet:
    """Build a narrow ResNet-18 (widths 16/32/64/128) for CPU demos and CI."""
    return ResNet(
        BasicBlock,
        (2, 2, 2, 2),
        widths=(16, 32, 64, 128),
        num_stages=num_stages,
        num_classes=num_classes,
        in_channels=in_channels,
    )
