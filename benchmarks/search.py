"""Catalog search speed: single-query latency, index memory and approximate recall@1.

Random unit vectors stand in for catalog embeddings (the worst case for IVF and HNSW: no
cluster structure to exploit). A query is a database vector plus noise, renormalised, so that
its cosine similarity to its source is about --similarity, as a new photo of an indexed coin is
to that coin's catalog embedding; recall@1 is how often the approximate index returns the same
top-1 as exact search. Latency is per single query on one thread, the way `pipeline search`
asks, measured over --queries queries after a warm-up.

    .venv/bin/python benchmarks/search.py                         # 10k, 100k, 1M; flat and ivf
    .venv/bin/python benchmarks/search.py --sizes 10000,100000 --kinds flat,ivf,hnsw
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from training.faiss_structure import build_faiss, index_bytes, search_faiss

DIM = 512
CHUNK = 100_000


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def perturbed(rng: np.random.Generator, sources: np.ndarray, similarity: float) -> np.ndarray:
    # For a unit x and noise of norm s orthogonal-ish to it, cos(x, x + s·n) = 1/√(1+s²).
    s = np.sqrt(1 / similarity**2 - 1)
    noise = unit_rows(rng, len(sources), sources.shape[1]) * s
    q = sources + noise
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def latencies_ms(
    index: faiss.Index, settings: dict, data: np.ndarray, queries: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    for q in queries[:5]:  # warm-up: page in the data and the code
        search_faiss(index, settings, data, q[None], 1)
    times, tops = [], []
    for q in queries:
        t0 = time.perf_counter()
        _, ids = search_faiss(index, settings, data, q[None], 1)
        times.append((time.perf_counter() - t0) * 1e3)
        tops.append(ids[0, 0])
    return np.array(times), np.array(tops)


def run_size(n: int, kinds: list[str], args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    data = np.concatenate([unit_rows(rng, min(CHUNK, n - i), DIM) for i in range(0, n, CHUNK)])
    sources = rng.choice(n, size=args.queries, replace=False)
    queries = perturbed(rng, data[sources], args.similarity)
    exact_top: np.ndarray | None = None
    for kind in kinds:
        faiss.omp_set_num_threads(args.build_threads)
        t0 = time.perf_counter()
        index, settings = build_faiss(data, kind, seed=args.seed)
        build_s = time.perf_counter() - t0
        faiss.omp_set_num_threads(1)
        times, top = latencies_ms(index, settings, data, queries)
        if kind == "flat":
            exact_top = top
        recall = float(np.mean(top == exact_top)) if exact_top is not None else float("nan")
        found = float(np.mean(top == sources))
        extra = ", ".join(f"{k}={v}" for k, v in settings.items() if k != "kind")
        # Approximate kinds rescore candidates from the embeddings the catalog index keeps.
        rescore_mib = data.nbytes / 2**20 if settings.get("rescore", 1) > 1 else 0.0
        print(
            f"{n:>9,d} {kind:<5} p50 {np.percentile(times, 50):8.3f} ms  "
            f"p99 {np.percentile(times, 99):8.3f} ms  faiss {index_bytes(index) / 2**20:8.1f} MiB"
            f" + rescore {rescore_mib:6.0f} MiB  "
            f"recall@1 vs exact {recall:.3f}  source found {found:.3f}  "
            f"build {build_s:6.1f} s  {extra}",
            flush=True,
        )
        del index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--kinds", default="flat,ivf", help="flat first: it is the reference")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--similarity", type=float, default=0.8)
    parser.add_argument("--build-threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    print(
        f"dim {DIM}, {args.queries} single queries (cosine {args.similarity} to their source), "
        f"1 search thread, faiss {faiss.__version__}"
    )
    for n in (int(s) for s in args.sizes.split(",")):
        run_size(n, kinds, args)


if __name__ == "__main__":
    main()
