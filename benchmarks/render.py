"""Benchmark the digital twin's renderer: renders per second, and where the time goes.

Runs on one core (OpenCV's thread pool is switched off) so numbers compare across machines:

    .venv/bin/python benchmarks/render.py            # 256, 512 and 1024 px
    .venv/bin/python benchmarks/render.py --sizes 512 --renders 50

"Generation" is building a coin's surface (die relief, flan, wear, damage, toning, normals) on
a cold cache; "render" is shading a cached surface under a light pattern, warping it into the
image, and the sensor model, which is what every frame after a coin's first one costs.
"""

from __future__ import annotations

import argparse
import time

import cv2

from rig.sim.coins import CoinCatalog
from rig.sim.relief import clear_cache, coin_surface
from rig.sim.shading import Optics, grid_size_for, render_view
from rig.sim.world import LightState

PATTERNS = {
    "raking_n": {"north": LightState(1.0, 90.0, 20.0, False)},
    "top": {"top": LightState(0.8, 135.0, 60.0, False), "dome": LightState(0.2, None, None, True)},
    "two": {
        "east": LightState(0.6, 0.0, 20.0, False),
        "west": LightState(0.6, 180.0, 20.0, False),
    },
}


def bench(size: int, renders: int, coins: int) -> dict[str, float]:
    catalog = CoinCatalog(seed=0, rulers=3, types=6, coins=coins)
    ids = catalog.coin_ids()
    grid = grid_size_for(size, Optics())
    clear_cache()
    start = time.perf_counter()
    for coin_id in ids:
        coin_surface(catalog, coin_id, "obverse", grid)
    generate_s = (time.perf_counter() - start) / len(ids)
    patterns = list(PATTERNS.values())
    start = time.perf_counter()
    for k in range(renders):
        render_view(
            catalog,
            ids[k % len(ids)],
            "obverse",
            7.0 * k,
            patterns[k % len(patterns)],
            size=size,
            seed_noise=k,
        )
    render_s = (time.perf_counter() - start) / renders
    return {"generate_ms": generate_s * 1e3, "render_ms": render_s * 1e3, "per_s": 1.0 / render_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--renders", type=int, default=0, help="default: scaled to the size")
    parser.add_argument("--coins", type=int, default=6)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    print(f"{'size':>6} {'renders/s':>10} {'render ms':>10} {'coin generation ms':>19}")
    for size in args.sizes:
        renders = args.renders or max(20, int(2e7 / size**2))
        r = bench(size, renders, args.coins)
        print(f"{size:>6} {r['per_s']:>10.1f} {r['render_ms']:>10.2f} {r['generate_ms']:>19.1f}")


if __name__ == "__main__":
    main()
