"""A catalog index: embeddings, ids and metadata of catalog coins, searchable with faiss.

On disk an index is a directory:

    INDEX/
      index.json        format, embedding dim, faiss kind and search settings, the model identity,
                        and the index's own same-coin calibration (training/index_calibration.py)
      items.jsonl       one line per indexed coin: id, source file, side, and carried metadata
      embeddings.npy    float32 N×D, row i belongs to line i of items.jsonl
      outlines.npy      float32 N×OUTLINE_BINS, each coin's outline profile (training.outline;
                        NaN where unknown); an index written before outlines has none
      grey_embeddings.npy
                        float32 N×D, the grey view: row i is the embedding of coin i's crop
                        turned grey, searched by grey queries (a black-and-white archive photo
                        is nearer a grey catalog view than a colour one); present only while
                        every coin has one (index.json `grey_view`)
      faiss.index       the faiss structure built from embeddings.npy

The embeddings are kept beside the faiss file because they are the expensive part: the faiss
structure (exact, HNSW or IVF) can be rebuilt from them at any size without touching a model,
which is what makes adding images incremental. Embeddings are unit vectors, so inner product is
cosine similarity and the scores are comparable with the verdict's thresholds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from training.faiss_structure import (
    KINDS,
    apply_settings,
    build_faiss,
    faiss_kind,
    ivf_lists,
    resolve_kind,
    search_faiss,
)
from training.index_calibration import IndexCalibration, calibrate_index
from training.outline import OUTLINE_BINS
from training.search_errors import IndexStoreError

INFO_FILE = "index.json"
ITEMS_FILE = "items.jsonl"
EMBEDDINGS_FILE = "embeddings.npy"
OUTLINES_FILE = "outlines.npy"
GREY_FILE = "grey_embeddings.npy"
FAISS_FILE = "faiss.index"
FORMAT = "coinrig-index"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Hit:
    """One search result: rank (1 = best), cosine similarity and the indexed item's record."""

    rank: int
    score: float
    item: dict[str, Any]
    row: int = -1  # the item's row in the index (its embedding and outline)


class CatalogIndex:
    """Embeddings, ids and metadata of catalog coins with a faiss index over them."""

    def __init__(
        self,
        *,
        dim: int,
        model: dict[str, Any],
        kind: str = "auto",
        embeddings: np.ndarray | None = None,
        items: Sequence[dict[str, Any]] = (),
        built: tuple[faiss.Index, dict[str, Any]] | None = None,
        calibration: IndexCalibration | None = None,
        outlines: np.ndarray | None = None,
        grey: np.ndarray | None = None,
    ) -> None:
        resolve_kind(kind, 0)  # validate early
        self.dim = dim
        self.model = dict(model)
        self.kind = kind
        # asarray, not astype: a memory-mapped float32 file stays on disk until rows are read.
        self.embeddings = (
            np.zeros((0, dim), np.float32)
            if embeddings is None
            else np.asarray(embeddings, dtype=np.float32)
        )
        self.items: list[dict[str, Any]] = [dict(item) for item in items]
        if len(self.items) != len(self.embeddings):
            raise IndexStoreError(
                f"{len(self.items)} items but {len(self.embeddings)} embeddings: index is damaged"
            )
        self.outlines = _outlines_for(len(self.items), outlines)
        # shape only: a memory-mapped view is read (and checked finite) when first searched
        self.grey = None if grey is None else _views_for(len(self.items), dim, grey, finite=False)
        self._grey_built: tuple[faiss.Index, dict[str, Any]] | None = None
        self._grey_calibration: IndexCalibration | None = None
        self._ids = {item["id"] for item in self.items}
        self._faiss, self.settings = built or build_faiss(self.embeddings, kind)
        if self._faiss.ntotal != len(self.items):
            raise IndexStoreError(
                f"{len(self.items)} items but {self._faiss.ntotal} faiss vectors: index is damaged"
            )
        apply_settings(self._faiss, self.settings)
        self._calibration = calibration

    @property
    def calibration(self) -> IndexCalibration:
        """Thresholds from the index's own impostor pairs, recomputed when coins were added."""
        if self._calibration is None or self._calibration.entries != len(self.items):
            self._calibration = calibrate_index(self.embeddings, self.items)
        return self._calibration

    @property
    def has_grey(self) -> bool:
        """Whether every coin has a grey view for grey queries to search."""
        return self.grey is not None and len(self.items) > 0

    def calibration_for(self, grey: bool) -> IndexCalibration:
        """The calibration of the view a query searches: its impostor pairs set its bars."""
        if not (grey and self.has_grey):
            return self.calibration
        assert self.grey is not None
        if self._grey_calibration is None or self._grey_calibration.entries != len(self.items):
            self._grey_calibration = calibrate_index(self.grey, self.items)
        return self._grey_calibration

    def view(self, grey: bool) -> np.ndarray:
        """The embeddings a query searches: the grey view for a grey query where there is one."""
        return self.grey if grey and self.grey is not None and len(self.items) else self.embeddings

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._ids

    def add(
        self,
        embeddings: np.ndarray,
        items: Sequence[dict[str, Any]],
        outlines: np.ndarray | None = None,
        grey: np.ndarray | None = None,
    ) -> None:
        """Append coins (outline profiles unknown if not given); faiss grows in place if it can.

        `grey`: the new coins' grey views. The index keeps a grey view only while every coin
        has one: coins added without (or to an index that has none) leave it without.

        Raises:
            IndexStoreError: wrong embedding width, mismatched lengths or a duplicate id.
        """
        embeddings = np.asarray(embeddings, dtype=np.float32).reshape(-1, self.dim)
        if len(embeddings) != len(items):
            raise IndexStoreError(f"{len(items)} items but {len(embeddings)} embeddings")
        new_outlines = _outlines_for(len(items), outlines)
        new_grey = None if grey is None else _views_for(len(items), self.dim, grey)
        new_ids = [item["id"] for item in items]
        dupes = sorted(self._ids.intersection(new_ids))
        if dupes or len(set(new_ids)) < len(new_ids):
            raise IndexStoreError(f"duplicate ids: {dupes[:3] or 'within the new items'}")
        if new_grey is None or (self.grey is None and len(self.items)):
            self.grey = None  # some coin would lack a grey view
        else:
            self.grey = new_grey if self.grey is None else np.concatenate([self.grey, new_grey])
        self._grey_built, self._grey_calibration = None, None
        self.embeddings = np.concatenate([self.embeddings, embeddings])
        self.outlines = np.concatenate([self.outlines, new_outlines])
        self.items.extend(dict(item) for item in items)
        self._ids.update(new_ids)
        self._calibration = None
        wanted = resolve_kind(self.kind, len(self.items))
        # IVF centroids trained on a small catalog fit a grown one badly: retrain when it doubled.
        stale_ivf = self.settings["kind"] == "ivf" and ivf_lists(len(self.items)) >= 2 * int(
            self.settings["nlist"]
        )
        if wanted != self.settings["kind"] or stale_ivf:
            self._faiss, self.settings = build_faiss(self.embeddings, self.kind)
        else:
            self._faiss.add(np.ascontiguousarray(embeddings))

    def set_kind(self, kind: str) -> None:
        """Rebuild the faiss structure as `kind` from the stored embeddings (no re-embedding)."""
        resolve_kind(kind, 0)
        self.kind = kind
        self._faiss, self.settings = build_faiss(self.embeddings, kind)
        self._grey_built = None

    def search(self, queries: np.ndarray, k: int, *, grey: bool = False) -> list[list[Hit]]:
        """Top-k hits for each query row, best first (fewer when the index is smaller than k).

        `grey` searches the grey view (the colour one where the index has none); its faiss
        structure is built from the stored grey embeddings on first use.

        Raises:
            IndexStoreError: the query width differs from the index's embedding dim.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise IndexStoreError(
                f"query embeddings have {queries.shape[1]} dims, the index {self.dim}"
            )
        k = min(k, len(self.items))
        if k == 0:
            return [[] for _ in queries]
        built, vectors = (self._faiss, self.settings), self.view(grey)
        if vectors is not self.embeddings:  # the grey view
            if self._grey_built is None:
                self._grey_built = build_faiss(_views_for(len(self), self.dim, vectors), self.kind)
                apply_settings(*self._grey_built)
            built = self._grey_built
        scores, rows = search_faiss(built[0], built[1], vectors, queries, k)
        return [
            [
                Hit(rank=r + 1, score=float(s), item=self.items[i], row=int(i))
                for r, (s, i) in enumerate(zip(q_scores, q_rows, strict=True))
                if i >= 0  # faiss pads with -1 when an approximate index finds fewer than k
            ]
            for q_scores, q_rows in zip(scores, rows, strict=True)
        ]

    def check_model(self, model: dict[str, Any]) -> None:
        """Refuse a model other than the one the index was built with.

        Raises:
            IndexStoreError: config or weights differ from those recorded in the index.
        """
        mine, theirs = self.model, model
        if mine.get("config") != theirs.get("config") or mine.get("weights_sha256") != theirs.get(
            "weights_sha256"
        ):
            raise IndexStoreError(
                f"index was built with {_describe(mine)}, not {_describe(theirs)}: "
                "embeddings of different models cannot be compared; build a new index"
            )

    def save(self, directory: Path) -> None:
        """Write the index directory; index.json goes last so a crash never leaves it half-new."""
        calibration = self.calibration.to_json()  # before any file: it can refuse the data
        directory.mkdir(parents=True, exist_ok=True)
        _atomic(directory / EMBEDDINGS_FILE, lambda p: np.save(p, self.embeddings))
        _atomic(directory / OUTLINES_FILE, lambda p: np.save(p, self.outlines))
        if (grey := self.grey) is not None:
            _atomic(directory / GREY_FILE, lambda p: np.save(p, grey))
        _atomic(
            directory / ITEMS_FILE,
            lambda p: p.write_text(
                "".join(json.dumps(i, sort_keys=True) + "\n" for i in self.items)
            ),
        )
        _atomic(directory / FAISS_FILE, lambda p: faiss.write_index(self._faiss, str(p)))
        info = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "dim": self.dim,
            "count": len(self.items),
            "kind": self.kind,
            "faiss": self.settings,
            "model": self.model,
            "calibration": calibration,
            "grey_view": self.grey is not None,
        }
        _atomic(directory / INFO_FILE, lambda p: p.write_text(json.dumps(info, indent=2) + "\n"))

    @classmethod
    def load(cls, directory: Path) -> CatalogIndex:
        """Open an index directory written by save().

        Every file is checked against index.json before use. An exact (flat) index is rebuilt
        from embeddings.npy rather than read from faiss.index: its faiss structure is nothing
        but a copy of the embeddings, and a damaged file's vector lengths are then never
        trusted to size an allocation.

        Raises:
            IndexStoreError: the directory is missing, not an index, or its files disagree.
        """
        info_path = directory / INFO_FILE
        if not info_path.is_file():
            raise IndexStoreError(f"no catalog index at {directory} (missing {INFO_FILE})")
        try:
            info = _check_info(json.loads(info_path.read_text(encoding="utf-8")), info_path)
            dim = int(info["dim"])
            # Memory-mapped: a million-coin catalog's 2 GB of vectors are only read for rescoring.
            embeddings = np.load(directory / EMBEDDINGS_FILE, mmap_mode="r", allow_pickle=False)
            lines = (directory / ITEMS_FILE).read_text(encoding="utf-8").splitlines()
            items = [json.loads(line) for line in lines if line.strip()]
            _check_items(items, embeddings, dim)
            if info["faiss"]["kind"] == "flat":
                if not np.isfinite(embeddings).all():
                    raise IndexStoreError("embeddings are not all finite")
                built = build_faiss(np.asarray(embeddings), "flat")
            else:
                stored = faiss.read_index(str(directory / FAISS_FILE))
                if stored.d != dim or faiss_kind(stored) != info["faiss"]["kind"]:
                    raise IndexStoreError(f"{FAISS_FILE} is not the index {INFO_FILE} describes")
                built = (stored, info["faiss"])
            # An index written before calibrations were kept has none: computed when first used.
            raw = info.get("calibration")
            calibration = None if raw is None else IndexCalibration.from_json(raw)
            outlines_path = directory / OUTLINES_FILE
            outlines = (
                np.load(outlines_path, mmap_mode="r", allow_pickle=False)
                if outlines_path.is_file()
                else None
            )
            # index.json is written last, so a grey file it does not claim is a leftover
            grey = (
                np.load(directory / GREY_FILE, mmap_mode="r", allow_pickle=False)
                if info.get("grey_view") is True
                else None
            )
            return cls(
                dim=dim,
                model=info["model"],
                kind=info["kind"],
                embeddings=embeddings,
                items=items,
                built=built,
                calibration=calibration,
                outlines=outlines,
                grey=grey,
            )
        except (
            OSError,
            EOFError,
            ValueError,
            RuntimeError,
            IndexStoreError,
        ) as e:  # EOF: empty .npy
            raise IndexStoreError(f"index at {directory} is damaged: {e}") from e


def _outlines_for(count: int, outlines: np.ndarray | None) -> np.ndarray:
    """The outline profiles of `count` coins as float32 (all unknown when None).

    Raises:
        IndexStoreError: a given array is not count × OUTLINE_BINS.
    """
    if outlines is None:
        return np.full((count, OUTLINE_BINS), np.nan, np.float32)
    array = np.asarray(outlines, dtype=np.float32)
    if array.shape != (count, OUTLINE_BINS):
        raise IndexStoreError(
            f"{count} items but outlines of shape {array.shape}: index is damaged"
        )
    return array


def _views_for(count: int, dim: int, views: np.ndarray, *, finite: bool = True) -> np.ndarray:
    """Another view's embeddings of `count` coins as float32, checked to be count × dim.

    Raises:
        IndexStoreError: the array has another shape or (`finite`) non-finite values.
    """
    array = np.asarray(views, dtype=np.float32)
    if array.shape != (count, dim):
        raise IndexStoreError(f"{count} items but a grey view of shape {array.shape}: damaged")
    if finite and not np.isfinite(array).all():
        raise IndexStoreError("the grey view's embeddings are not all finite")
    return array


def _check_info(info: object, path: Path) -> dict[str, Any]:
    """index.json, checked to be this format with usable dim, kind, faiss settings and model.

    Raises:
        IndexStoreError: names what is wrong.
    """
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise IndexStoreError(f"{path}: not a {FORMAT} v{FORMAT_VERSION} index")
    if info.get("version") != FORMAT_VERSION:
        raise IndexStoreError(f"{path}: not a {FORMAT} v{FORMAT_VERSION} index")
    dim, kind, settings, model = (info.get(k) for k in ("dim", "kind", "faiss", "model"))
    if not (isinstance(dim, int) and not isinstance(dim, bool) and 1 <= dim <= 65536):
        raise IndexStoreError(f"{path}: dim {dim!r:.20} is not an embedding width")
    if kind not in KINDS or not isinstance(model, dict):
        raise IndexStoreError(f"{path}: kind {kind!r:.20} or model is not valid")
    if not isinstance(settings, dict) or settings.get("kind") not in KINDS[1:]:
        raise IndexStoreError(f"{path}: faiss settings are not valid")
    wanted = {"ivf": ("nlist", "nprobe", "rescore"), "hnsw": ("ef_search",)}
    for key in wanted.get(settings["kind"], ()):
        value = settings.get(key)
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise IndexStoreError(f"{path}: faiss {key} {value!r:.20} is not a positive count")
    return info


def _check_items(items: list[Any], embeddings: np.ndarray, dim: int) -> None:
    """Items are objects with unique string ids, one per row of an N×dim float array."""
    if embeddings.ndim != 2 or embeddings.shape != (len(items), dim):
        raise IndexStoreError(
            f"{EMBEDDINGS_FILE} is {embeddings.shape}, expected ({len(items)}, {dim})"
        )
    if not np.issubdtype(embeddings.dtype, np.floating):
        raise IndexStoreError(f"{EMBEDDINGS_FILE} holds {embeddings.dtype}, not floats")
    ids = [item.get("id") if isinstance(item, dict) else None for item in items]
    if not all(isinstance(i, str) for i in ids) or len(set(ids)) != len(ids):
        raise IndexStoreError(f"{ITEMS_FILE}: every line must be an object with a unique id")


def _describe(model: dict[str, Any]) -> str:
    config = model.get("config") or {}
    sha = str(model.get("weights_sha256") or "?")[:12]
    return f"{config.get('name', '?')} (dim {config.get('embedding_dim', '?')}, weights {sha})"


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    # np.save appends .npy to names without it, so the temporary name keeps the suffix.
    tmp = path.with_name(f".tmp-{path.name}")
    write(tmp)
    os.replace(tmp, path)
