"""The issue's end-to-end search figures on a dataset: closed-set top-1, open-set false matches.

Held-out coins are split in two: the catalog images of one half are indexed (a), the other half
is left out of the index (b). Captures of (a) should find their own coin and side at rank 1;
captures of (b) have no right answer, so every `match` verdict on them is a false match. That
open-set rate is the figure a provenance researcher lives with, given both with the labels a
search gives (the stricter of the run's and the index's thresholds) and with the run's alone.
A sample of (a) queries is also run through the robustness transforms (rotated, rescaled,
off-centre, JPEG, grey).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.catalog import Source, entries_for
from training.data import Record, read_datasets
from training.fusion import Fusion
from training.imageio import load_photo
from training.index import CatalogIndex
from training.outline import OUTLINE_BINS
from training.robustness import top1_stability
from training.run_folder import SPLIT_FILE, read_preprocess_settings, read_run_split
from training.search import RunModel, Searcher, embed_crops, load_run_model, run_verdict
from training.search_errors import SearchError
from training.search_prep import cut_detected, prepare_image
from training.split import CoinKey


def _test_coins(run: Path, records: Sequence[Record]) -> list[CoinKey]:
    """Coins of the data the run neither trained nor validated on (every coin without a split).

    As `pipeline evaluate` chooses them: a coin is (collection, coin id), so a collection the
    run never saw is all test coins.
    """
    if not (run / SPLIT_FILE).is_file():
        return sorted({r.coin for r in records})
    data = read_preprocess_settings(run).get("data") or []
    split = read_run_split(run, data)
    return sorted({r.coin for r in records if not split.seen(r.coin)})


def _view(item: dict[str, Any]) -> str:
    """An index item's coin side, named as Record.view names it."""
    coin = CoinKey(str(item.get("collection", "")), str(item.get("coin_id")))
    return f"{coin}/{item.get('side')}"


def _catalog_index(
    run_model: RunModel, records: Sequence[Record], coins: set[CoinKey]
) -> CatalogIndex:
    """A flat index of every catalog (or reference) image of `coins`, one entry per coin found."""
    index = CatalogIndex(
        dim=int(run_model.model.config["embedding_dim"]), model=run_model.identity, kind="flat"
    )
    catalog = [r for r in records if r.coin in coins and (r.role == "catalog" or r.reference)]
    items, crops, outlines = [], [], []
    for r in catalog:
        image = load_photo(r.path)
        for entry in entries_for(
            Source(
                r.path,
                r.file_name,
                {"collection": r.collection, "coin_id": r.coin_id, "side": r.side},
            ),
            image,
        ):
            items.append(entry.item())
            cut = cut_detected(image, entry.coin, run_model.preprocess)
            crops.append(cut.crops[0])
            outlines.append(cut.outline)
    colour, grey = _embedded(run_model, crops)
    index.add(colour, items, _stacked(outlines), grey)
    return index


def _embedded(run_model: RunModel, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Crops' embeddings and their grey views, as `pipeline index` keeps them."""
    return embed_crops(run_model.model, crops), embed_crops(run_model.model, crops, grey=True)


def _stacked(outlines: Sequence[np.ndarray]) -> np.ndarray:
    """Outline profiles as one n×OUTLINE_BINS array (also when there are none)."""
    return np.stack(outlines) if outlines else np.zeros((0, OUTLINE_BINS), np.float32)


def picture_index(
    run_model: RunModel, pictures: Sequence[tuple[np.ndarray, dict[str, Any]]]
) -> CatalogIndex:
    """A flat index of in-memory pictures of one coin each (the largest found) and their items.

    Raises:
        NoCoinFound: a picture shows no coin.
    """
    crops, outlines = [], []
    for image, item in pictures:
        query = prepare_image(image, str(item.get("id")), run_model.preprocess)
        main = int(np.argmax([c.r for c in query.coins]))
        crops.append(query.crops[main])
        outlines.append(query.outlines[main])
    index = CatalogIndex(
        dim=int(run_model.model.config["embedding_dim"]), model=run_model.identity, kind="flat"
    )
    items = [dict(item) for _, item in pictures]
    colour, grey = _embedded(run_model, crops)
    index.add(colour, items, _stacked(outlines), grey)
    return index


def open_set_rates(searcher: Searcher, images: Sequence[np.ndarray]) -> dict[str, float | None]:
    """For query photos of coins not in the index: how often each verdict says `match`.

    `false_match` is what search says (the stricter of the run's and the index's thresholds),
    `false_match_run_only` what the run's verdict alone says, `out_of_domain` the share of
    queries the search flags as unlike the run's validation photos.
    """
    tops = [_best(searcher, image) for image in images]
    rates = _verdict_rates([], tops)
    return {
        "queries": len(tops),
        "false_match": rates["open_set_false_match_rate"],
        "false_match_run_only": rates.get("open_set_false_match_rate_run_only"),
        "possible_or_match": rates["open_set_possible_or_match_rate"],
        "out_of_domain": rates["open_set_out_of_domain"],
    }


def _best(searcher: Searcher, image: np.ndarray) -> dict[str, Any] | None:
    """The top candidate's view and labels, and the domain check, of a photo's main coin.

    None when no coin is found. `label` is what search says, `run_label` what the run's
    verdict alone would say (None without one).
    """
    try:
        results = searcher.search_image(image, "query", 1)
    except SearchError:
        return None
    main = max(results, key=lambda q: q.coin.r)  # the query's own coin, not a stray blob
    if not main.candidates:
        return None
    c = main.candidates[0]
    verdict = searcher.verdict
    return {
        "view": _view(c.item),
        "label": c.label,
        "run_label": verdict.label(c.score) if verdict else None,
        "outside": None if main.domain is None else main.domain.outside,
    }


def _sample(
    rng: random.Random, captures: Sequence[Record], coins: set[CoinKey], most: int
) -> list[Record]:
    """At most `most` captures of `coins`, drawn at random."""
    of_coins = [r for r in captures if r.coin in coins]
    return rng.sample(of_coins, min(most, len(of_coins)))


def _verdict_rates(
    closed_top: Sequence[dict[str, Any] | None], open_top: Sequence[dict[str, Any] | None]
) -> dict[str, float | None]:
    """Share of `match` (and `possible`) verdicts on left-out coins, and of `match` on indexed.

    `*_run_only` rates are what the run's thresholds alone would have said; `*_out_of_domain`
    the share of queries the search flagged as unlike the run's validation photos.
    """

    def share(
        tops: Sequence[dict[str, Any] | None], key: str, wanted: tuple[Any, ...]
    ) -> float | None:
        values = [t[key] if t else None for t in tops]
        if not values or (key == "outside" and all(v is None for v in values)):
            return None  # no photos, or a run without a validation reference to hold them to
        return float(np.mean([v in wanted for v in values]))

    rates = {
        "open_set_false_match_rate": share(open_top, "label", ("match",)),
        "open_set_possible_or_match_rate": share(open_top, "label", ("match", "possible")),
        "closed_set_match_rate": share(closed_top, "label", ("match",)),
        "open_set_out_of_domain": share(open_top, "outside", (True,)),
        "closed_set_out_of_domain": share(closed_top, "outside", (True,)),
    }
    if any(t and t["run_label"] for t in [*open_top, *closed_top]):
        rates["open_set_false_match_rate_run_only"] = share(open_top, "run_label", ("match",))
        rates["closed_set_match_rate_run_only"] = share(closed_top, "run_label", ("match",))
    return rates


def search_report(
    run: Path,
    data: Sequence[Path],
    *,
    seed: int = 0,
    max_queries: int = 400,
    robustness_photos: int = 40,
    outline: bool = True,
) -> dict[str, Any]:
    """Top-1 on indexed coins, false-match rate on coins left out, robustness of the top-1.

    With `outline` the ranking uses the run's outline weight (RUN/fusion.json) as search does;
    without, appearance alone.

    Raises:
        SearchError: no usable run, or too few held-out coins to split.
    """
    run_model = load_run_model(run)
    records = read_datasets(list(data))
    coins = _test_coins(run, records)
    if len(coins) < 2:
        raise SearchError(f"need at least 2 held-out coins to split, found {len(coins)}")
    rng = random.Random(seed)
    shuffled = rng.sample(coins, len(coins))
    indexed, left_out = set(shuffled[: len(coins) // 2]), set(shuffled[len(coins) // 2 :])
    index = _catalog_index(run_model, records, indexed)
    fusion = Fusion.load(run) if outline else None
    searcher = Searcher(index, run_model, run_verdict(run), fusion)

    captures = [r for r in records if r.role == "capture" and not r.reference]
    closed = _sample(rng, captures, indexed, max_queries)
    open_ = _sample(rng, captures, left_out, max_queries)
    closed_top = [_best(searcher, load_photo(r.path)) for r in closed]
    open_top = [_best(searcher, load_photo(r.path)) for r in open_]
    hits = [t is not None and t["view"] == r.view for t, r in zip(closed_top, closed, strict=True)]
    report: dict[str, Any] = {
        "indexed_coins": len(indexed),
        "left_out_coins": len(left_out),
        "catalog_entries": len(index),
        "closed_set_queries": len(closed),
        "closed_set_top1": float(np.mean(hits)) if hits else None,
        "open_set_queries": len(open_),
        "calibrated": searcher.verdict is not None,
        # the outline's weight in the ranking (training.fusion); 0: appearance alone
        "outline_weight": searcher.fusion.weight if searcher.fusion else 0.0,
        "index_calibration": index.calibration.summary(),
    }
    if searcher.bars is not None:
        report.update(_verdict_rates(closed_top, open_top))
    photos = [load_photo(r.path) for r in closed[:robustness_photos]]
    if photos:

        def top1(image: np.ndarray) -> str | None:
            found = _best(searcher, image)
            return None if found is None else str(found["view"])

        report["robustness_top1_unchanged"] = top1_stability(top1, photos)
    return report
