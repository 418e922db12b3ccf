r"""The hierarchy's gain over reverse-only on twin collections whose rulers share reverse types.

Real imperial coinage reused reverse types (the same personification and legend) under several
emperors, each under its own catalogue number: the reverse alone cannot tell such types apart,
the obverse (the ruler) can. The twin does the same with `CoinCatalog(shared_reverses=F)`; this
benchmark measures what ruler → type classification (training.hierarchy) gains there, against
the same catalogs without sharing (`--shares 0.5,0`: the default share, then the control).

Collection shape: 4 rulers × 12 types (three rounds of four), 12 coins per type on average
(144 coins). With 4 rulers a type of a later round has three other rulers' designs to take, so
about half of the 8 later types share a design (4-6 types whose reverse design is another
ruler's) and half keep their own, a mix in which both the gain and the cost of the hierarchy
show; 3 types per ruler give the ruler classifier ~36 coins of each ruler to learn
portraits from. The catalog draws each coin's type at random, so types hold 6-29 coins: at 10
per type on average one fell to 4 (seed 0), which 5 folds would leave out. More rulers with the
same coins would starve the ruler classifier, which the hierarchy leans on.

Rulers are labelled by name and number (`Severvs #3`): the twin draws a name from 80, so two
rulers of one catalog can share it (seeds 1 and 2 do), where a real catalog names them apart
(Philip I and Philip II); by name alone those rulers, and their shared types, would merge.

A shared design comes from a ruler of the same metal where the catalog has one (a reused type
came on the same denomination: rig.sim.coins), so the reverse's toning does not tell such a
pair apart; before that rule a shared pair of two metals was told apart by the reverse alone.

Images: each coin side upright under two lights (top and raking north), cut out as training
cuts out a pose (benchmarks/explain.py's `pose_crops`), 64 px by default, rendered in a frame
twice the crop (`--render` sets it). The twin raises legible legends only where the coin is
~128 px across: `--image-size 96 --render 256` lets the ruler classifier read the ruler's name,
as a numismatist (and the second seed paper's obverse classifier) does; classifiers resnet-tiny with
`standard` augmentation, 5 class-balanced folds by coin. Per run it prints the progress; at the
end one Markdown row per (share, catalog seed): reverse-only, obverse-only and hierarchy
balanced accuracy, the hierarchy's gain per fold (mean ± sd), the paired t-test over folds and
the sign test over test pairs, and two diagnostics of reverse-only: the share of its errors that
take a type for its partner under another ruler (the errors sharing adds, which the obverse
settles), and how often it mixes up a shared pair whose rulers strike one metal and whose rulers
strike two (the twin tones both sides of a coin by its ruler's metal, so a reverse shows it);
then mean ± sd over seeds per share.

A CV run at 60 epochs takes ~14 min at 64 px on the shared 2-core machine (all six ~85 min),
~40 min at 96 px beside other work:

    .venv/bin/python benchmarks/hierarchy_shared.py --shares 0.5 --epochs 60 --image-size 96 \
        --render 256 --out runs/hier96          # the README's figure (3 runs)
    nice -n 10 .venv/bin/python benchmarks/hierarchy_shared.py --epochs 60 --out runs/hier-shared
    .venv/bin/python benchmarks/hierarchy_shared.py --tables-from runs/hier-shared/results.json
    .venv/bin/python benchmarks/hierarchy_shared.py --seeds 0 --shares 0.5 --coins-per-type 5 \
        --epochs 1 --folds 2   # a quick check that it runs (~30 s)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# one intra-op thread: on a shared 2-core machine a second one mostly waits (as explain.py)
os.environ.setdefault("OMP_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from explain import pose_crops  # the sibling benchmark's rig-style crops

from rig.sim.coins import SIDES, CoinCatalog
from training.cache import Preprocess
from training.hierarchy import (
    ClassifierSettings,
    LabelledImage,
    paired_line,
    run_hierarchy_cv,
)

LIGHTS = ["top", "raking_n"]
ROWS = ("reverse_only", "obverse_only", "hierarchy")


def twin_images(
    catalog: CoinCatalog, image_size: int, frame: int | None = None
) -> list[LabelledImage]:
    """Every coin side of `catalog` upright under LIGHTS, labelled with ruler and type.

    `frame`: the rendered view's side in px (default 2 × image_size); the coin spans half of
    it. The twin raises its legends' letters only where the coin is ~128 px across (a frame of
    256): below that they melt into the field, and a ruler is told by portrait and metal alone.
    """
    # (ruler: name and number, see the module docstring)
    prep = Preprocess(image_size=image_size)
    frame = frame or 2 * image_size
    images = []
    for coin in catalog.coin_ids():
        record = catalog.record(coin)
        ruler = f"{record['ruler']} #{catalog.coin(coin).ruler + 1}"
        for side in SIDES:
            crops, _ = pose_crops(catalog, coin, side, 0.0, LIGHTS, prep, frame)
            for pixels in crops.values():
                images.append(LabelledImage(pixels, ruler, record["type"], side, coin))
    return images


def one_run(args: argparse.Namespace, seed: int, share: float) -> dict[str, Any]:
    """Render one catalog and cross-validate the classifiers on it."""
    start = time.perf_counter()
    catalog = CoinCatalog(
        seed=seed,
        rulers=args.rulers,
        types=args.types,
        coins=args.types * args.coins_per_type,
        shared_reverses=share,
    )
    shared = sum(t.shared for t in catalog.types)
    images = twin_images(catalog, args.image_size, args.render)
    rendered = time.perf_counter() - start
    print(
        f"share {share:g}, seed {seed}: {catalog.n_coins} coins, {shared} of {args.types} types "
        f"share a design; rendered in {rendered:.0f} s, cross-validating ...",
        flush=True,
    )
    settings = ClassifierSettings(
        image_size=args.image_size, epochs=args.epochs, aug="standard", seed=seed
    )
    result = run_hierarchy_cv(images, settings, folds=args.folds, seed=seed, warn=print)
    seconds = time.perf_counter() - start
    accuracy = ", ".join(f"{k} {100 * result[k]['balanced_accuracy']:.1f} %" for k in ROWS)
    print(f"  {accuracy}\n  {paired_line(result)}; {seconds:.0f} s", flush=True)
    frame = args.render or 2 * args.image_size
    return {
        "share": share,
        "seed": seed,
        "shared_types": shared,
        "seconds": seconds,
        "render": frame,
        **result,
    }


def _pct(values: list[float], sign: str = "") -> str:
    mean = 100 * statistics.mean(values)
    sd = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:{sign}.1f} ± {sd:.1f}"


def _share_of(fraction: float) -> str:
    return "–" if math.isnan(fraction) else f"{100 * fraction:.0f} %"


def partner_errors(summary: dict[str, Any]) -> float:
    """The share of a confusion matrix's errors that take a type for itself under another ruler.

    Only these does the obverse alone settle; the others are confusions of two designs.
    """
    confusion = np.asarray(summary["confusion"], float)
    errors = confusion.sum() - np.trace(confusion)
    return float(confusion[_partners(summary["labels"])].sum() / errors) if errors else 0.0


def _partners(labels: list[str]) -> np.ndarray:
    """[i, j]: classes i and j are one type under two rulers (type_class's `TYPE [RULER]`)."""
    names = np.array([str(label).rsplit(" [", 1)[0] for label in labels])
    return np.equal.outer(names, names) & ~np.eye(len(names), dtype=bool)


def partner_mixups(run: dict[str, Any], rulers: int) -> dict[str, float]:
    """How often reverse-only takes a shared type for its partner: rulers of one metal or two.

    Of a shared type's test pairs that reverse-only gives to the type or to a partner, the
    fraction given to the partner (0.5: cannot tell them apart). The twin tones a coin by its
    ruler's metal on both sides, so a reverse shows its ruler's metal.
    """
    catalog = CoinCatalog(seed=run["seed"], rulers=rulers, types=rulers)  # rulers only
    labels = run["reverse_only"]["labels"]
    metal = [
        catalog.rulers[int(str(label).rsplit("#", 1)[1].rstrip("]")) - 1].metal for label in labels
    ]
    confusion = np.asarray(run["reverse_only"]["confusion"], float)
    partners, right = _partners(labels), np.diag(confusion)[:, None]
    same_metal = np.equal.outer(np.array(metal), np.array(metal))
    out = {}
    for name, pick in (
        ("same_metal", partners & same_metal),
        ("other_metal", partners & ~same_metal),
    ):
        mixed = confusion[pick].sum()
        kept = np.broadcast_to(right, confusion.shape)[pick].sum()
        out[name] = float(mixed / (mixed + kept)) if mixed + kept else float("nan")
    return out


def print_table(runs: list[dict[str, Any]], rulers: int) -> None:
    """One Markdown row per run, then mean ± sd over seeds per share."""
    print(
        "\n| share | seed | epochs | px (coin in frame) | shared types | reverse only (type) | obverse only (ruler) "
        "| hierarchy (type) | gain per fold | t-test p | sign-test p | reverse errors on a partner "
        "| partner mix-ups, one metal / two |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        mixups = partner_mixups(r, rulers)
        paired = r["hierarchy_vs_reverse"]
        cells = [f"{100 * r[k]['balanced_accuracy']:.1f} %" for k in ROWS]
        gain = f"{100 * paired['fold_gain_mean']:+.1f} ± {100 * paired['fold_gain_std']:.1f}"
        print(
            f"| {r['share']:g} | {r['seed']} | {r['settings']['epochs']} | {_pixels(r)} "
            f"| {r['shared_types']} | {' | '.join(cells)} "
            f"| {gain} | {paired['fold_t_test_p']:.2g} | {paired['sign_test_p']:.2g} "
            f"| {100 * partner_errors(r['reverse_only']):.0f} % "
            f"| {_share_of(mixups['same_metal'])} / {_share_of(mixups['other_metal'])} |"
        )
    print("\nMean ± sd over catalog seeds (balanced accuracy, %; gain in points):\n")
    print("| share | epochs | px | seeds | reverse only | obverse only | hierarchy | gain |")
    print("|---|---|---|---|---|---|---|---|")
    for share, epochs, px in dict.fromkeys(_group(r) for r in runs):
        mine = [r for r in runs if _group(r) == (share, epochs, px)]
        cells = [_pct([r[k]["balanced_accuracy"] for r in mine]) for k in ROWS]
        gain = _pct([r["hierarchy_vs_reverse"]["fold_gain_mean"] for r in mine], "+")
        print(f"| {share:g} | {epochs} | {px} | {len(mine)} | {' | '.join(cells)} | {gain} |")


def _pixels(run: dict[str, Any]) -> str:
    """`crop (coin across in the render)`: runs before --render rendered 128 px frames."""
    size = run["settings"]["image_size"]
    return f"{size} ({run.get('render', 128) // 2})"


def _group(run: dict[str, Any]) -> tuple[float, int, str]:
    return run["share"], run["settings"]["epochs"], _pixels(run)


def _numbers(text: str, kind: type) -> list[Any]:
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError as error:
        raise SystemExit(
            f"error: not a comma-separated list of {kind.__name__}: {text!r}"
        ) from error


def main() -> None:
    """Parse the flags, run every (share, seed), print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="catalog seeds, comma-separated")
    parser.add_argument("--shares", default="0.5,0", help="shared_reverses values to measure")
    parser.add_argument("--rulers", type=int, default=4)
    parser.add_argument("--types", type=int, default=12)
    parser.add_argument("--coins-per-type", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=60, help="per classifier and fold")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument(
        "--render",
        type=int,
        default=None,
        help="rendered frame side in px, the coin half of it (default: 2 x image size)",
    )
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json")
    parser.add_argument(
        "--tables-from",
        type=Path,
        nargs="+",
        default=None,
        help="print the tables of earlier runs' results.json files (runs nothing)",
    )
    args = parser.parse_args()
    if args.tables_from:
        saved = [run for path in args.tables_from for run in json.loads(path.read_text())]
        order = sorted(saved, key=lambda r: (_group(r)[1:], -r["share"], r["seed"]))
        print_table(order, args.rulers)
        return
    seeds, shares = _numbers(args.seeds, int), _numbers(args.shares, float)
    if not seeds or not shares or any(not 0 <= s <= 1 for s in shares):
        raise SystemExit("error: give at least one seed, and shares in 0..1")
    runs = [one_run(args, seed, share) for share in shares for seed in seeds]
    print_table(runs, args.rulers)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(runs, indent=2) + "\n")
        print(f"\nwrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
