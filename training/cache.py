"""Decode, crop and resize each image once; keep the results in a memory-mapped .npy file.

The cache key hashes the dataset content (every file name with the sha256 recorded in its
metadata line) and the preprocessing settings, so a new shot, a re-shot image or a different
--image-size builds a new cache, and everything else is a hit: later epochs and later runs read
uint8 pixels straight from the page cache and decode nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from training.coinfind import crop_coin, find_coin
from training.errors import DataError

# Bump when coinfind or the crop changes, so stale caches are never reused.
PREPROCESS_VERSION = 5
# The turntable turns the coin counter-clockwise in the image for a positive angle, so undoing
# it rotates by the negative angle.
DEROTATE_SIGN = -1.0


@dataclass(frozen=True)
class Preprocess:
    """How a photo becomes a training image: coin crop, optional de-rotation, square size."""

    image_size: int = 224
    derotate: bool = False
    margin: float = 0.04
    # Replace the background around the coin's outline by a fixed colour (coinfind.BACKGROUND_RGB):
    # catalog photos on white, grey or black card and captures on the dark turntable then differ
    # only in the coin itself. Runs trained before this option existed did not mask (see
    # evaluate.load_run).
    mask_background: bool = True


@dataclass(frozen=True)
class CacheItem:
    """What the cache needs to know about one image file."""

    path: Path
    file_name: str
    sha256: str | None
    turntable_deg: float
    # the calibrated turntable centre in this image's pixels, when the session recorded one: the
    # coin lies on the turntable, so that is where to look for it
    centre_px: tuple[float, float] | None = None


@dataclass
class CachedImages:
    """Preprocessed images of one dataset: pixels, row per file, skipped files, decode count."""

    array: np.ndarray
    rows: dict[str, int]
    skipped: dict[str, str]
    decoded: int


def default_cache_dir() -> Path:
    """$COINRIG_CACHE, else ~/.cache/coinrig (datasets may be read-only, so not inside them)."""
    return Path(os.environ.get("COINRIG_CACHE", Path.home() / ".cache" / "coinrig"))


def _fingerprint(item: CacheItem) -> str:
    """The recorded checksum, else size and mtime (metadata without sha256 still invalidates)."""
    if item.sha256:
        return item.sha256
    try:
        stat = item.path.stat()
    except OSError:
        return "missing"
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def cache_key(items: Sequence[CacheItem], settings: Preprocess) -> str:
    """Hash of the dataset content and the preprocessing settings."""
    h = hashlib.sha256()
    h.update(json.dumps({**asdict(settings), "version": PREPROCESS_VERSION}).encode())
    for item in items:
        # the angle and the turntable centre change the crop (de-rotation, coin prior) too
        h.update(
            f"{item.file_name}\0{_fingerprint(item)}\0{item.turntable_deg:g}\0{item.centre_px}\n".encode()
        )
    return h.hexdigest()[:32]


def preprocess(item: CacheItem, settings: Preprocess) -> np.ndarray:
    """Read one file, check its checksum, find and crop the coin; raises ValueError if unusable."""
    try:
        data = item.path.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read ({e.strerror})") from e
    if item.sha256 and hashlib.sha256(data).hexdigest() != item.sha256:
        # A truncated or overwritten file often still decodes (grey bottom rows): refuse it.
        raise ValueError("sha256 differs from metadata (truncated or changed)")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("not a decodable image")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    angle = DEROTATE_SIGN * item.turntable_deg if settings.derotate else 0.0
    return crop_coin(
        rgb,
        find_coin(rgb, near_px=item.centre_px),
        settings.image_size,
        margin=settings.margin,
        rotate_deg=angle,
        mask_background=settings.mask_background,
    )


def warn_stderr(message: str) -> None:
    """Print one warning line on stderr."""
    print(f"warning: {message}", file=sys.stderr)


def load_cached(
    items: Sequence[CacheItem],
    settings: Preprocess,
    cache_dir: Path,
    *,
    strict: bool = False,
    warn: Callable[[str], None] = warn_stderr,
) -> CachedImages:
    """Preprocessed images for items, from the cache when present, else built and stored.

    Raises:
        DataError: an image is unreadable and strict is set.
    """
    key = cache_key(items, settings)
    array_path = cache_dir / f"{key}.npy"
    index_path = cache_dir / f"{key}.json"
    if index_path.exists() and array_path.exists():
        index = json.loads(index_path.read_text())
        known_bad: dict[str, str] = index["skipped"]
        if strict and known_bad:
            name, reason = next(iter(known_bad.items()))
            raise DataError(f"unreadable image {name}: {reason}")
        for name, reason in known_bad.items():
            warn(f"skipped {name}: {reason}")
        return CachedImages(np.load(array_path, mmap_mode="r"), index["rows"], known_bad, 0)

    cache_dir.mkdir(parents=True, exist_ok=True)
    size = settings.image_size
    tmp = cache_dir / f"{key}.{os.getpid()}.tmp.npy"
    array = np.lib.format.open_memmap(
        tmp, mode="w+", dtype=np.uint8, shape=(len(items), size, size, 3)
    )
    rows: dict[str, int] = {}
    skipped: dict[str, str] = {}
    for row, item in enumerate(items):
        try:
            array[row] = preprocess(item, settings)
        except ValueError as e:
            if strict:
                tmp.unlink(missing_ok=True)
                raise DataError(f"unreadable image {item.file_name}: {e}") from e
            warn(f"skipped {item.file_name}: {e}")
            skipped[item.file_name] = str(e)
            continue
        rows[item.file_name] = row
    array.flush()
    del array
    # The array lands before its index, and the index marks the cache complete: a crash between
    # the two leaves an orphan that the next run overwrites.
    os.replace(tmp, array_path)
    index_tmp = index_path.with_suffix(f".{os.getpid()}.tmp")
    index_tmp.write_text(json.dumps({"rows": rows, "skipped": skipped}))
    os.replace(index_tmp, index_path)
    return CachedImages(np.load(array_path, mmap_mode="r"), rows, skipped, len(items))
