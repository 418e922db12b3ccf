"""Read coinrig datasets, split them by coin, choose training images, and serve batches.

A coin is (collection, coin id) (training.split.CoinKey): ids are unique within a collection
only. An identity is one side of one physical coin (`COLLECTION/COIN/SIDE`): obverse and
reverse share nothing visually, so they are separate classes for the loss and separate gallery
entries for retrieval. Splits are by coin, so both sides of a test coin stay out of training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import ValidationError

from dataset.jsonl import JsonlContent, read_jsonl
from dataset.layout import DatasetError, resolve
from dataset.reader import DatasetReader, NotADataset, collection_of, read_info
from dataset.schema import CoinLine, MetadataLine, TurntableCalibration
from training.cache import CacheItem, Preprocess, load_cached, warn_stderr
from training.errors import DataError, OutsideDataset, SettingsError
from training.outline import OUTLINE_BINS
from training.split import CoinKey
from training.split import Split as Split  # re-exported where callers have always found them
from training.split import parse_split as parse_split
from training.split import split_coins as split_coins

Regime = Literal["captures", "catalog", "both"]
REGIMES: tuple[str, ...] = ("captures", "catalog", "both")


@dataclass(frozen=True)
class Record:
    """One image of a dataset, as its metadata line describes it."""

    root: Path
    file_name: str
    coin_id: str
    side: str
    role: str
    light: str
    turntable_deg: float
    shot: int
    sha256: str | None
    reference: bool = False
    session_id: str = ""
    # from the session's turntable calibration, when it recorded one (rig calibrate turntable)
    turntable_centre_px: tuple[float, float] | None = None
    rotation_sign: int = 1
    tilt_deg: float | None = None
    # the collection the coin belongs to (coins.jsonl, else dataset.json, else a stable name)
    collection: str = ""

    @property
    def coin(self) -> CoinKey:
        """The physical coin shown: collection and coin id."""
        return CoinKey(self.collection, self.coin_id)

    @property
    def pose(self) -> str | None:
        """Frames with the same pose show the coin lying still (only lights or exposure changed).

        None for catalog photographs, each its own picture.
        """
        if self.role != "capture":
            return None
        # one dataset gives an id one collection, so the id suffices (and old caches stay valid)
        return (
            f"{self.session_id}|{self.coin_id}|{self.side}|{self.turntable_deg:g}|{self.tilt_deg}"
        )

    @property
    def derotation_deg(self) -> float:
        """How far the coin turned counter-clockwise in the image: the angle to undo.

        The calibrated sense of rotation says which way the turntable turns in the image;
        without a calibration the twin's and the usual rig's sense (+1) is assumed.
        """
        return self.rotation_sign * self.turntable_deg

    @property
    def path(self) -> Path:
        """Absolute path of the image file."""
        return self.root / self.file_name

    @property
    def view(self) -> str:
        """The identity this image shows: coin (collection/coin_id) and side."""
        return f"{self.coin}/{self.side}"


@dataclass
class Dataset:
    """One dataset directory: coin labels from coins.jsonl and image records from metadata.

    `collection` is the dataset's own (dataset.json, else a stable name); a coin whose
    coins.jsonl line names a collection belongs to that one instead.
    """

    root: Path
    coins: dict[str, dict[str, object]] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)
    collection: str = ""


def read_dataset(root: Path) -> Dataset:
    """Read a dataset directory (format version 1) through the format's reader.

    A torn last line is ignored and a reshot file's later line supersedes the earlier one, as
    for every reader of the format (dataset.reader).

    Raises:
        DataError: the directory is missing, not a coinrig dataset, or holds a bad line.
    """
    if not root.is_dir():
        raise DataError(f"dataset directory not found: {root}")
    try:
        info = read_info(root)
    except NotADataset as e:
        raise DataError(str(e)) from e
    metadata_path = root / "metadata.jsonl"
    if not metadata_path.exists():
        raise DataError(f"dataset has no metadata.jsonl: {root}")
    reader = DatasetReader(root)
    coins = read_jsonl(root / "coins.jsonl")
    _check_corrupt(coins, root / "coins.jsonl")
    _check_corrupt(reader.metadata, metadata_path)
    if reader.nameless():
        raise DataError(f"{metadata_path}: a metadata line has no file_name")
    dataset = Dataset(root, collection=collection_of(root, info))
    collections: dict[str, str] = {}
    for coin in coins.records:
        try:
            line = CoinLine.model_validate(coin)
        except ValidationError as e:
            raise DataError(f"{root / 'coins.jsonl'}: bad coin line {coin!r:.80}: {e}") from e
        dataset.coins[line.coin_id] = coin
        collections[line.coin_id] = line.collection or dataset.collection
    turntables = reader.turntables()
    for row in reader.records():
        try:
            record = _record(root, MetadataLine.model_validate(row), turntables)
        except (ValidationError, DatasetError) as e:
            raise DataError(f"{metadata_path}: bad metadata line {row!r:.80}: {e}") from e
        collection = collections.get(record.coin_id, dataset.collection)
        dataset.records.append(replace(record, collection=collection))
    return dataset


def _check_corrupt(content: JsonlContent, path: Path) -> None:
    """Raise DataError at a JSON-lines file's first corrupt line (a torn last line is fine)."""
    if content.corrupt_lines:
        raise DataError(f"{path}:{content.corrupt_lines[0]}: not a valid JSON object")


def _record(root: Path, line: MetadataLine, turntables: dict[str, TurntableCalibration]) -> Record:
    """A Record of a metadata line, with its session's turntable calibration if it had one.

    Absent values take the defaults readers always gave them, so hand-made datasets read.

    Raises:
        OutsideDataset: the file_name would leave the dataset folder (by name or by a symlink).
    """
    try:
        resolve(root, line.file_name)
    except DatasetError as e:
        raise OutsideDataset(f"{root / 'metadata.jsonl'}: {e}") from e
    session_id = line.session_id or ""
    turntable = turntables.get(session_id)
    return Record(
        root=root,
        file_name=line.file_name,
        coin_id=line.coin_id,
        side=line.side or "obverse",
        role=line.role or "capture",
        light=line.light or "unknown",
        turntable_deg=line.turntable_deg or 0.0,
        shot=line.shot or 0,
        sha256=line.sha256 or None,
        reference=bool(line.reference),
        session_id=session_id,
        turntable_centre_px=turntable.centre_px if turntable is not None else None,
        rotation_sign=turntable.sense if turntable is not None else 1,
        tilt_deg=line.tilt_deg,
    )


def dataset_collections(root: Path) -> set[str]:
    """The collections a dataset's coins belong to; empty when it cannot be read."""
    try:
        info = read_info(root)
        lines = [CoinLine.model_validate(c) for c in read_jsonl(root / "coins.jsonl").records]
    except (DatasetError, ValidationError, OSError):
        return set()
    own = collection_of(root, info)
    return {own} | {line.collection for line in lines if line.collection}


def read_datasets(roots: Sequence[Path]) -> list[Record]:
    """All records of several datasets; a coin is the same coin only in the same collection."""
    if not roots:
        raise DataError("no dataset given (use --data DIR)")
    unique = list(dict.fromkeys(Path(root).resolve() for root in roots))  # --data A --data A
    return [r for root in unique for r in read_dataset(root).records]


def reference_records(records: Sequence[Record]) -> dict[str, Record]:
    """The reference image per view: the catalog image, else the capture flagged as reference.

    Without either, the capture closest to 0° with the lowest shot number stands in, so a
    dataset from a plan that flags nothing still has a gallery.
    """
    best: dict[str, Record] = {}

    def rank(r: Record) -> tuple[int, float, int]:
        return (0 if r.role == "catalog" else 1 if r.reference else 2, abs(r.turntable_deg), r.shot)

    for r in records:
        if r.view not in best or rank(r) < rank(best[r.view]):
            best[r.view] = r
    return best


def training_records(
    records: Sequence[Record], coins: Sequence[CoinKey], regime: str
) -> list[Record]:
    """The images to train on: captures, one reference per view (catalog), or both."""
    if regime not in REGIMES:
        raise SettingsError(f"unknown --train-on {regime!r}; choose from {', '.join(REGIMES)}")
    wanted = set(coins)
    mine = [r for r in records if r.coin in wanted]
    captures = [r for r in mine if r.role == "capture"]
    refs = list(reference_records(mine).values())
    if regime == "captures":
        return captures
    if regime == "catalog":
        return refs
    return captures + [r for r in refs if r.role != "capture"]


def catalog_protocol(
    records: Sequence[Record], coins: Sequence[CoinKey]
) -> tuple[list[Record], list[Record]]:
    """Gallery = one reference image per view; queries = every other capture of those coins."""
    wanted = set(coins)
    mine = [r for r in records if r.coin in wanted]
    gallery = sorted(reference_records(mine).values(), key=lambda r: r.view)
    used = {(r.root, r.file_name) for r in gallery}
    queries = [r for r in mine if r.role == "capture" and (r.root, r.file_name) not in used]
    return gallery, queries


class ImageBank:
    """Preprocessed uint8 images (N×S×S×3, memory-mapped) aligned with a list of records.

    Each image also exists cut out alone (cache.CachedImages.alone), for training on what
    single photos look like.
    """

    def __init__(
        self,
        records: list[Record],
        sources: list[tuple[np.ndarray, int]],
        alone: list[np.ndarray] | None = None,
        outlines: np.ndarray | None = None,
    ):
        self.records = records
        self._sources = sources
        self._alone = alone if alone is not None else [a for a, _ in sources]
        # N×OUTLINE_BINS: per record, its coin's outline as its pose gives it
        self._outlines = (
            outlines
            if outlines is not None
            else np.full((len(records), OUTLINE_BINS), np.nan, np.float32)
        )

    def outlines(self, indices: Sequence[int]) -> np.ndarray:
        """The outline profiles (training.outline) of the given positions, n×OUTLINE_BINS."""
        return self._outlines[np.asarray(indices, dtype=np.int64)]

    def __len__(self) -> int:
        return len(self.records)

    def pixels(
        self,
        indices: Sequence[int],
        alone: Sequence[bool] | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Stacked uint8 images for the given positions (cut out alone where `alone` says).

        With `out` (e.g. a pinned buffer's numpy view) they are copied straight into it, one
        image at a time from the memory-mapped cache, with no stacked temporary in between.
        """
        flags = alone if alone is not None else [False] * len(indices)
        images = [
            (self._alone[i] if single else self._sources[i][0])[self._sources[i][1]]
            for i, single in zip(indices, flags, strict=True)
        ]
        if out is None:
            return np.stack(images)
        for row, image in enumerate(images):
            out[row] = image
        return out


@dataclass
class LoadReport:
    """What loading cost and what it dropped: decoded image count and skipped files."""

    decoded: int = 0
    skipped: dict[str, str] = field(default_factory=dict)


def load_images(
    records: Sequence[Record],
    settings: Preprocess,
    cache_dir: Path,
    *,
    strict: bool = False,
    warn: Callable[[str], None] = warn_stderr,
    workers: int | None = None,
    progress: bool = False,
) -> tuple[ImageBank, LoadReport]:
    """Preprocessed images for records (via the per-dataset cache); unreadable ones left out.

    A cache that must be built is built on `workers` processes (None: every core) with a
    progress bar if asked (training.cache.load_cached).
    """
    report = LoadReport()
    by_root: dict[Path, list[Record]] = {}
    for r in records:
        by_root.setdefault(r.root, []).append(r)
    cached = {}
    for root, mine in by_root.items():
        items = [
            CacheItem(
                r.path, r.file_name, r.sha256, r.derotation_deg, r.turntable_centre_px, r.pose
            )
            for r in mine
        ]
        result = load_cached(
            items, settings, cache_dir, strict=strict, warn=warn, workers=workers, progress=progress
        )
        cached[root] = result
        report.decoded += result.decoded
        report.skipped.update({str(root / k): v for k, v in result.skipped.items()})
    kept = [r for r in records if r.file_name in cached[r.root].rows]
    sources = [(cached[r.root].array, cached[r.root].rows[r.file_name]) for r in kept]
    outlines = (
        np.stack([cached[r.root].outlines[row] for r, (_, row) in zip(kept, sources, strict=True)])
        if kept
        else np.zeros((0, OUTLINE_BINS), np.float32)
    )
    return ImageBank(kept, sources, [cached[r.root].alone for r in kept], outlines), report


def to_tensor(pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 B×H×W×3 → float B×3×H×W in [0, 1] on device (the copy to a GPU is asynchronous)."""
    batch = torch.from_numpy(pixels)
    if device.type == "cuda":
        # uint8 crosses the bus (4× less than float); conversion happens on the GPU.
        batch = batch.pin_memory().to(device, non_blocking=True)
    return batch.permute(0, 3, 1, 2).float().div_(255)


class BalancedSampler:
    """Batches of batch_size // per_class classes with per_class images each (repeats allowed).

    Several images per class give the triplet miner positives; with one catalog image per coin
    the repeats differ only by augmentation, which is the point of the catalog regime.
    """

    def __init__(self, labels: Sequence[int], batch_size: int, per_class: int, seed: int):
        self._by_class: dict[int, list[int]] = {}
        for i, label in enumerate(labels):
            self._by_class.setdefault(label, []).append(i)
        self._classes = list(self._by_class)
        self._per_class = per_class
        self._n_classes = max(1, min(len(self._classes), batch_size // per_class))
        self._batch_size = batch_size
        self._rng = np.random.default_rng(seed)

    def next_batch(self) -> list[int]:
        """Positions of the next batch."""
        batch: list[int] = []
        for c in self._rng.choice(len(self._classes), size=self._n_classes, replace=False):
            pool = self._by_class[self._classes[c]]
            picks = self._rng.choice(
                pool, size=self._per_class, replace=len(pool) < self._per_class
            )
            batch.extend(int(i) for i in picks)
        return batch[: self._batch_size]
