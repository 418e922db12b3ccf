"""Read any photo a person would bring (JPEG, PNG, TIFF; 8 or 16 bit; grey or colour) as RGB uint8.

Pillow does the decoding because it applies EXIF orientation (phones store portrait shots as
rotated landscape sensors plus a tag) and reads 16-bit PNG and TIFF; OpenCV's imread does
neither consistently. Deeper images are scaled to 8 bit by their actual range, not just
shifted, so a 12-bit camera frame stored in 16 bits is not left nearly black.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from training.search_errors import ImageReadError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"})


def is_image_name(path: Path) -> bool:
    """Whether the file name has an image suffix this module reads."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Scale integer or float pixel data of any depth to uint8."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.bool_:
        return pixels.astype(np.uint8) * 255
    data = pixels.astype(np.float64)
    if np.issubdtype(pixels.dtype, np.integer):
        top = float(data.max(initial=0))
        # Declared 16-bit but filled to 12 or 14 bits: stretch by the smallest power of two.
        full = float(2 ** max(8, int(np.ceil(np.log2(top + 1))))) - 1 if top > 255 else 255.0
        data = data / full * 255
    else:  # float TIFFs are 0..1 by convention
        data = data * 255
    return np.clip(np.round(data), 0, 255).astype(np.uint8)


def _as_rgb(image: Image.Image) -> np.ndarray:
    """Pixels of a decoded Pillow image as H×W×3 uint8."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        grey = _to_uint8(np.asarray(image))
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent catalog cut-outs: composite on white, the usual catalog backdrop.
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(canvas, rgba)
    pixels = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    return np.ascontiguousarray(_to_uint8(pixels))


def _multichannel_16bit(path: Path) -> np.ndarray | None:
    """16-bit colour PNG/TIFF, which Pillow would truncate to 8 bit; None if not that case."""
    import cv2

    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None or data.dtype != np.uint16 or data.ndim != 3:
        return None
    rgb = cv2.cvtColor(data[..., :3], cv2.COLOR_BGR2RGB)
    return _to_uint8(rgb)


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation tag (1-8) to an array, as ImageOps.exif_transpose does."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(orientation)
    return pixels if op is None else np.ascontiguousarray(op(pixels))


def load_rgb(path: Path) -> np.ndarray:
    """Read an image file as H×W×3 uint8 RGB, upright per its EXIF orientation.

    Raises:
        ImageReadError: the file is missing, not an image, truncated or unsupported.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            # A decompression-bomb warning is not a reason to fail on a large scan.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                opened.load()  # decode now, so a truncated file fails here and not later
                mode, size = opened.mode, opened.size
                orientation = int(opened.getexif().get(0x0112, 1))
                image = ImageOps.exif_transpose(opened)
        if mode in ("RGB", "RGBA") and path.suffix.lower() in (".png", ".tif", ".tiff"):
            # Pillow reports 16-bit colour as 8-bit RGB; OpenCV keeps the bits.
            deep = _multichannel_16bit(path)
            if deep is not None and deep.shape[:2] == size[::-1]:
                return _orient(deep, orientation)
        return _as_rgb(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageReadError(f"{path}: not a readable image ({first})") from e
