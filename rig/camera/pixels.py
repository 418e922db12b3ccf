"""Pixel-format conversions shared by the camera drivers: raw sensor arrays to coinrig images.

coinrig's image convention, the same for every camera:

- Mono formats give an H×W array; colour formats give H×W×3 in **RGB** order.
- 8-bit formats give uint8.
- Deeper formats (10, 12, 16 bit) give uint16 **MSB-aligned**: the value is shifted left so the
  sensor's full scale lands at the top of the 16-bit range (a 12-bit 4095 becomes 65520). This is
  what pylon's own converter calls MsbAligned. It is lossless (`image >> 4` restores the 12-bit
  value), a 16-bit PNG of it looks right in any viewer, and `image / 65535` gives the same
  brightness scale as an 8-bit `image / 255`, whatever sensor took it. `Frame.pixel_format` still
  names the sensor format, so the original bit depth is never lost.
- Bayer mosaics are demosaiced here with OpenCV (bilinear), so no caller ever sees a mosaic.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from rig.errors import ConfigError


@dataclass(frozen=True)
class PixelLayout:
    """What a sensor pixel format delivers: bits per sample, and colour arrangement."""

    bits: int
    kind: str  # "mono", "rgb", "bgr" or "bayer"
    bayer: str = ""  # the top-left 2×2 cell for Bayer formats, e.g. "RG" for R G / G B


# Keyed by the names pylon and GenICam SFNC use; "…Packed" are the pre-SFNC-2 names of the same
# layouts that older Basler cameras (and pylon's emulator) still report.
_LAYOUTS: dict[str, PixelLayout] = {
    "Mono8": PixelLayout(8, "mono"),
    "Mono10": PixelLayout(10, "mono"),
    "Mono12": PixelLayout(12, "mono"),
    "Mono16": PixelLayout(16, "mono"),
    "RGB8": PixelLayout(8, "rgb"),
    "RGB8Packed": PixelLayout(8, "rgb"),
    "BGR8": PixelLayout(8, "bgr"),
    "BGR8Packed": PixelLayout(8, "bgr"),
    **{
        f"Bayer{cell}{bits}": PixelLayout(bits, "bayer", cell)
        for cell in ("RG", "GR", "GB", "BG")
        for bits in (8, 10, 12, 16)
    },
}

# OpenCV names a Bayer pattern by the second row's second and third pixels, not by the top-left
# cell as GenICam does, so GenICam "RG" (R G / G B) is OpenCV's "BG". Checked by a unit test on a
# synthetic mosaic rather than trusted.
_DEMOSAIC = {
    "RG": cv2.COLOR_BayerBG2RGB,
    "GR": cv2.COLOR_BayerGB2RGB,
    "GB": cv2.COLOR_BayerGR2RGB,
    "BG": cv2.COLOR_BayerRG2RGB,
}


def layout(pixel_format: str) -> PixelLayout:
    """The layout of a GenICam pixel format name.

    Raises:
        ConfigError: the format is not one coinrig can convert (the message lists those it can).
    """
    try:
        return _LAYOUTS[pixel_format]
    except KeyError:
        raise ConfigError(
            f"pixel format {pixel_format!r} is not supported; supported: {sorted(_LAYOUTS)}"
        ) from None


def is_color(pixel_format: str) -> bool:
    """Whether the format yields an H×W×3 RGB image after conversion."""
    return layout(pixel_format).kind != "mono"


def msb_align(raw: np.ndarray, bits: int) -> np.ndarray:
    """Shift `bits`-bit samples (stored LSB-aligned) to the top of a uint16.

    Raises:
        ValueError: `bits` is not between 9 and 16.
    """
    if not 9 <= bits <= 16:
        raise ValueError(f"msb_align needs 9..16 bits, got {bits}")
    # Mask first: a stray high bit (a misparsed buffer) must not wrap around after the shift.
    samples = raw.astype(np.uint16, copy=True) & np.uint16((1 << bits) - 1)
    return np.left_shift(samples, np.uint16(16 - bits))


def to_image(raw: np.ndarray, pixel_format: str) -> np.ndarray:
    """Convert a camera's raw array in `pixel_format` to coinrig's convention (module docstring).

    Always returns a new, C-contiguous array that owns its memory, so the camera's buffer can be
    released at once.

    Raises:
        ConfigError: the pixel format is unknown.
        ValueError: the array's shape or dtype does not fit the pixel format.
    """
    fmt = layout(pixel_format)
    expected_dtype = np.uint8 if fmt.bits == 8 else np.uint16
    if raw.dtype != expected_dtype:
        raise ValueError(f"{pixel_format} expects {np.dtype(expected_dtype)} data, got {raw.dtype}")
    three_channel = fmt.kind in ("rgb", "bgr")
    if three_channel and (raw.ndim != 3 or raw.shape[2] != 3):
        raise ValueError(f"{pixel_format} expects an H×W×3 array, got shape {raw.shape}")
    if not three_channel and raw.ndim != 2:
        raise ValueError(f"{pixel_format} expects an H×W array, got shape {raw.shape}")

    samples = raw if fmt.bits in (8, 16) else msb_align(raw, fmt.bits)
    if fmt.kind == "bayer":
        # cvtColor demosaics 8- and 16-bit mosaics alike and returns a fresh array.
        return cv2.cvtColor(np.ascontiguousarray(samples), _DEMOSAIC[fmt.bayer])
    if fmt.kind == "bgr":
        return np.ascontiguousarray(samples[:, :, ::-1])
    return np.array(samples, copy=True, order="C")


def bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    """Turn OpenCV's BGR (or BGRA, or grey) frame into coinrig's RGB (or grey) image.

    Raises:
        ValueError: the array is neither H×W nor H×W×{1,3,4}.
    """
    if image.ndim == 2:
        return np.array(image, copy=True, order="C")
    if image.ndim == 3 and image.shape[2] == 1:
        return np.array(image[:, :, 0], copy=True, order="C")
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise ValueError(f"cannot convert an array of shape {image.shape} from BGR")
