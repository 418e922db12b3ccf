"""Benchmark the digital twin's renderer: renders per second, and where the time goes.

Runs on one core (OpenCV's thread pool is switched off) so numbers compare across machines:

    .venv/bin/python benchmarks/render.py            # 256, 512 and 1024 px
    .venv/bin/python benchmarks/render.py --sizes 512 --renders 50

"Coin generation" is building a coin's surface (die relief, flan, wear, damage, toning,
normals) on a cold cache, once per coin, side and size. "Render" is what every later frame
costs: shading the cached surface under a light pattern and warping it into the image
("shading", stage shadows included), then the sensor model ("sensor": noise, clipping, gain,
gamma, quantisation).
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from rig.sim.coins import CoinCatalog
from rig.sim.relief import clear_cache, coin_surface
from rig.sim.shading import Optics, Sensor, expose, grid_size_for, radiance_view, render_view
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
    optics = Optics()
    grid = grid_size_for(size, optics)
    clear_cache()
    start = time.perf_counter()
    surfaces = [coin_surface(catalog, coin_id, "obverse", grid) for coin_id in ids]
    generate_s = (time.perf_counter() - start) / len(ids)
    patterns = list(PATTERNS.values())
    rng = np.random.default_rng(0)
    shade_s = sensor_s = 0.0
    for k in range(renders):
        t0 = time.perf_counter()
        radiance = radiance_view(
            surfaces[k % len(ids)], patterns[k % len(patterns)], 7.0 * k, size, size, optics
        )
        t1 = time.perf_counter()
        expose(radiance, Sensor(), rng)
        shade_s += t1 - t0
        sensor_s += time.perf_counter() - t1
    start = time.perf_counter()
    for k in range(renders):  # the public entry point, cache lookups included
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
    return {
        "generate_ms": generate_s * 1e3,
        "shade_ms": shade_s / renders * 1e3,
        "sensor_ms": sensor_s / renders * 1e3,
        "render_ms": render_s * 1e3,
        "per_s": 1.0 / render_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--renders", type=int, default=0, help="default: scaled to the size")
    parser.add_argument("--coins", type=int, default=6)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    print(
        f"{'size':>6} {'renders/s':>10} {'render ms':>10} {'shading ms':>11} {'sensor ms':>10}"
        f" {'coin generation ms':>19}"
    )
    for size in args.sizes:
        renders = args.renders or max(20, int(2e7 / size**2))
        r = bench(size, renders, args.coins)
        print(
            f"{size:>6} {r['per_s']:>10.1f} {r['render_ms']:>10.2f} {r['shade_ms']:>11.2f}"
            f" {r['sensor_ms']:>10.2f} {r['generate_ms']:>19.1f}"
        )


if __name__ == "__main__":
    main()
