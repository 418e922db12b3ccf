"""The faiss structures a catalog index searches: exact, HNSW or IVF with PQ fast scan.

Which one `auto` picks, how each is built and restored, and exact rescoring of approximate
candidates from the stored embeddings (training/index.py keeps the embeddings; this module only
the structure over them).
"""

from __future__ import annotations

import math
from typing import Any

import faiss
import numpy as np

from training.search_errors import IndexStoreError

KINDS = ("auto", "flat", "hnsw", "ivf")
# Below this many coins exact search is fast enough (about 10 ms for 50k×512 on one busy core,
# benchmarks/search.py) and loses nothing, so `auto` stays exact; from here on it uses IVF.
APPROXIMATE_FROM = 50_000
HNSW_NEIGHBOURS = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
# faiss wants about 39 training points per IVF list; fewer gives poor centroids.
IVF_POINTS_PER_LIST = 39
IVF_MAX_TRAIN = 200_000
# IVF lists hold 4-bit PQ codes (one byte per 2 sub-vectors of 8 dims): 32 bytes a 512-d coin,
# scanned with SIMD "fast scan", about 10× faster than float vectors. The PQ scores are rough,
# so RESCORE_FACTOR × k candidates are rescored exactly from the stored embeddings.
PQ_DIMS_PER_CODE = 8
RESCORE_FACTOR = 16


def resolve_kind(kind: str, count: int) -> str:
    """The concrete faiss kind for `kind` (auto → flat below APPROXIMATE_FROM, else ivf).

    Raises:
        IndexStoreError: an unknown kind.
    """
    if kind not in KINDS:
        raise IndexStoreError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind != "auto":
        return kind
    return "flat" if count < APPROXIMATE_FROM else "ivf"


def ivf_lists(count: int) -> int:
    """IVF list count for `count` vectors: about 4·√N, but never more than the data can train."""
    return max(1, min(int(4 * math.sqrt(max(count, 1))), count // IVF_POINTS_PER_LIST))


def default_nprobe(nlist: int) -> int:
    """Lists an IVF query visits: a tenth (at least 8); recall@1 ≈ 0.99 in benchmarks/search.py."""
    return min(nlist, max(8, nlist // 10))


def build_faiss(
    embeddings: np.ndarray, kind: str, *, seed: int = 0
) -> tuple[faiss.Index, dict[str, Any]]:
    """A faiss inner-product index over `embeddings` and the search settings it was built with."""
    n, dim = embeddings.shape
    kind = resolve_kind(kind, n)
    data = np.ascontiguousarray(embeddings, dtype=np.float32)
    settings: dict[str, Any] = {"kind": kind}
    if kind == "flat":
        index: faiss.Index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        hnsw.hnsw.efSearch = HNSW_EF_SEARCH
        settings["ef_search"] = HNSW_EF_SEARCH
        index = hnsw
    else:
        nlist = ivf_lists(n)
        quantizer = faiss.IndexFlatIP(dim)
        if dim % PQ_DIMS_PER_CODE == 0:
            ivf: faiss.IndexIVF = faiss.IndexIVFPQFastScan(
                quantizer, dim, nlist, dim // PQ_DIMS_PER_CODE, 4, faiss.METRIC_INNER_PRODUCT
            )
        else:  # PQ needs whole sub-vectors; odd widths keep float vectors
            ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        # Train on a sample: k-means cost grows with points × lists, and 39/list is plenty.
        rng = np.random.default_rng(seed)
        take = min(n, max(nlist * IVF_POINTS_PER_LIST, 256), IVF_MAX_TRAIN)
        sample = data[np.sort(rng.choice(n, size=take, replace=False))] if take < n else data
        if len(sample):
            ivf.train(sample)
        ivf.nprobe = default_nprobe(nlist)
        settings.update(nlist=nlist, nprobe=ivf.nprobe, rescore=RESCORE_FACTOR)
        index = ivf
    if n:
        index.add(data)
    return index, settings


def apply_settings(index: faiss.Index, settings: dict[str, Any]) -> None:
    """Restore query-time settings (nprobe, efSearch) that faiss files do not keep reliably."""
    params = faiss.ParameterSpace()
    if settings.get("kind") == "ivf":
        params.set_index_parameter(index, "nprobe", int(settings["nprobe"]))
    elif settings.get("kind") == "hnsw":
        params.set_index_parameter(index, "efSearch", int(settings["ef_search"]))


def search_faiss(
    index: faiss.Index,
    settings: dict[str, Any],
    embeddings: np.ndarray,
    queries: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, rows) per query; approximate candidates are rescored exactly.

    Rows are -1 (score -inf) where fewer than k candidates were found.
    """
    rescore = int(settings.get("rescore", 1))
    scores, rows = index.search(queries, k * rescore)
    if rescore == 1:
        return scores, rows
    safe = np.where(rows >= 0, rows, 0)
    exact = np.einsum("qd,qkd->qk", queries, embeddings[safe])
    exact = np.where(rows >= 0, exact, -np.inf).astype(np.float32)
    order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(exact, order, 1), np.take_along_axis(rows, order, 1)


def index_bytes(index: faiss.Index) -> int:
    """Memory the faiss structure takes (vectors or codes, graph links, centroids)."""
    if isinstance(faiss.downcast_index(index), faiss.IndexFlat):
        return int(index.ntotal * index.d * 4)  # exact: serialising would copy gigabytes
    # IVF lists are blocked and padded for fast scan, HNSW has variable-length links: the
    # serialised size is the honest figure.
    return int(faiss.serialize_index(index).nbytes)


def faiss_kind(index: faiss.Index) -> str:
    """flat, hnsw or ivf: what a faiss file holds (`other` for anything else)."""
    concrete = faiss.downcast_index(index)
    for kind, cls in (
        ("flat", faiss.IndexFlat),
        ("hnsw", faiss.IndexHNSW),
        ("ivf", faiss.IndexIVF),
    ):
        if isinstance(concrete, cls):
            return kind
    return "other"
