"""Turn a folder of catalog images (or a coinrig dataset's catalog images) into index entries.

Each picture becomes one entry per coin it shows: a single-coin studio shot is one entry, an
auction plate (obverse and reverse side by side) two, a photo of a tray of coins one per coin.
Entry ids are the file's path relative to the folder, plus `#obverse`/`#reverse` for plate
halves and `#N` for coins of a multi-coin photo, so re-running `pipeline index` on a grown
folder recognises what is already indexed and embeds only the new files.
"""

from __future__ import annotations

import csv
import os
import stat
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.detect import Coin, detect_coins, split_plate
from training.imageio import is_image_name, load_photo
from training.search_errors import SearchError

# CSV columns that may name the image a row describes, in order of preference.
FILE_COLUMNS = ("file_name", "file", "filename", "image", "path")
# CSV column saying which side a plate shows on the left (default: obverse, the convention).
PLATE_LEFT_COLUMN = "plate_left"
# The largest metadata CSV read: 100,000 lots of 1 KB each fit in 256 MiB several times.
MAX_META_BYTES_ENV = "COINRIG_MAX_META_BYTES"
DEFAULT_MAX_META_BYTES = 256 << 20


def max_meta_bytes() -> int:
    """The size limit of a metadata CSV: $COINRIG_MAX_META_BYTES, else 256 MiB.

    Raises:
        SearchError: the variable is set but is not a positive whole number.
    """
    raw = os.environ.get(MAX_META_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_META_BYTES
    value = int(raw) if raw.isascii() and raw.isdigit() else 0
    if value < 1:
        raise SearchError(f"{MAX_META_BYTES_ENV}={raw!r}: expected a positive whole number")
    return value


@dataclass(frozen=True)
class Source:
    """One image file to index, with its id stem and the metadata carried into the index."""

    path: Path
    key: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """One coin to index: its id, where it is in which image, and its metadata."""

    id: str
    source: Source
    coin: Coin
    side: str | None

    def item(self) -> dict[str, Any]:
        """The JSON record stored in the index for this coin."""
        c = self.coin
        return {
            **self.source.meta,
            "id": self.id,
            "file": self.source.key,
            "path": str(self.source.path.resolve()),
            "side": self.side,
            "circle": [round(c.x, 1), round(c.y, 1), round(c.r, 1)],
        }


def read_meta_csv(path: Path) -> dict[str, dict[str, str]]:
    """Rows of a lots CSV keyed by file name (base name), every column carried through.

    Raises:
        SearchError: the file is missing, empty, not a regular file, over the size limit, or
            has no column naming the image.
    """
    try:
        info = path.stat()
    except OSError as e:
        raise SearchError(f"{path}: cannot read metadata CSV ({e.strerror})") from e
    # A FIFO blocks and /dev/zero is one endless line: only a regular file of bounded size is
    # read (csv itself bounds a field, not a line).
    if not stat.S_ISREG(info.st_mode):
        raise SearchError(f"{path}: metadata CSV is not a regular file")
    limit = max_meta_bytes()
    if info.st_size > limit:
        raise SearchError(
            f"{path}: metadata CSV of {info.st_size:,} bytes is over the limit of {limit:,} "
            f"bytes (set {MAX_META_BYTES_ENV} to raise it)"
        )
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise SearchError(f"{path}: cannot read metadata CSV ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise SearchError(
            f"{path}: metadata CSV is not UTF-8 (byte {e.start}); save it as UTF-8"
        ) from e
    except csv.Error as e:  # a NUL byte, an over-long field
        raise SearchError(f"{path}: not a readable CSV ({e})") from e
    if not rows:
        raise SearchError(f"{path}: metadata CSV has no rows")
    column = next((c for c in FILE_COLUMNS if c in rows[0]), None)
    if column is None:
        raise SearchError(f"{path}: metadata CSV needs a column naming the image ({FILE_COLUMNS})")
    # a short row leaves its missing cells None: such a row names no image, and carries nothing
    return {
        Path(row[column]).name: {k: v for k, v in row.items() if k and isinstance(v, str)}
        for row in rows
        if row[column]
    }


def _dataset_sources(root: Path) -> Iterator[Source]:
    """Catalog images of a coinrig dataset, carrying coin id, side and the coin's labels."""
    from training.data import read_dataset

    dataset = read_dataset(root)
    for record in dataset.records:
        if record.role != "catalog":
            continue
        labels = {k: v for k, v in dataset.coins.get(record.coin_id, {}).items() if k != "notes"}
        # the collection tells apart coins of two collections that share an id
        meta = {**labels, "collection": record.collection, "coin_id": record.coin_id}
        meta["side"] = record.side
        yield Source(record.path, record.file_name, meta)


def find_sources(root: Path, meta: dict[str, dict[str, str]] | None = None) -> list[Source]:
    """Images under `root` (recursively), or a coinrig dataset's catalog images.

    Raises:
        SearchError: `root` is missing or holds no image files.
    """
    if not root.is_dir():
        raise SearchError(f"image folder not found: {root}")
    if (root / "dataset.json").is_file():
        sources = list(_dataset_sources(root))
    else:
        files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_name(p))
        sources = [Source(p, p.relative_to(root).as_posix()) for p in files]
    if not sources:
        raise SearchError(f"no image files (JPEG, PNG, TIFF) under {root}")
    if meta:
        sources = [Source(s.path, s.key, {**s.meta, **meta.get(s.path.name, {})}) for s in sources]
    return sources


def entries_for(source: Source, image: np.ndarray) -> list[Entry]:
    """The coins one catalog picture holds (plate halves, one coin, or each of many).

    Raises:
        SearchError: no coin found in the picture.
    """
    left = str(source.meta.get(PLATE_LEFT_COLUMN) or "obverse").strip().lower()
    order = ("reverse", "obverse") if left == "reverse" else ("obverse", "reverse")
    plate = split_plate(image, order)
    if plate is not None:
        return [Entry(f"{source.key}#{side}", source, coin, side) for side, coin in plate]
    coins = detect_coins(image)
    if not coins:
        raise SearchError(f"{source.path}: no coin found")
    side = source.meta.get("side")
    if len(coins) == 1:
        return [Entry(source.key, source, coins[0], side)]
    return [Entry(f"{source.key}#{n}", source, c, side) for n, c in enumerate(coins, 1)]


def already_indexed(source: Source, ids: Container[str]) -> bool:
    """Whether any entry of this picture is in the index (ids are the file key plus a suffix)."""
    return source.key in ids or any(
        f"{source.key}#{suffix}" in ids for suffix in ("obverse", "reverse", "1")
    )


def load_entries(source: Source) -> tuple[np.ndarray, list[Entry]]:
    """Read one picture and find its coins.

    Raises:
        SearchError: the file is unreadable (ImageReadError) or shows no coin.
    """
    image = load_photo(source.path)
    return image, entries_for(source, image)


def describe(item: dict[str, Any]) -> str:
    """A short human label for an indexed coin: lot/sale when known, else its id."""
    parts = [str(item[k]) for k in ("sale", "lot") if item.get(k)]
    return " lot ".join(parts) if parts else str(item.get("id"))
