"""The same-coin verdict outside the training domain: run-only against index-side thresholds.

For each seed, trains the recipe of tests/test_index_calibration.py (resnet-tiny on synthetic
colour captures, tests/synthetic_dataset.py) and evaluates it (RUN/verdict.json), unless runs are
given. Then, for each style, indexes both sides of N coins of one seed and searches with both
sides of N coins of another, none of them indexed (open set):

    grey        synthetic renders (the training data's drawing), upright, converted to grey
    twin        auction-catalog photographs of the digital twin (rig.sim.catalog_style)
    twin-grey   the same, converted to grey
    in-domain   captures of the run's test coins against the catalog images of its training coins

and prints, per run and as mean ± sd over runs: how often search says `match` (the stricter of
the run's and the index's thresholds), how often the run's thresholds alone would have, and the
share of queries flagged as unlike the run's validation photos.

    python benchmarks/verdict_domain.py --seeds 0,1,2 --out /tmp/verdict-domain
    python benchmarks/verdict_domain.py --run runs/demo --data data/demo --out /tmp/vd-demo
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from synthetic_dataset import Spec, _marks, render, write_dataset
from typer.testing import CliRunner

from pipeline.cli import app
from training.data import read_datasets
from training.fusion import Fusion
from training.imageio import load_photo
from training.run_folder import read_preprocess_settings, read_run_split
from training.search import Searcher, load_run_model, run_verdict
from training.search_eval import open_set_rates, picture_index

Picture = tuple[np.ndarray, dict[str, Any]]
SIZE = 48


def grey(image: np.ndarray) -> np.ndarray:
    """An RGB image converted to grey, kept three-channel."""
    return np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)


def synthetic(seed: int, coins: int) -> list[Picture]:
    """Grey, upright renders of both sides of `coins` synthetic coins (as the test draws them)."""
    rng = np.random.default_rng(seed)
    out: list[Picture] = []
    for n in range(coins):
        for side in ("obverse", "reverse"):
            marks = _marks(rng, SIZE)
            toning = (int(rng.integers(60, 230)), int(rng.integers(60, 230)), 90)
            rgb = render(
                marks,
                SIZE,
                angle=0.0,
                light="diffuse",
                offset=(0, 0),
                background=235,
                toning=toning,
            )
            out.append((grey(rgb), {"id": f"G{seed}-{n}/{side}", "coin_id": f"G{seed}-{n}"}))
    return out


def twin(seed: int, coins: int, cache: Path) -> list[Picture]:
    """Auction-catalog renders of both sides of `coins` twin coins (cached: 0.7 s each)."""
    from rig.sim.catalog_style import render_catalog_image
    from rig.sim.coins import CoinCatalog

    path = cache / f"twin-{seed}-{coins}.npz"
    if not path.is_file():
        catalog = CoinCatalog(seed=seed, coins=coins)
        images = [
            cv2.resize(
                render_catalog_image(catalog, c, s)[0], (160, 160), interpolation=cv2.INTER_AREA
            )
            for c in catalog.coin_ids()
            for s in ("obverse", "reverse")
        ]
        np.savez_compressed(path, images=np.stack(images))
    images = np.load(path)["images"]
    return [
        (im, {"id": f"T{seed}-{i}", "coin_id": f"T{seed}-{i // 2}"}) for i, im in enumerate(images)
    ]


def train(out: Path, seed: int) -> tuple[Path, Path]:
    """The test's recipe for one seed: a dataset, a run, its evaluation. Returns (run, data)."""
    runner = CliRunner()
    data = write_dataset(out / "ds", Spec(n_coins=20, size=SIZE, angles=(0.0, 120.0, 240.0)))
    run = out / f"run-{seed}"
    common = ["--workers", "1", "--cache-dir", str(out / "cache")]
    if not (run / "verdict.json").is_file():
        args = [
            "train", "--data", str(data), "--out", str(run), "--model", "resnet-tiny",
            "--image-size", "32", "--embedding-dim", "32", "--epochs", "8", "--steps-per-epoch", "6",
            "--rotations", "1",
            "--aug", "standard", "--split", "0.6,0.2,0.2", "--seed", str(seed), "--no-progress",
            *common,
        ]  # fmt: skip
        for command in (args, ["evaluate", "--run", str(run), *common]):
            result = runner.invoke(app, command)
            if result.exit_code != 0:
                raise SystemExit(result.output)
    return run, data


def in_domain(run: Path, data: Path) -> tuple[list[Picture], list[np.ndarray]]:
    """Catalog images of the run's training coins, captures of its test coins."""
    records = read_datasets([data])
    split = read_run_split(run, read_preprocess_settings(run).get("data") or [])
    index = [
        (load_photo(r.path), {"id": r.file_name, "coin_id": r.coin_id, "side": r.side})
        for r in records
        if split.has("train", r.coin) and (r.role == "catalog" or r.reference)
    ]
    queries = [
        load_photo(r.path)
        for r in records
        if split.has("test", r.coin) and r.role == "capture" and not r.reference
    ]
    return index, queries


def measure(run: Path, data: Path, coins: int, cache: Path) -> dict[str, dict[str, Any]]:
    """Open-set rates of one run for every style."""
    run_model = load_run_model(run)
    verdict = run_verdict(run)
    fusion = Fusion.load(run)  # the ranking search uses; the verdict reads the chosen cosine
    styles: dict[str, Callable[[int], list[Picture]]] = {
        "grey": lambda s: synthetic(s, coins),
        "twin": lambda s: twin(s, coins, cache),
        "twin-grey": lambda s: [(grey(im), item) for im, item in twin(s, coins, cache)],
    }
    out: dict[str, dict[str, Any]] = {}
    for name, make in styles.items():
        searcher = Searcher(picture_index(run_model, make(1000)), run_model, verdict, fusion)
        out[name] = open_set_rates(searcher, [im for im, _ in make(2000)])
        out[name]["index"] = searcher.index.calibration.summary()
    index, queries = in_domain(run, data)
    searcher = Searcher(picture_index(run_model, index), run_model, verdict, fusion)
    out["in-domain"] = open_set_rates(searcher, queries)
    return out


def main() -> None:
    """Train or take runs, measure every style, print per run and mean ± sd."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="training seeds of the test's recipe")
    parser.add_argument("--run", type=Path, action="append", help="measure these runs instead")
    parser.add_argument("--data", type=Path, help="the runs' dataset (with --run)")
    parser.add_argument("--coins", type=int, default=50, help="coins indexed, and coins queried")
    parser.add_argument("--out", type=Path, required=True, help="working folder (cached)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.run:
        if args.data is None:
            parser.error("--run needs --data")
        runs = [(run, args.data) for run in args.run]
    else:
        runs = [train(args.out, int(s)) for s in args.seeds.split(",")]
    results = [measure(run, data, args.coins, args.out) for run, data in runs]
    print(json.dumps(results, indent=1))
    keys = ("false_match", "false_match_run_only", "out_of_domain")
    print(f"{'style':10s} " + " ".join(f"{k:>24s}" for k in keys))
    for style in results[0]:
        cells = []
        for key in keys:
            values = [100 * float(r[style][key]) for r in results if r[style][key] is not None]
            cells.append(f"{np.mean(values):6.1f} ± {np.std(values):4.1f} % (n={len(values)})")
        print(f"{style:10s} " + " ".join(f"{c:>24s}" for c in cells))


if __name__ == "__main__":
    main()
