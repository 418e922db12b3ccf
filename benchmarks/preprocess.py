"""Benchmark the preprocessed-image cache build: images per second on 1, 2 and every core.

Builds the cache of a dataset from cold (a fresh cache folder each time) with each worker
count, several times, and prints the mean and spread of images/s and the speed-up over one
worker. The pages of the dataset's files are warmed first, so every count reads from memory:

    rig simulate --coins 320 --types 6 --seed 0 --image-size 256 --out data/demo
    .venv/bin/python benchmarks/preprocess.py --data data/demo --image-size 64
    .venv/bin/python benchmarks/preprocess.py --data data/demo --workers 1,2,4,8,16 --repeat 5

Other work on the machine skews the figures: check `uptime` first (the counts take turns, so
load that comes and goes skews them alike, but widens the spread). The goal (issue 15) is at
least 0.8 × the number of cores in speed-up on a machine of 8 or more, and 1.6× on 2 cores.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from training.cache import Preprocess
from training.data import load_images, read_dataset
from training.parallel import default_workers


def _counts(text: str) -> list[int]:
    """`1,2,all` → [1, 2, every core] (duplicates dropped, order kept)."""
    counts = [default_workers() if part.strip() == "all" else int(part) for part in text.split(",")]
    return list(dict.fromkeys(counts))


def build_seconds(data: Path, settings: Preprocess, workers: int) -> tuple[float, int]:
    """Seconds to build the dataset's cache from cold with `workers`, and its image count."""
    records = read_dataset(data).records
    with tempfile.TemporaryDirectory(prefix="coinrig-bench-") as cache:
        start = time.perf_counter()
        load_images(records, settings, Path(cache), warn=lambda _: None, workers=workers)
        return time.perf_counter() - start, len(records)


def main() -> None:
    """Parse the options, warm the page cache, time every worker count, print the table."""
    parser = argparse.ArgumentParser(description="Time the cache build on 1, 2 and all cores.")
    parser.add_argument("--data", type=Path, required=True, help="a coinrig dataset")
    parser.add_argument("--image-size", type=int, default=64, help="cache side (make demo: 64)")
    parser.add_argument("--workers", default="1,2,all", help="worker counts, e.g. 1,2,4,all")
    parser.add_argument("--repeat", type=int, default=3, help="builds per worker count")
    parser.add_argument(
        "--single-photos",
        action="store_true",
        help="also cut every capture out alone, as runs with --single-photo-p need",
    )
    args = parser.parse_args()
    settings = Preprocess(image_size=args.image_size, single_photos=args.single_photos)
    for record in read_dataset(args.data).records:  # into the page cache: time work, not disk
        record.path.read_bytes()
    layers = "pose crops and single photos" if args.single_photos else "pose crops"
    print(f"{args.data}: cache build at {args.image_size} px ({layers}), {default_workers()} cores")
    print(f"{'workers':>7}  {'images/s':>9}  {'spread':>13}  {'seconds':>8}  {'speed-up':>8}")
    counts = _counts(args.workers)
    runs: dict[int, list[tuple[float, int]]] = {w: [] for w in counts}
    for _ in range(args.repeat):  # interleaved, so that other load skews every count alike
        for workers in counts:
            runs[workers].append(build_seconds(args.data, settings, workers))
    base = None
    for workers in counts:
        rates = [count / seconds for seconds, count in runs[workers]]
        mean = statistics.mean(rates)
        base = base or mean
        seconds = statistics.mean(s for s, _ in runs[workers])
        print(
            f"{workers:>7}  {mean:>9.1f}  {min(rates):>6.1f}-{max(rates):<6.1f}  "
            f"{seconds:>8.2f}  {mean / base:>7.2f}x"
        )


if __name__ == "__main__":
    main()
