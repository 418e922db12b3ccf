"""Benchmark `rig simulate --workers N`: images per second on 1, 2 and every core.

Runs the whole command (emulators, real drivers, twin, crash-safe writer, adoption into one
dataset) into a fresh folder for each worker count, several times, and prints the mean and
spread of images/s (captures and catalog images over the command's wall time, start-up
included) and the speed-up over one worker:

    .venv/bin/python benchmarks/simulate_workers.py                          # 24 coins, 64 px
    .venv/bin/python benchmarks/simulate_workers.py --coins 96 --workers 1,2,4,8,16 --repeat 3
    .venv/bin/python benchmarks/simulate_workers.py --direct --coins 200     # the twin alone

Other work on the machine skews the figures: the load average before and after is printed
(the counts take turns, so load that comes and goes skews them alike but widens the spread).
The goal (issue 15) is at least 0.8 × the number of cores in speed-up on 8 cores or more.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RIG = Path(sys.executable).with_name("rig")


def _counts(text: str) -> list[int]:
    """`1,2,all` → [1, 2, every core] (duplicates dropped, order kept)."""
    cores = len(os.sched_getaffinity(0))
    counts = [cores if part.strip() == "all" else int(part) for part in text.split(",")]
    return list(dict.fromkeys(counts))


def run_once(args: argparse.Namespace, workers: int) -> tuple[float, int]:
    """Wall seconds of one `rig simulate` into a fresh folder, and the images it wrote."""
    with tempfile.TemporaryDirectory(prefix="coinrig-bench-") as folder:
        out = Path(folder) / "sim"
        command = [str(RIG), "simulate", "--coins", str(args.coins), "--types", str(args.types)]
        command += ["--image-size", str(args.image_size), "--plan", args.plan]
        command += ["--workers", str(workers), "--out", str(out)]
        command += ["--direct"] if args.direct else []
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        lines = (out / "metadata.jsonl").read_text().splitlines()
        images = sum(1 for line in lines if json.loads(line).get("file_name"))
    return seconds, images


def main() -> None:
    """Parse options, time each worker count `--repeat` times, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coins", type=int, default=24)
    parser.add_argument("--types", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--plan", default="quick")
    parser.add_argument("--workers", default="1,2,all", help="worker counts, e.g. 1,2,4,all")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--direct", action="store_true", help="rig simulate --direct")
    args = parser.parse_args()
    counts = _counts(args.workers)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    rates: dict[int, list[float]] = {n: [] for n in counts}
    images = 0
    for _ in range(args.repeat):
        for workers in counts:  # taking turns: load that comes and goes skews all counts
            seconds, images = run_once(args, workers)
            rates[workers].append(images / seconds)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    mode = "--direct" if args.direct else "emulated rigs"
    print(f"\n{args.coins} coins, {args.plan} plan, {args.image_size} px, {mode}: {images} images")
    print("| workers | images/s (mean ± sd) | speed-up |")
    print("| --- | --- | --- |")
    base = statistics.mean(rates[counts[0]])
    for workers in counts:
        mean = statistics.mean(rates[workers])
        spread = statistics.stdev(rates[workers]) if len(rates[workers]) > 1 else 0.0
        print(f"| {workers} | {mean:.1f} ± {spread:.1f} | {mean / base:.2f}× |")


if __name__ == "__main__":
    main()
