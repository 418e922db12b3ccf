"""The procedural coin catalog: hierarchy, determinism, dies, and per-coin identity features."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rig.sim.coins import CoinCatalog, UnknownCoin, Variation
from rig.sim.relief import clear_cache, coin_surface, die_relief, flan_radius_map

GRID = 96


def test_ids_records_and_hierarchy() -> None:
    catalog = CoinCatalog(seed=3, rulers=3, types=7, coins=12, dies_per_design=2)
    ids = catalog.coin_ids()
    assert ids[0] == "SIM-0000" and ids[-1] == "SIM-0011" and len(ids) == 12
    assert {t.ruler for t in catalog.types} == {0, 1, 2}  # every ruler has a type
    for coin_id in ids:
        coin = catalog.coin(coin_id)
        assert coin.ruler == catalog.types[coin.type_index].ruler
        assert all(0 <= d < 2 for d in coin.dies.values())
        record = catalog.record(coin_id)
        assert set(record) == {"coin_id", "collection", "ruler", "type", "catalog_ref", "notes"}
        assert record["ruler"] == catalog.rulers[coin.ruler].name
        assert record["catalog_ref"].startswith(f"RIC-SIM {coin.ruler + 1}.")
        json.dumps(record)  # a coins.jsonl line


@pytest.mark.parametrize("bad", ["SIM-0012", "SIM-12", "XYZ", "SIM-9999"])
def test_unknown_coin(bad: str) -> None:
    catalog = CoinCatalog(coins=12)
    with pytest.raises(UnknownCoin, match=r"SIM-0000\.\.SIM-0011"):
        catalog.coin(bad)


def test_deterministic_and_independent_of_catalog_size() -> None:
    small = CoinCatalog(seed=5, rulers=2, types=4, coins=6)
    large = CoinCatalog(seed=5, rulers=2, types=4, coins=40)
    other = CoinCatalog(seed=6, rulers=2, types=4, coins=6)
    assert small.coin("SIM-0004") == large.coin("SIM-0004")
    assert small.record("SIM-0004") == large.record("SIM-0004")
    assert [other.coin(c) for c in other.coin_ids()] != [small.coin(c) for c in small.coin_ids()]
    first = coin_surface(small, "SIM-0004", "reverse", GRID)
    clear_cache()
    again = coin_surface(
        CoinCatalog(seed=5, rulers=2, types=4, coins=6), "SIM-0004", "reverse", GRID
    )
    assert first is not again
    assert np.array_equal(first.height, again.height)
    assert np.array_equal(first.albedo, again.albedo)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_dies_of_one_design_are_alike_but_not_identical() -> None:
    catalog = CoinCatalog(seed=0, rulers=2, types=2, coins=4, dies_per_design=2)
    die0 = die_relief(catalog, "obverse", 0, 0, 128)
    die1 = die_relief(catalog, "obverse", 0, 1, 128)
    other_ruler = die_relief(catalog, "obverse", 1, 0, 128)
    assert not np.array_equal(die0, die1)
    assert _corr(die0, die1) > _corr(die0, other_ruler)
    assert _corr(die0, die1) > 0.3


def test_flan_is_irregular_and_reverse_outline_is_mirrored() -> None:
    catalog = CoinCatalog(seed=2, coins=8)
    coin = catalog.coin("SIM-0001")
    theta = np.linspace(-np.pi, np.pi, 360, endpoint=False)
    radius = flan_radius_map(coin, "obverse", theta)
    assert radius.std() > 0.005  # not a circle
    assert np.allclose(flan_radius_map(coin, "reverse", np.pi - theta), radius)
    flat = CoinCatalog(seed=2, coins=8, variation=Variation.none()).coin("SIM-0001")
    assert np.allclose(flan_radius_map(flat, "obverse", theta), 1.0)


def test_coins_from_the_same_dies_differ_only_through_variation() -> None:
    for variation, identical in ((Variation(), False), (Variation.none(), True)):
        catalog = CoinCatalog(
            seed=4, rulers=1, types=1, coins=10, dies_per_design=1, variation=variation
        )
        a, b = (coin_surface(catalog, c, "obverse", GRID) for c in ("SIM-0000", "SIM-0001"))
        assert np.array_equal(a.height, b.height) is identical
        assert np.array_equal(a.albedo, b.albedo) is identical


def test_switching_one_feature_off_keeps_the_others() -> None:
    full = CoinCatalog(seed=7, coins=5).coin("SIM-0002")
    no_damage = CoinCatalog(seed=7, coins=5, variation=Variation(damage=False)).coin("SIM-0002")
    assert no_damage.marks == {"obverse": (), "reverse": ()} and no_damage.edge_bites == ()
    assert (no_damage.wear, no_damage.flan_harmonics, no_damage.patina) == (
        full.wear,
        full.flan_harmonics,
        full.patina,
    )


def test_identity_marks_are_where_the_damage_is() -> None:
    catalog = CoinCatalog(seed=1, coins=6)
    surface = coin_surface(catalog, "SIM-0003", "obverse", 160)
    assert surface.identity.max() == pytest.approx(1.0)
    coin = catalog.coin("SIM-0003")
    assert coin.marks["obverse"], "this coin was drawn with scratches or nicks"
    # marks cover a small part of the coin, not all of it
    assert 0.01 < (surface.identity > 0.5).mean() < 0.3
    plain = CoinCatalog(seed=1, coins=6, variation=Variation.none())
    assert coin_surface(plain, "SIM-0003", "obverse", 160).identity.max() == 0.0
