"""Reverse designs shared between rulers (the twin), and a type under two rulers (the hierarchy)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli_support import UserError
from pipeline.rig_cli.app import app
from pipeline.rig_cli.simulate import check_same_simulation, make_catalog, simulation_config
from rig.config import SimulationConfig, load_config
from rig.sim.coins import DEFAULT_SHARED_REVERSES, CoinCatalog
from rig.sim.relief import die_relief
from training.hierarchy import (
    Classifier,
    ClassifierSettings,
    LabelledImage,
    LabelSpace,
    cross_validate,
    fold_t_test_p,
    group_coins,
    paired_line,
    type_class,
)
from training.hierarchy_plot import short_label
from training.hierarchy_run import HierarchyModel, load_hierarchy_run, save_hierarchy_run


def _digest(rows: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


# ------------------------------------------------------------------------------------ the twin

# Digests of every type and every coin's record, and one reverse die's relief, as the catalog
# made them before reverse designs could be shared (commit d37fe68): share 0 must change none.
# (The collection then was the first name; share 0 is now named as not the default share.)
BEFORE_SHARING = [
    (
        {"seed": 0},
        ("sim-seed-0", "sim-seed-0-r3-t6-d2-s0"),
        "66ca00008a973dfd",
        "2323b5b78e010177",
        404.8450622558594,
    ),
    (
        {"seed": 3, "rulers": 4, "types": 12, "coins": 40, "dies_per_design": 3},
        ("sim-seed-3-r4-t12-d3", "sim-seed-3-r4-t12-d3-s0"),
        "3308518ac960eb97",
        "fcd7630aa13b2e11",
        271.9499816894531,
    ),
]


@pytest.mark.parametrize(("shape", "collection", "types", "records", "relief"), BEFORE_SHARING)
def test_share_0_makes_exactly_the_catalog_made_before_sharing(
    shape: dict[str, int],
    collection: tuple[str, str],
    types: str,
    records: str,
    relief: float,
) -> None:
    catalog = CoinCatalog(**shape, shared_reverses=0.0)
    assert all(t.design == t.index for t in catalog.types)
    before = [{k: v for k, v in asdict(t).items() if k != "design"} for t in catalog.types]
    assert _digest(before) == types
    # another share is another collection; every other field of every record is unchanged
    assert catalog.collection == collection[1]
    lines = [{**catalog.record(c), "collection": collection[0]} for c in catalog.coin_ids()]
    assert _digest(lines) == records
    last = len(catalog.types) - 1
    assert float(die_relief(catalog, "reverse", last, 1, 64).sum()) == pytest.approx(relief)


def test_share_0_default_shape_names_its_share_and_default_keeps_the_plain_name() -> None:
    assert CoinCatalog(seed=0, shared_reverses=0.0).collection == "sim-seed-0-r3-t6-d2-s0"
    assert CoinCatalog(seed=0).collection == "sim-seed-0"
    assert CoinCatalog(seed=0, types=12).collection == "sim-seed-0-r3-t12-d2"
    assert CoinCatalog(seed=0).key != CoinCatalog(seed=0, shared_reverses=0.0).key


def test_share_1_gives_every_later_type_another_rulers_design() -> None:
    for seed in range(5):
        catalog = CoinCatalog(seed=seed, rulers=3, types=6, shared_reverses=1.0)
        assert [t.shared for t in catalog.types] == [False] * 3 + [True] * 3
        for t in catalog.types[3:]:
            source = catalog.types[t.design]
            assert not source.shared and source.ruler != t.ruler
        for ruler in range(3):  # a ruler never strikes one design under two of its numbers
            designs = [t.design for t in catalog.types if t.ruler == ruler]
            assert len(designs) == len(set(designs))


def test_a_shared_design_comes_from_a_ruler_of_the_same_metal_where_there_is_one() -> None:
    same = other = 0
    for seed in range(40):
        catalog = CoinCatalog(seed=seed, rulers=4, types=12, shared_reverses=1.0)
        metal = [r.metal for r in catalog.rulers]
        for t in catalog.types:
            if not t.shared:
                continue
            before = catalog.types[: t.index]
            mine = [u for u in before if u.ruler == t.ruler]
            struck = {u.design for u in mine} | {(u.legend, u.figure) for u in mine}
            # the designs it could take: another ruler's own, not one this ruler already strikes
            open_designs = [
                u
                for u in before
                if not u.shared
                and u.ruler != t.ruler
                and u.index not in struck
                and (u.legend, u.figure) not in struck
            ]
            alike = any(metal[u.ruler] == metal[t.ruler] for u in open_designs)
            taken = metal[catalog.types[t.design].ruler] == metal[t.ruler]
            assert taken == alike, (seed, t.index)  # the same denomination whenever it can
            same, other = same + taken, other + (not taken)
    assert same > 100 and other > 100  # both cases came up, many times


def test_a_shared_type_has_the_design_but_its_own_number_ruler_and_dies() -> None:
    catalog = CoinCatalog(seed=1, rulers=3, types=6, coins=60, shared_reverses=1.0)
    shared = catalog.types[3]
    source = catalog.types[shared.design]
    assert (shared.legend, shared.figure, shared.params) == (
        source.legend,
        source.figure,
        source.params,
    )
    assert shared.catalog_ref != source.catalog_ref and shared.ruler != source.ruler
    assert catalog.die("reverse", 3, 0) != catalog.die("reverse", source.index, 0)
    mine = catalog.record(catalog.coins_of_type(3)[0])
    theirs = catalog.record(catalog.coins_of_type(source.index)[0])
    assert mine["type"] == theirs["type"]  # one reverse type …
    assert mine["catalog_ref"] != theirs["catalog_ref"] and mine["ruler"] != theirs["ruler"]


def test_the_share_of_later_types_follows_the_setting() -> None:
    for share in (0.25, 0.6):
        drawn = [
            t.shared
            for seed in range(12)
            for t in CoinCatalog(seed=seed, rulers=4, types=44, shared_reverses=share).types[4:]
        ]
        # 480 later types: the binomial sd of the fraction is ~0.02 (sources never run out here)
        assert abs(np.mean(drawn) - share) < 0.07


@pytest.mark.parametrize("bad", [-0.01, 1.01, math.nan])
def test_a_share_outside_0_to_1_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="shared_reverses"):
        CoinCatalog(shared_reverses=bad)


def test_a_shared_reverse_is_its_sources_relief_up_to_die_jitter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    catalog = CoinCatalog(seed=1, rulers=3, types=6, shared_reverses=1.0)
    shared = catalog.types[3]
    source = catalog.types[shared.design]
    mine = die_relief(catalog, "reverse", shared.index, 0, 96)
    theirs = die_relief(catalog, "reverse", source.index, 0, 96)
    unrelated = [
        die_relief(catalog, "reverse", t.index, 0, 96)
        for t in catalog.types
        if t.figure != source.figure and t.legend != source.legend
    ]
    assert unrelated
    assert _corr(mine, theirs) > 0.85
    assert all(_corr(mine, theirs) > _corr(mine, other) + 0.2 for other in unrelated)
    # given the same die jitter, the two reliefs are the same pixels: the design is shared
    die = catalog.die
    monkeypatch.setattr(catalog, "die", lambda side, design, index: replace(die(side, 0, index)))
    a = die_relief(catalog, "reverse", shared.index, 1, 64)
    b = die_relief(catalog, "reverse", source.index, 1, 64)
    assert np.array_equal(a, b)


def test_the_simulation_config_carries_the_share_to_the_catalog(tmp_path: Path) -> None:
    assert SimulationConfig().shared_reverses == DEFAULT_SHARED_REVERSES
    base = load_config(Path("sim"))
    config = simulation_config(base, coins=4, types=6, seed=0, image_size=32, shared_reverses=0.0)
    assert config.simulation is not None and config.simulation.shared_reverses == 0.0
    assert make_catalog(config).shared_reverses == 0.0
    kept = simulation_config(base, coins=4, types=6, seed=0, image_size=32)
    assert make_catalog(kept).shared_reverses == DEFAULT_SHARED_REVERSES
    with pytest.raises(UserError, match="--shared-reverses"):
        simulation_config(base, coins=4, types=6, seed=0, image_size=32, shared_reverses=2.0)
    result = CliRunner().invoke(
        app, ["simulate", "--shared-reverses", "1.5", "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "--shared-reverses must lie in 0..1" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def _folder(root: Path, catalog: CoinCatalog, collection: str | None = None) -> Path:
    """A dataset folder holding only the coins.jsonl lines of `catalog`'s coins."""
    root.mkdir(parents=True)
    header = {"format": "coinrig-dataset", "version": 1, "created": "2026-01-01T00:00:00Z"}
    (root / "dataset.json").write_text(json.dumps(header))
    lines = []
    for coin_id in catalog.coin_ids():
        line = catalog.record(coin_id)
        lines.append(json.dumps({**line, "collection": collection or line["collection"]}))
    (root / "coins.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_resuming_refuses_a_folder_of_another_share(tmp_path: Path) -> None:
    config = simulation_config(load_config(Path("sim")), coins=24, types=6, seed=0, image_size=32)
    catalog = make_catalog(config)
    check_same_simulation(_folder(tmp_path / "same", catalog), catalog, config)
    unshared = CoinCatalog(seed=0, coins=24, shared_reverses=0.0)
    with pytest.raises(UserError, match="--shared-reverses"):
        check_same_simulation(_folder(tmp_path / "s0", unshared), catalog, config)
    # a folder simulated before designs were shared names the default collection, but the coins
    # of its later types carry their own designs' type names
    with pytest.raises(UserError, match="has type"):
        check_same_simulation(_folder(tmp_path / "old", unshared, "sim-seed-0"), catalog, config)


# ------------------------------------------------------------------------------- the hierarchy


def _images(coins_per_class: int = 5) -> list[LabelledImage]:
    """Two rulers, each with VIRTVS AVG and its own second type; one 1×1 image per side.

    A pixel names what is visible: the obverse its ruler, the reverse its design, the same
    for both rulers' VIRTVS AVG; coins `k % 4 == 3` have a worn obverse (value 9) that shows no
    ruler, so the hierarchy's gain differs from fold to fold.
    """
    designs = {"VIRTVS AVG": 0, "PAX AVG": 1, "SOLI INVICTO": 2}
    classes = [("Aurelian", "VIRTVS AVG"), ("Probus", "VIRTVS AVG")]
    classes += [("Aurelian", "SOLI INVICTO"), ("Probus", "PAX AVG")]
    out = []
    for ruler, ctype in classes:
        for k in range(coins_per_class):
            coin = f"{ruler}-{ctype}-{k}"
            obverse = 9 if k % 4 == 3 else ["Aurelian", "Probus"].index(ruler)
            for side, value in (("obverse", obverse), ("reverse", designs[ctype])):
                image = np.full((1, 1, 3), value, np.uint8)
                out.append(LabelledImage(image, ruler, ctype, side, coin))
    return out


def lookup_predictor(
    train: list[np.ndarray], labels: list[int], classes: int, test: list[np.ndarray]
) -> np.ndarray:
    """A Predictor that learns p(class | pixel value) by counting; unseen values: uniform."""
    counts: dict[int, np.ndarray] = {}
    for image, label in zip(train, labels, strict=True):
        counts.setdefault(int(image[0, 0, 0]), np.zeros(classes))[label] += 1
    uniform = np.full(classes, 1.0 / classes)
    return np.array([_normalised(counts.get(int(im[0, 0, 0]), uniform)) for im in test])


def _normalised(row: np.ndarray) -> np.ndarray:
    return row / row.sum()


def test_a_type_under_two_rulers_is_two_classes() -> None:
    coins = group_coins(_images(coins_per_class=2))
    space = LabelSpace.of(coins)
    assert space.types == sorted(
        [
            "PAX AVG [Probus]",
            "SOLI INVICTO [Aurelian]",
            "VIRTVS AVG [Aurelian]",
            "VIRTVS AVG [Probus]",
        ]
    )
    assert [space.rulers[r] for r in space.ruler_of_type] == [
        "Probus",
        "Aurelian",
        "Aurelian",
        "Probus",
    ]
    assert type_class("Probus", "VIRTVS AVG") in space.type_index


def test_cross_validation_tests_the_gain_fold_by_fold() -> None:
    result = cross_validate(_images(coins_per_class=8), lookup_predictor, folds=4, seed=1)
    assert result["types"] == 4 and result["rulers"] == 2
    paired = result["hierarchy_vs_reverse"]
    hierarchy, reverse = result["hierarchy"]["per_fold"], result["reverse_only"]["per_fold"]
    assert paired["fold_t_test_p"] == pytest.approx(fold_t_test_p(hierarchy, reverse))
    # reverse-only cannot tell the two VIRTVS AVG apart; the obverse can, where it is legible
    assert paired["fold_gain_mean"] > 0.1 and paired["fold_t_test_p"] < 0.05
    assert "paired t-test over folds p = " in paired_line({"method": "lookup", **result})


def test_fold_t_test_by_hand() -> None:
    # differences 1, 2, 3: t = 2 / (1 / √3); with 2 degrees of freedom P(|T| > t) = 1 - t/√(t²+2)
    t = 2 * math.sqrt(3)
    assert fold_t_test_p([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]) == pytest.approx(
        1 - t / math.sqrt(t * t + 2)
    )
    assert fold_t_test_p([0.5, 0.7], [0.5, 0.7]) == 1.0  # no difference: no evidence
    assert fold_t_test_p([0.6, 0.8], [0.5, 0.7]) == 0.0  # the same gain in every fold
    assert fold_t_test_p([0.9], [0.1]) == 1.0  # one fold: no spread to test against


def test_a_run_saved_with_bare_type_names_loads_with_class_labels(tmp_path: Path) -> None:
    nets = [Classifier("resnet-tiny", 32, n) for n in (2, 3)]
    types = ["PAX AVG [Probus]", "SOLI INVICTO [Aurelian]", "VIRTVS AVG [Aurelian]"]
    model = HierarchyModel(nets[0], nets[1], ["Aurelian", "Probus"], types, [1, 0, 0])
    save_hierarchy_run(tmp_path, model, ClassifierSettings(image_size=32, aug="none"), {})
    assert load_hierarchy_run(tmp_path)[0].types == types
    # a run written before classes were (ruler, type) pairs: bare names, one ruler each
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("class_labels")
    config["types"] = ["PAX AVG", "SOLI INVICTO", "VIRTVS AVG"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert load_hierarchy_run(tmp_path)[0].types == types


def test_confusion_labels_are_cut_in_the_middle_so_the_ruler_stays() -> None:
    label = type_class("Probletianvs", "PROVIDENTIA DEORVM (standards)")
    cut = short_label(label)
    assert len(cut) == 32 and cut.endswith("[Probletianvs]") and cut.startswith("PROVIDENTIA")
    assert short_label("PAX AVG [Probus]") == "PAX AVG [Probus]"
