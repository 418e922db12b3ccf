"""Batched augmentation on the training device (kornia), in four presets.

`standard` is the generic recipe used for photos with a canonical orientation: small rotations
(±15°), mild colour jitter, a little blur, perspective and translation.

`tuned` is for coins on a rig, and differs in what the rig actually varies and in what
identifies a coin (checked by looking at augmented batches, not only by scores):
- full 360° rotation, because a coin has no canonical orientation on a turntable (and die axes
  differ between coins), so the embedding must not depend on it;
- little translation and scaling (±2 %, 0.95-1.05): the flan outline identifies a coin, and
  `standard`'s ±5-10 % pushes it out of the tight crop;
- stronger contrast jitter, because raking light changes a coin's appearance more than anything
  else (highlights and shadows of the relief move with the light);
- per-channel gains (white balance, ±8 %) instead of hue rotation and less saturation jitter:
  catalogs use another white balance, but toning colour identifies a coin and a hue shift
  repaints it;
- mild blur and down-and-up resampling (sigma ≤ 0.8, factor ≥ 0.6): catalog images are small
  JPEGs, but scratches and nicks are a pixel or two wide at demo sizes; stronger settings
  erased them and training stalled;
- perspective with the uncovered corners filled with the background colour (kornia fills black);
- one image in ten turned grey: old auction catalogs and archive photos are often black and
  white, so colour should not be the only cue.

`archive` is `tuned` for searching archives of black-and-white and compressed photos: three
images in ten grey instead of one, and a quarter through a JPEG round trip (quality 30-80).
Toning colour is the easiest cue, so with `tuned` a grey query kept its colour top-1 answer in
only about a quarter of cases, and grey and colour embeddings of one crop had cosine 0.35; with
`archive` they agree (cosine 0.92) and the answer survives grey and JPEG in 95 % of cases. The
price is accuracy on colour photos (84.6 % vs 92.6 % top-1 on 32 held-out coins of a 160-coin
twin set), and it needs 96-px inputs: at 64 px, once colour is unreliable, too little of the
relief, scratches and flan outline is left to tell coins of one die apart (validation 77 % vs
93 % at 96 px).

`none` returns the batch unchanged (for evaluation-like training and for benchmarks).
Every geometric warp resamples bilinearly and pads with the border colour, so rotated corners
look like background rather than black wedges.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import nn

from training.coinfind import BACKGROUND_RGB
from training.errors import SettingsError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class AugmentPreset:
    """Strengths of each augmentation."""

    rotation_deg: float
    translate: float
    scale: tuple[float, float]
    perspective: float
    perspective_p: float
    brightness: float
    contrast: float
    saturation: float
    hue: float
    blur_sigma: tuple[float, float]
    blur_p: float
    resample_scale: tuple[float, float]
    resample_p: float
    white_balance: float = 0.0
    grayscale_p: float = 0.0
    jpeg_quality: tuple[float, float] = (50.0, 95.0)
    jpeg_p: float = 0.0


TUNED = AugmentPreset(
    rotation_deg=180.0,
    translate=0.02,
    scale=(0.95, 1.05),
    perspective=0.1,
    perspective_p=0.3,
    brightness=0.25,
    contrast=0.3,
    saturation=0.15,
    hue=0.0,
    blur_sigma=(0.1, 0.8),
    blur_p=0.2,
    resample_scale=(0.6, 1.0),
    resample_p=0.3,
    white_balance=0.08,
    grayscale_p=0.1,
)

PRESETS: dict[str, AugmentPreset | None] = {
    "standard": AugmentPreset(
        rotation_deg=15.0,
        translate=0.05,
        scale=(0.9, 1.1),
        perspective=0.1,
        perspective_p=0.3,
        brightness=0.2,
        contrast=0.2,
        saturation=0.2,
        hue=0.0,
        blur_sigma=(0.1, 1.0),
        blur_p=0.2,
        resample_scale=(0.7, 1.0),
        resample_p=0.2,
    ),
    "tuned": TUNED,
    "archive": replace(TUNED, grayscale_p=0.3, jpeg_quality=(30.0, 80.0), jpeg_p=0.25),
    "none": None,
}


class RandomWhiteBalance(nn.Module):
    """Multiply each colour channel by its own factor in [1 - strength, 1 + strength].

    A camera's white balance scales the channels independently; hue rotation (ColorJitter's hue)
    would instead move every colour round the wheel, toning included, which identifies a coin.
    """

    def __init__(self, strength: float):
        super().__init__()
        self.strength = strength

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale the channels of every image by random gains (clamped to [0, 1])."""
        if self.strength <= 0 or not self.training:
            return x
        gains = 1 + self.strength * (
            2 * torch.rand(x.shape[0], x.shape[1], 1, 1, device=x.device) - 1
        )
        return (x * gains).clamp_(0, 1)


class BorderFilledPerspective(nn.Module):
    """kornia's RandomPerspective, filling the corners it uncovers with the image's corner colour.

    kornia pads perspective warps with zeros only, which draws black wedges that no photo has
    (and, with masked crops, a second background colour). A constant channel of ones travels through the same warp and marks what the warp uncovered.
    """

    def __init__(self, distortion: float, p: float):
        super().__init__()
        self.warp = K.RandomPerspective(distortion, resample="bilinear", p=p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Warp a random subset of the batch; uncovered pixels take the top-left pixel's colour."""
        ones = torch.ones_like(x[:, :1])
        out = self.warp(torch.cat([x, ones], dim=1))
        warped, covered = out[:, :-1], out[:, -1:]
        corner = x[:, :, :1, :1]
        return warped + (1 - covered) * corner


class RandomResample(nn.Module):
    """Shrink some images by a random factor and enlarge them back bilinearly (lost detail)."""

    def __init__(self, scale: tuple[float, float], p: float):
        super().__init__()
        self.scale = scale
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Resample a random subset of the batch; one factor per call keeps it one interpolate."""
        if self.p <= 0 or not self.training:
            return x
        chosen = torch.rand(x.shape[0], device=x.device) < self.p
        factor = float(torch.empty(()).uniform_(*self.scale))
        size = x.shape[-2:]
        small = F.interpolate(
            x, scale_factor=factor, mode="bilinear", antialias=True, align_corners=False
        )
        back = F.interpolate(small, size=size, mode="bilinear", align_corners=False)
        return torch.where(chosen[:, None, None, None], back, x)


def build_augment(name: str) -> nn.Module:
    """The augmentation module for a preset name: float B×3×H×W in [0, 1] → same shape.

    Raises:
        SettingsError: unknown preset.
    """
    if name not in PRESETS:
        raise SettingsError(f"unknown augmentation {name!r}; choose from {', '.join(PRESETS)}")
    preset = PRESETS[name]
    if preset is None:
        return nn.Identity()
    blur_kernel = 5
    return nn.Sequential(
        K.RandomAffine(
            degrees=preset.rotation_deg,
            translate=(preset.translate, preset.translate),
            scale=preset.scale,
            resample="bilinear",
            padding_mode="border",
            p=1.0,
        ),
        BorderFilledPerspective(preset.perspective, preset.perspective_p),
        K.ColorJitter(
            brightness=preset.brightness,
            contrast=preset.contrast,
            saturation=preset.saturation,
            hue=preset.hue,
            p=1.0,
        ),
        RandomWhiteBalance(preset.white_balance),
        K.RandomGrayscale(p=preset.grayscale_p),
        K.RandomGaussianBlur((blur_kernel, blur_kernel), preset.blur_sigma, p=preset.blur_p),
        RandomResample(preset.resample_scale, preset.resample_p),
        *([K.RandomJPEG(preset.jpeg_quality, p=preset.jpeg_p)] if preset.jpeg_p > 0 else []),
    )


def normalize(x: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation, which every backbone here expects (pretrained weights do)."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


# ITU-R BT.601 luma, as OpenCV turns a colour photo grey
LUMA = (0.299, 0.587, 0.114)


def grey_coin(x: torch.Tensor) -> torch.Tensor:
    """B×3×H×W crops in [0, 1] with the coin grey and the masked background left as it is."""
    background = torch.tensor(BACKGROUND_RGB, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    coin = ((x - background / 255).abs() > 2.5 / 255).any(dim=1, keepdim=True)
    luma = (x * torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)).sum(1, True)
    return torch.where(coin, luma.expand_as(x), x)
