"""Read any photo a person would bring (JPEG, PNG, TIFF; 8 or 16 bit; grey or colour) as RGB uint8.

Pillow does the decoding because it applies EXIF orientation (phones store portrait shots as
rotated landscape sensors plus a tag) and reads 16-bit PNG and TIFF; OpenCV's imread does
neither consistently. Deeper images are scaled to 8 bit by their actual range, not just
shifted, so a 12-bit camera frame stored in 16 bits is not left nearly black.

Every image's size is read from its header and checked before a pixel is decoded: a 900 KB PNG
can declare 30000×30000 pixels and take gigabytes to decode. The limit is
COINRIG_MAX_IMAGE_PIXELS (default 100 million, a 100-megapixel scan). A photo a coin is to be
found in (load_photo) must also be able to show one: at least MIN_SIDE_PX a side and at most
MAX_ASPECT times as long as wide (coin finding fails on a 20000×1 strip).
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from training.errors import SettingsError
from training.search_errors import ImageReadError, ImageTooLarge, ImageTooSmall

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"})
MAX_PIXELS_ENV = "COINRIG_MAX_IMAGE_PIXELS"
# 100 MP: a phone's largest mode or a flatbed scan of a plate; about 0.3 GB as 8-bit RGB.
DEFAULT_MAX_PIXELS = 100_000_000
MIN_SIDE_PX = 16
MAX_ASPECT = 20
# What Pillow raises on a damaged header or stream besides OSError: its plugins parse with
# struct and index into what they read, so a hostile file surfaces as any of these.
_DECODE_FAILURES = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    struct.error,
)


def max_image_pixels() -> int:
    """The pixel-count limit: $COINRIG_MAX_IMAGE_PIXELS, else DEFAULT_MAX_PIXELS.

    Raises:
        SettingsError: the variable is set but is not a positive whole number.
    """
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise SettingsError(f"{MAX_PIXELS_ENV}={raw!r}: expected a positive whole number")
    return value


def check_pixels(width: int, height: int, name: str) -> None:
    """Refuse an image size over the pixel limit (before anything is decoded).

    Raises:
        ImageTooLarge: width × height is over max_image_pixels(), naming the variable to raise.
    """
    limit = max_image_pixels()
    if width * height > limit:
        prefix = f"{name}: " if name else ""
        raise ImageTooLarge(
            f"{prefix}{width}×{height} pixels is over the limit of {limit:,} pixels "
            f"(set {MAX_PIXELS_ENV} to raise it)"
        )


def check_coin_shape(width: int, height: int, name: str) -> None:
    """Refuse an image that cannot show a coin: coin finding needs some pixels each way.

    Raises:
        ImageTooSmall: a side under MIN_SIDE_PX, or one side over MAX_ASPECT times the other.
    """
    short, long = sorted((width, height))
    if short < MIN_SIDE_PX or long > MAX_ASPECT * short:
        prefix = f"{name}: " if name else ""
        raise ImageTooSmall(
            f"{prefix}{width}×{height} pixels cannot show a coin (needs at least {MIN_SIDE_PX} "
            f"pixels a side and at most {MAX_ASPECT}:1)"
        )


def max_file_bytes() -> int:
    """The largest image file worth reading: the pixel limit as uncompressed 16-bit RGBA + 64 MB.

    A file larger than that holds something besides an image within the limit, and reading it
    whole (to check its sha256) could exhaust memory.
    """
    return 8 * max_image_pixels() + 64 * 2**20


def header_size(source: Path | bytes, name: str) -> tuple[int, int]:
    """(width, height) from an image's header, checked by check_pixels; nothing decoded.

    Raises:
        ImageReadError: not an image Pillow can identify; ImageTooLarge.
    """
    opened = _open(source, name)
    with opened:
        width, height = opened.size
    check_pixels(width, height, name)
    return width, height


def _open(source: Path | bytes, name: str) -> Image.Image:
    """Pillow's lazy open: the header is parsed, no pixel decoded (callers check the size).

    Raises:
        ImageReadError: unidentified or damaged header.
        SettingsError: COINRIG_MAX_IMAGE_PIXELS is not a positive whole number.
    """
    limit = max_image_pixels()
    prefix = f"{name}: " if name else ""
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check (a warning, an error at twice its limit) is left to
            # check_pixels, which names the size and COINRIG_MAX_IMAGE_PIXELS.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = None
            return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except _DECODE_FAILURES as e:
        raise ImageReadError(f"{prefix}not a readable image ({_first_line(e)})") from e
    finally:
        # left at our limit, so any decode outside this module is still guarded by Pillow
        Image.MAX_IMAGE_PIXELS = limit


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


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
        ImageReadError: the file is missing, not a regular file, not an image, truncated or
            unsupported; ImageTooLarge (checked before decoding).
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if not path.is_file():  # a FIFO would block, /dev/zero never end
        raise ImageReadError(f"{path}: not a regular file")
    opened = _open(path, str(path))
    try:
        with opened:
            check_pixels(*opened.size, str(path))  # before decoding a single pixel
            opened.load()  # decode now, so a truncated file fails here and not later
            mode, size = opened.mode, opened.size
            orientation = _orientation(opened)
            image = ImageOps.exif_transpose(opened)
        if mode in ("RGB", "RGBA") and path.suffix.lower() in (".png", ".tif", ".tiff"):
            # Pillow reports 16-bit colour as 8-bit RGB; OpenCV keeps the bits.
            deep = _multichannel_16bit(path)
            if deep is not None and deep.shape[:2] == size[::-1]:
                return _orient(deep, orientation)
        return _as_rgb(image)
    except _DECODE_FAILURES as e:
        raise ImageReadError(f"{path}: not a readable image ({_first_line(e)})") from e


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 when absent or not a number 1-8)."""
    value = image.getexif().get(0x0112, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def load_photo(path: Path) -> np.ndarray:
    """load_rgb, for a photo a coin is to be found in: one that cannot show a coin is refused.

    Raises:
        ImageReadError: as load_rgb; ImageTooSmall (too small or too narrow, e.g. 20000×1).
    """
    image = load_rgb(path)
    check_coin_shape(image.shape[1], image.shape[0], str(path))
    return image
