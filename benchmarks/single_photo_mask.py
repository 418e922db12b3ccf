"""How much of the flan a single photo's mask loses, against the twin's true coverage.

    python benchmarks/single_photo_mask.py --seeds 0,1,2 --coins 20 --out runs/single-mask

For twin collections of each seed (never the segmenter's training seeds), every coin side is
rendered as a single photo at two turntable angles under each of four low raking lights (the
hard case: the far rim is as dark as the turntable), under the dome, and as an auction-catalog
photo. Each photo is cut out as a search query is (find_coin, then crop_coin with the mask at
64 px) with the colour outline alone and with the learned segmenter added, and compared with the
coverage cut by the same circle: "lost" is coin masked away, "extra" backdrop kept, both as a
share of the coin's area. Prints mean, 95th percentile and worst per kind of photo and seed,
then the mean ± sd over seeds; writes an overlay sheet of the worst raking cases. With
`--real FOLDER` it also cuts out every coin of real photos both ways (no truth there: a sheet
to look at, and how much each outline keeps that the other does not).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import cv2
import numpy as np

from rig.sim.catalog_style import render_catalog_photo
from rig.sim.coins import SIDES, CoinCatalog, Side
from rig.sim.relief import coin_surface
from rig.sim.shading import Optics, coverage_view, grid_size_for, render_view
from rig.sim.world import LightState
from training.coinfind import BACKGROUND_RGB, Circle, find_coin
from training.cutout import crop_coin
from training.detect import detect_coins
from training.segmenter import SEGMENTER_ENV

SIZE = 64
MARGIN = 0.04
FRAME_PX = 256
RAKING = {
    f"raking {a}°": {"key": LightState(1.0, float(a), 20.0, False)} for a in (0, 90, 180, 270)
}
DOME = {"dome": {"dome": LightState(1.0, None, None, True)}}


def _kept(crop: np.ndarray) -> np.ndarray:
    return ~np.all(np.abs(crop.astype(int) - BACKGROUND_RGB) <= 3, axis=2)


def _scores(
    image: np.ndarray, coverage: np.ndarray, learned: bool
) -> tuple[float, float, np.ndarray]:
    """(lost, extra, overlay) of one photo cut out as a query is."""
    # without the segmenter: as a package without its weights finds and cuts (no circle refit)
    with mock.patch.dict(os.environ, {} if learned else {SEGMENTER_ENV: "off"}):
        circle = find_coin(image)
        crop = crop_coin(image, circle, SIZE, margin=MARGIN, mask_background=True)
    cover = np.repeat((coverage[..., None] * 255).astype(np.uint8), 3, axis=2)
    truth = crop_coin(cover, circle, SIZE, margin=MARGIN)[..., 0] > 127
    kept = _kept(crop)
    overlay = crop_coin(image, circle, SIZE, margin=MARGIN)
    overlay[truth & ~kept] = (255, 0, 0)
    overlay[kept & ~truth] = (0, 0, 255)
    area = max(1, int(truth.sum()))
    return float((truth & ~kept).sum() / area), float((kept & ~truth).sum() / area), overlay


def _photos(
    catalog: CoinCatalog, coin_id: str, side: Side
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(kind, image, coverage) for every photo of one coin side."""
    optics = Optics()
    surface = coin_surface(catalog, coin_id, side, grid_size_for(FRAME_PX, optics))
    for angle in (30.0, 200.0):
        coverage = coverage_view(surface, angle, FRAME_PX, FRAME_PX, optics)
        for name, lights in {**RAKING, **DOME}.items():
            image = render_view(catalog, coin_id, side, angle, lights, size=FRAME_PX)
            yield ("raking" if name.startswith("raking") else "dome"), image, coverage
    photo = render_catalog_photo(catalog, coin_id, side)
    yield "catalog", photo.rgb, photo.coverage


def measure(
    seed: int, coins: int
) -> tuple[dict[str, dict[str, list[float]]], list[tuple[float, np.ndarray]]]:
    """Scores by method and kind of photo for one seed's collection, and the raking overlays."""
    catalog = CoinCatalog(seed=seed, types=6, coins=coins)
    scores: dict[str, dict[str, list[float]]] = {}
    worst: list[tuple[float, np.ndarray]] = []
    for coin_id in catalog.coin_ids():
        for side in SIDES:
            for kind, image, coverage in _photos(catalog, coin_id, side):
                for method, learned in (("colour", False), ("learned", True)):
                    lost, extra, overlay = _scores(image, coverage, learned)
                    row = scores.setdefault(f"{method} {kind}", {"lost": [], "extra": []})
                    row["lost"].append(lost)
                    row["extra"].append(extra)
                    if kind == "raking" and learned:
                        worst.append((lost, overlay))
    return scores, worst


def real_photo_sheet(folder: Path, out: Path) -> None:
    """Every coin of real photos (no truth): raw crop, learned mask, colour mask; area figures."""
    tiles, kept = [], []
    for path in sorted(folder.glob("*.jpg")):
        bgr = cv2.imread(str(path))
        if bgr is None:
            continue
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        for coin in detect_coins(image):
            circle = Circle(coin.x, coin.y, coin.r, "detect")
            learned = crop_coin(image, circle, 96, margin=MARGIN, mask_background=True)
            with mock.patch.dict(os.environ, {SEGMENTER_ENV: "off"}):
                colour = crop_coin(image, circle, 96, margin=MARGIN, mask_background=True)
            a, b = _kept(learned), _kept(colour)
            kept.append((a.mean(), b.mean(), (a & ~b).mean(), (b & ~a).mean()))
            tiles.append(
                np.concatenate([crop_coin(image, circle, 96, margin=MARGIN), learned, colour], 1)
            )
    if not kept:
        print(f"real photos: no coin found in {folder}")
        return
    a_mean, b_mean, only_a, only_b = np.mean(kept, axis=0)
    print(f"real photos: {len(tiles)} coins; crop kept {a_mean:.1%} learned vs {b_mean:.1%} colour; "
          f"only learned keeps {only_a:.2%}, only colour keeps {only_b:.2%} of the crop")  # fmt: skip
    # the 24 coins whose two outlines differ most: where the segmenter changes anything
    order = np.argsort([-(k[2] + k[3]) for k in kept])[:24]
    tiles = [tiles[i] for i in order]
    rows = [np.concatenate(tiles[i : i + 4], 1) for i in range(0, len(tiles), 4)]
    cv2.imwrite(str(out), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))
    print(f"wrote {out} (the 24 coins whose outlines differ most: photo, learned, colour)")


def main() -> None:
    """Measure every seed, print the table, write the JSON and the worst cases' overlays."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--coins", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("runs/single-mask"))
    parser.add_argument("--real", type=Path, help="folder of real JPEG photos: a visual check")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.real is not None:
        real_photo_sheet(args.real, args.out / "real-photos.png")
    per_seed: dict[str, list[dict[str, float]]] = {}
    worst_all: list[tuple[float, np.ndarray]] = []
    for seed in (int(s) for s in args.seeds.split(",")):
        scores, worst = measure(seed, args.coins)
        worst_all += worst
        for key, row in scores.items():
            lost, extra = np.array(row["lost"]), np.array(row["extra"])
            figures = {"lost": lost.mean(), "lost_p95": np.percentile(lost, 95), "lost_max": lost.max(),
                       "extra": extra.mean(), "photos": len(lost)}  # fmt: skip
            per_seed.setdefault(key, []).append({k: float(v) for k, v in figures.items()})
            print(f"seed {seed} {key:16s} lost {lost.mean():6.2%} (p95 {figures['lost_p95']:6.2%}, "
                  f"max {lost.max():6.2%})  extra {extra.mean():6.2%}  photos {len(lost)}")  # fmt: skip
    print("\nmean ± sd over seeds")
    for key, rows in per_seed.items():
        lost = np.array([r["lost"] for r in rows])
        extra = np.array([r["extra"] for r in rows])
        print(f"{key:16s} lost {lost.mean():6.2%} ± {lost.std(ddof=1) if len(lost) > 1 else 0:.2%}"
              f"   extra {extra.mean():6.2%} ± {extra.std(ddof=1) if len(extra) > 1 else 0:.2%}")  # fmt: skip
    (args.out / "single-mask.json").write_text(json.dumps(per_seed, indent=2))
    worst_all.sort(key=lambda t: -t[0])
    tiles = [cv2.resize(o, (128, 128), interpolation=cv2.INTER_NEAREST) for _, o in worst_all[:24]]
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % 8)
    sheet = np.concatenate(
        [np.concatenate(tiles[i : i + 8], 1) for i in range(0, len(tiles), 8)], 0
    )
    cv2.imwrite(str(args.out / "worst-raking.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(
        f"wrote {args.out / 'single-mask.json'} and worst-raking.png (red: coin lost, blue: backdrop kept)"
    )


if __name__ == "__main__":
    main()
