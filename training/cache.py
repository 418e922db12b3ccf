"""Decode, crop and resize each image once; keep the results in a memory-mapped .npy file.

The cache key hashes the dataset content (every file name with the sha256 recorded in its
metadata line) and the preprocessing settings, so a new shot, a re-shot image or a different
--image-size builds a new cache, and everything else is a hit: later epochs and later runs read
uint8 pixels straight from the page cache and decode nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from training.coinfind import Circle, find_coin, find_coin_in_pose
from training.cutout import PoseCut, crop_coin, cut_pose
from training.errors import DataError
from training.imageio import MAX_PIXELS_ENV, check_coin_shape, header_size, max_file_bytes
from training.outline import OUTLINE_BINS
from training.parallel import ordered_map, progress_bar, resolve_workers
from training.search_errors import ImageReadError
from training.segmenter import segmenter_in_use

# Bump when coinfind or the crop changes, so stale caches are never reused.
PREPROCESS_VERSION = 12  # 12: frames cut out alone only when asked (Preprocess.single_photos)
# The turntable turns the coin counter-clockwise in the image for a positive angle, so undoing
# it rotates by the negative angle.
DEROTATE_SIGN = -1.0


@dataclass(frozen=True)
class Preprocess:
    """How a photo becomes a training image: coin crop, optional de-rotation, square size."""

    # The one home of these defaults: TrainConfig, and through it `pipeline train`, read them.
    image_size: int = 224
    derotate: bool = False
    margin: float = 0.04
    # Replace the background around the coin's outline by a fixed colour (coinfind.BACKGROUND_RGB):
    # catalog photos on white, grey or black card and captures on the dark turntable then differ
    # only in the coin itself. Runs trained before this option existed did not mask (see
    # evaluate.load_run).
    mask_background: bool = True
    # Also cut out every frame of a pose by itself (CachedImages.alone), for runs that train on
    # single photos (--single-photo-p above 0). It costs a second segmenter pass over every
    # capture, two thirds of a build (the demo's: 243 s with it, 86 s without), so entries
    # without it are built when nothing draws it.
    single_photos: bool = False

    @classmethod
    def of_run(cls, config: Mapping[str, Any], image_size: int | None = None) -> Preprocess:
        """The preprocessing a run trained with, from its config.json.

        Settings a run's config lacks were added after it was trained, which then did without
        them: a run from before background masking was trained on unmasked crops.
        """
        return cls(
            image_size=int(image_size if image_size is not None else config["image_size"]),
            derotate=bool(config.get("derotate", False)),
            mask_background=bool(config.get("mask_background", False)),
            single_photos=float(config.get("single_photo_p") or 0.0) > 0,
        )

    @property
    def layers(self) -> int:
        """Crop layers a cache entry holds: pose crops, and each frame cut out alone if asked."""
        return 2 if self.single_photos else 1


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
    # frames sharing a pose show the coin lying still; see crop_frames
    pose: str | None = None


@dataclass
class CachedImages:
    """Preprocessed images of one dataset: pixels, row per file, skipped files, decode count.

    `alone` holds every photo cut out by itself, without the other frames of its pose (see
    crop_frames): what a single photo of the coin, such as a search query, looks like. For
    photos without a pose, and in entries built without Preprocess.single_photos, it is `array`.
    """

    array: np.ndarray
    rows: dict[str, int]
    skipped: dict[str, str]
    decoded: int
    alone: np.ndarray
    # per row, the coin's outline profile (training.outline; NaN where untrusted) as the pose's
    # frames together give it (not kept for photos cut out alone: it would cost another pass
    # of the segmenter over every capture, and nothing ranks by it)
    outlines: np.ndarray


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
    # the segmenter's weights (or its absence) change every single photo's outline
    fields = {**asdict(settings), "version": PREPROCESS_VERSION, "segmenter": segmenter_in_use()}
    h.update(json.dumps(fields).encode())
    for item in items:
        # the angle, the turntable centre and the pose change the crop (de-rotation, coin
        # prior, shared circle) too
        h.update(
            f"{item.file_name}\0{_fingerprint(item)}\0{item.turntable_deg:g}\0{item.centre_px}"
            f"\0{item.pose}\n".encode()
        )
    return h.hexdigest()[:32]


def decode(item: CacheItem) -> np.ndarray:
    """Read one file as RGB, checking its checksum; raises ValueError if unusable.

    Only a regular file is read (a FIFO would block, a device never end), and only when its
    size and its header's pixel count are within the limits (training.imageio): the header is
    checked before any pixel is decoded.
    """
    try:
        info = os.stat(item.path)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > max_file_bytes():
            raise ValueError(
                f"{info.st_size:,} bytes is more than an image within the pixel limit can take "
                f"(set {MAX_PIXELS_ENV} to raise it)"
            )
        data = item.path.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read ({e.strerror})") from e
    if item.sha256 and hashlib.sha256(data).hexdigest() != item.sha256:
        # A truncated or overwritten file often still decodes (grey bottom rows): refuse it.
        raise ValueError("sha256 differs from metadata (truncated or changed)")
    try:
        check_coin_shape(*header_size(data, ""), "")
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except (ImageReadError, cv2.error) as e:
        raise ValueError(str(e).splitlines()[0] if str(e) else "not a decodable image") from e
    if bgr is None:
        raise ValueError("not a decodable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _rotation(item: CacheItem, settings: Preprocess) -> float:
    """How far to turn this photo's crop (counter-clockwise degrees): de-rotation, if asked."""
    return DEROTATE_SIGN * item.turntable_deg if settings.derotate else 0.0


def cut(item: CacheItem, rgb: np.ndarray, circle: Circle, settings: Preprocess) -> PoseCut:
    """The training image of one decoded photo, its coin at `circle`, and its outline."""
    return cut_photo(rgb, circle, settings, rotate_deg=_rotation(item, settings))


def crop_photo(
    image: np.ndarray, circle: Circle, settings: Preprocess, *, rotate_deg: float = 0.0
) -> np.ndarray:
    """One photo's coin cropped as `settings` say (size, margin, masking)."""
    return crop_coin(
        image,
        circle,
        settings.image_size,
        margin=settings.margin,
        rotate_deg=rotate_deg,
        mask_background=settings.mask_background,
    )


def cut_photo(
    image: np.ndarray, circle: Circle, settings: Preprocess, *, rotate_deg: float = 0.0
) -> PoseCut:
    """crop_photo's crop (the one in `crops`) and the outline profile of the coin in it."""
    return cut_pose(
        [image],
        circle,
        settings.image_size,
        margin=settings.margin,
        rotate_deg=rotate_deg,
        mask_background=settings.mask_background,
    )


def crop_alone(item: CacheItem, rgb: np.ndarray, settings: Preprocess) -> np.ndarray:
    """The training image of one photo found and cut out by itself, as a single photo would be."""
    circle = find_coin(rgb, near_px=item.centre_px)
    return crop_photo(rgb, circle, settings, rotate_deg=_rotation(item, settings))


def crop_frames(
    items: Sequence[CacheItem], images: Sequence[np.ndarray], settings: Preprocess
) -> list[np.ndarray]:
    """Training images of the frames of one pose (or of one lone photo), in order."""
    return [c for c, _ in cut_frames(items, images, settings)]


def cut_frames(
    items: Sequence[CacheItem], images: Sequence[np.ndarray], settings: Preprocess
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per frame of one pose (or one lone photo), in order: its training image and outline.

    The frames show the coin lying still, so it is found once in all of them together and cut
    out by one circle and one outline (coinfind.find_coin_in_pose); only if that finds nothing
    round is each frame searched alone and the circles reconciled (shared_circles).
    """
    near = items[0].centre_px
    circle = find_coin_in_pose(images, near_px=near) if len(images) > 1 else None
    if circle is None:
        circles = shared_circles(
            [find_coin(rgb, near_px=i.centre_px) for i, rgb in zip(items, images, strict=True)]
        )
        cuts = [cut(i, rgb, c, settings) for i, rgb, c in zip(items, images, circles, strict=True)]
        return [(c.crops[0], c.outline) for c in cuts]
    pose = cut_pose(
        images,
        circle,
        settings.image_size,
        margin=settings.margin,
        rotate_deg=_rotation(items[0], settings),  # one pose, one turntable angle
        mask_background=settings.mask_background,
    )
    return [(c, pose.outline) for c in pose.crops]


# Least radius, relative to the pose's median, of a circle another frame may borrow: a shadow
# inflates a circle by up to ~20%, a coin found only in part shrinks it far more.
MIN_SHARED_RADIUS = 0.75
# How far (relative to a frame's own radius) a borrowed circle may stick out of the frame's own:
# an irregular flan's enclosing circle pokes a few percent out of the shadowed blob's; a coin
# that was picked up and put down again has moved much further.
SHARED_SLACK = 1.06


def shared_circles(circles: Sequence[Circle]) -> list[Circle]:
    """Per frame of one pose, the coin circle to crop it by.

    A raking light's shadow on the backdrop joins the coin's blob and inflates its circle (by
    up to 20% on the twin), shifting and shrinking the crop under that light only. The coin
    lies still within a pose, and shadows only ever add, so the smallest plausible circle of
    the pose is the coin's own: each frame takes it where it lies inside the frame's own circle
    (give or take SHARED_SLACK; else the coin moved, and the frame keeps its own).
    """
    if len(circles) < 2:
        return list(circles)
    median_r = float(np.median([c.r for c in circles]))
    plausible = [c for c in circles if c.r >= MIN_SHARED_RADIUS * median_r]
    tightest = min(plausible, key=lambda c: c.r)
    out = []
    for own in circles:
        inside = (
            math.hypot(tightest.x - own.x, tightest.y - own.y) + tightest.r <= own.r * SHARED_SLACK
        )
        out.append(tightest if inside else own)
    return out


def _pose_groups(items: Sequence[CacheItem]) -> list[list[int]]:
    """Row numbers grouped by pose, in file order; frames without a pose stand alone."""
    groups: dict[str, list[int]] = {}
    alone: list[list[int]] = []
    for row, item in enumerate(items):
        if item.pose is None:
            alone.append([row])
        else:
            groups.setdefault(item.pose, []).append(row)
    return sorted([*groups.values(), *alone], key=lambda g: g[0])


def _outline_path(array_path: Path) -> Path:
    """Where the outline profiles of the cache entry stored at array_path lie."""
    return array_path.with_name(array_path.stem + ".outline.npy")


def _read_cache(
    index_path: Path, array_path: Path, count: int, settings: Preprocess
) -> CachedImages | None:
    """A complete cache entry, or None when absent or damaged (then it is simply rebuilt)."""
    if not (index_path.exists() and array_path.exists()):
        return None
    try:
        index = json.loads(index_path.read_text())
        rows, skipped = index["rows"], index["skipped"]
        both = np.load(array_path, mmap_mode="r", allow_pickle=False)
        outlines = np.load(_outline_path(array_path), allow_pickle=False)
    except (OSError, EOFError, ValueError, KeyError, TypeError):
        return None
    size = settings.image_size
    fits = both.shape == (settings.layers, count, size, size, 3) and both.dtype == np.uint8
    fits &= outlines.shape == (count, OUTLINE_BINS) and outlines.dtype == np.float32
    if not (fits and isinstance(rows, dict) and isinstance(skipped, dict)):
        return None
    if not all(isinstance(r, int) and 0 <= r < count for r in rows.values()):
        return None
    return CachedImages(both[0], rows, skipped, 0, both[-1], outlines)


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
    workers: int | None = None,
    progress: bool = False,
) -> CachedImages:
    """Preprocessed images for items, from the cache when present, else built and stored.

    A build runs on `workers` processes (None: every core, but one for a small job; see
    training.parallel) and its bytes are the same whatever the count. `progress` shows a bar
    on a terminal.

    Raises:
        DataError: an image is unreadable and strict is set.
        SettingsError: a negative worker count.
    """
    key = cache_key(items, settings)
    array_path = cache_dir / f"{key}.npy"
    index_path = cache_dir / f"{key}.json"
    hit = _read_cache(index_path, array_path, len(items), settings)
    if hit is not None:
        known_bad = hit.skipped
        if strict and known_bad:
            name, reason = next(iter(known_bad.items()))
            raise DataError(f"unreadable image {name}: {reason}")
        for name, reason in known_bad.items():
            warn(f"skipped {name}: {reason}")
        return hit

    cache_dir.mkdir(parents=True, exist_ok=True)
    size = settings.image_size
    tmp = cache_dir / f"{key}.{os.getpid()}.tmp.npy"
    # [0]: crops as the pose's frames together give them; [1]: each photo cut out alone
    # (without single_photos there is no [1], and `alone` is [0])
    array = np.lib.format.open_memmap(
        tmp, mode="w+", dtype=np.uint8, shape=(settings.layers, len(items), size, size, 3)
    )
    outlines = np.full((len(items), OUTLINE_BINS), np.nan, np.float32)
    try:
        rows, skipped = _build(items, settings, array, outlines, strict, warn, workers, progress)
    except BaseException:
        del array
        tmp.unlink(missing_ok=True)
        raise
    array.flush()
    del array
    # The arrays land before their index, and the index marks the cache complete: a crash
    # before it leaves orphans that the next run overwrites.
    os.replace(tmp, array_path)
    outline_tmp = cache_dir / f"{key}.{os.getpid()}.tmp.outline.npy"
    np.save(outline_tmp, outlines)
    os.replace(outline_tmp, _outline_path(array_path))
    index_tmp = index_path.with_suffix(f".{os.getpid()}.tmp")
    index_tmp.write_text(json.dumps({"rows": rows, "skipped": skipped}))
    os.replace(index_tmp, index_path)
    both = np.load(array_path, mmap_mode="r")
    return CachedImages(both[0], rows, skipped, len(items), both[-1], outlines)


# Jobs smaller than this build in this process when no worker count is asked for: starting a
# pool (about a second: each worker imports numpy and OpenCV) would cost more than it saves.
PARALLEL_FROM = 64
# Images per pool task: enough to amortise the transfer, few enough to balance the workers.
MAX_CHUNK_IMAGES = 32


@dataclass
class _Group:
    """One pose group preprocessed: its good rows with their crops, and its unreadable files."""

    rows: list[int]
    crops: list[tuple[np.ndarray, np.ndarray]]  # training image, outline
    # None: alone == crop (the frame is its pose's only one, or single photos were not asked)
    alone: list[np.ndarray | None]
    bad: list[tuple[int, str]]


def _preprocess_group(group: list[tuple[int, CacheItem]], settings: Preprocess) -> _Group:
    """Decode and crop the frames of one pose (or one lone photo); unreadable ones noted."""
    decoded: list[tuple[int, CacheItem, np.ndarray]] = []
    bad: list[tuple[int, str]] = []
    for row, item in group:
        try:
            decoded.append((row, item, decode(item)))
        except ValueError as e:
            bad.append((row, str(e)))
    if not decoded:
        return _Group([], [], [], bad)
    crops = cut_frames([i for _, i, _ in decoded], [rgb for _, _, rgb in decoded], settings)
    single = len(decoded) == 1 or not settings.single_photos
    alone = [None if single else crop_alone(item, rgb, settings) for _, item, rgb in decoded]
    return _Group([row for row, _, _ in decoded], crops, alone, bad)


def _preprocess_chunk(
    task: tuple[list[list[tuple[int, CacheItem]]], Preprocess],
) -> list[_Group]:
    """A pool task: several pose groups, preprocessed in order."""
    groups, settings = task
    return [_preprocess_group(group, settings) for group in groups]


def _chunks(
    items: Sequence[CacheItem], settings: Preprocess, per_chunk: int
) -> list[tuple[list[list[tuple[int, CacheItem]]], Preprocess]]:
    """Whole pose groups in file order, packed into tasks of about `per_chunk` images."""
    tasks: list[tuple[list[list[tuple[int, CacheItem]]], Preprocess]] = []
    current: list[list[tuple[int, CacheItem]]] = []
    count = 0
    for group in _pose_groups(items):
        current.append([(row, items[row]) for row in group])
        count += len(group)
        if count >= per_chunk:
            tasks.append((current, settings))
            current, count = [], 0
    if current:
        tasks.append((current, settings))
    return tasks


def _build(
    items: Sequence[CacheItem],
    settings: Preprocess,
    array: np.ndarray,
    outlines: np.ndarray,
    strict: bool,
    warn: Callable[[str], None],
    workers: int | None,
    progress: bool,
) -> tuple[dict[str, int], dict[str, str]]:
    """Fill `array` and `outlines` for every item; the rows written and the files skipped.

    Results arrive in file order whatever the worker count, so warnings, the first unreadable
    file under `strict` and every byte written are those of one worker.
    """
    count = 1 if workers is None and len(items) < PARALLEL_FROM else resolve_workers(workers)
    per_chunk = max(1, min(MAX_CHUNK_IMAGES, len(items) // (4 * count)))
    rows: dict[str, int] = {}
    skipped: dict[str, str] = {}
    tasks = _chunks(items, settings, per_chunk if count > 1 else 1)
    results = closing(ordered_map(_preprocess_chunk, tasks, count))  # shut down on a raise
    with progress_bar(len(items), "preprocessing", progress) as advance, results as done:
        for groups in done:
            for group in groups:
                for row, reason in group.bad:
                    name = items[row].file_name
                    if strict:
                        raise DataError(f"unreadable image {name}: {reason}")
                    warn(f"skipped {name}: {reason}")
                    skipped[name] = reason
                for row, (crop_image, outline), alone in zip(
                    group.rows, group.crops, group.alone, strict=True
                ):
                    array[0, row] = crop_image
                    if array.shape[0] > 1:
                        array[1, row] = crop_image if alone is None else alone
                    outlines[row] = outline
                    rows[items[row].file_name] = row
                advance(len(group.rows) + len(group.bad))
    return rows, skipped
