"""A small learned coin segmenter for single photos, where no other light fills in the dark side.

A raking light leaves the coin's far rim as dark as the turntable, so a colour threshold bites
it away (see training.coinfind.coin_outline). Frames of one pose fill that side in from each
other's lights; a single photo (a phone picture, an archive scan, one capture searched alone)
has no other frame. This network learns the flan from what colour alone does not show: the
relief's texture, the rim's bevel and the shadow the coin casts. It is trained on the twin's
true coverage (`pipeline segmenter train`, docs/segmentation.md) and shipped with the package
as a safetensors file; nothing is downloaded.

It runs on the centred square crop the coin finder cut (the coin's fitted circle spans most of
it) and returns the probability that each pixel is coin.
"""

from __future__ import annotations

import hashlib
import os
import threading
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from training.checkpoint import write_atomic

# Crops are segmented at this side: the network is fully convolutional, but it learns the scale
# of a coin in a crop, so it must see crops at the size it was trained on.
SEGMENT_PX = 64
# The shipped weights (package data): trained by `pipeline segmenter train`.
WEIGHTS_PATH = Path(__file__).with_name("weights") / "coin_segmenter.safetensors"
# Set to "off" to cut single photos out by their colour outline alone (as before the segmenter):
# for comparisons, and for photos so unlike the twin's that the segmenter misleads.
SEGMENTER_ENV = "COINRIG_SEGMENTER"
# Channel widths of the encoder's four levels (the decoder mirrors them).
WIDTHS = (8, 16, 32, 64)


def _block(cin: int, cout: int) -> nn.Sequential:
    """Two 3×3 convolutions with batch norm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class CoinSegmenter(nn.Module):
    """A four-level U-Net: RGB crop in (normalised per crop), one coin logit per pixel out."""

    def __init__(self, widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__()
        self.down = nn.ModuleList()
        cin = 3
        for width in widths:
            self.down.append(_block(cin, width))
            cin = width
        # a dilated bottleneck sees the whole coin at 12 px: where the rim must continue
        self.context = nn.Sequential(
            nn.Conv2d(cin, cin, 3, padding=2, dilation=2, bias=False),
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
        )
        self.up = nn.ModuleList(
            _block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(len(widths) - 1))
        )
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, 1, H, W) for images (N, 3, H, W), H and W divisible by 8."""
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = self.context(x)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


def normalise(crops: np.ndarray) -> torch.Tensor:
    """uint8 crops (N, H, W, 3) as float tensors, each crop standardised by its own statistics.

    Per-crop standardisation makes a dark coin on a dark turntable and a pale coin on white card
    look alike in scale; what separates coin from backdrop is their relation, not the exposure.
    """
    x = torch.from_numpy(np.ascontiguousarray(crops)).float().permute(0, 3, 1, 2)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True).clamp_min(4.0)
    return (x - mean) / std


def save_segmenter(model: CoinSegmenter, path: Path) -> None:
    """Write the weights as safetensors, renamed into place (half precision: the file ships)."""
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    # batch norm's counter is an integer; half precision cannot hold it, and inference ignores it
    tensors = {k: v for k, v in tensors.items() if not k.endswith("num_batches_tracked")}
    write_atomic(path, lambda p: save_file(tensors, str(p)))


def load_segmenter(path: Path = WEIGHTS_PATH) -> CoinSegmenter:
    """The segmenter with weights from path, in eval mode on the CPU."""
    model = CoinSegmenter()
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    model.load_state_dict(state, strict=False)
    return model.eval()


_lock = threading.Lock()


@lru_cache(maxsize=1)
def _shipped() -> CoinSegmenter | None:
    """The shipped segmenter, or None where the package was installed without its weights."""
    return load_segmenter() if WEIGHTS_PATH.exists() else None


@lru_cache(maxsize=1)
def _weights_digest() -> str:
    """A short hash of the shipped weights file ("absent" without one)."""
    if not WEIGHTS_PATH.exists():
        return "absent"
    return hashlib.sha256(WEIGHTS_PATH.read_bytes()).hexdigest()[:16]


def segmenter_in_use() -> str:
    """Which outline single photos get: "off", "absent", or the weights' hash (for cache keys)."""
    return "off" if os.environ.get(SEGMENTER_ENV) == "off" else _weights_digest()


def coin_probability(crop: np.ndarray) -> np.ndarray | None:
    """P(coin) for each pixel of a centred uint8 RGB crop, at the crop's size (None: no model)."""
    model = None if os.environ.get(SEGMENTER_ENV) == "off" else _shipped()
    if model is None:
        return None
    h, w = crop.shape[:2]
    small = cv2.resize(crop, (SEGMENT_PX, SEGMENT_PX), interpolation=cv2.INTER_AREA)
    with _lock, torch.no_grad():
        # one thread, whatever the caller runs torch on: a different thread count sums the
        # convolutions in another order, and a pixel at P = 0.5 may flip, so a cache built on
        # one worker (the caller's threads) would differ from one built on two (one thread each)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            logits = model(normalise(small[None]))[0, 0].numpy()
        finally:
            torch.set_num_threads(threads)
    # upsample logits, not probabilities: the 0.5 contour then falls between pixels smoothly
    logits = cv2.resize(logits, (w, h), interpolation=cv2.INTER_LINEAR)
    return 1.0 / (1.0 + np.exp(-logits))
