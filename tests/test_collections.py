"""Coins are told apart by collection and id, not by id alone (issue 15, item 6).

Every `rig simulate` collection names its coins SIM-0000, SIM-0001, ... whatever its seed, and
museums number theirs independently, so training on two such collections must keep the coins
apart, and evaluating on a collection the run never saw must use all of its coins.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from synthetic_dataset import Spec, write_dataset
from typer.testing import CliRunner

from dataset.reader import default_collection
from pipeline.cli import app
from pipeline.rig_cli.simulate import coin_line
from rig.sim.coins import CoinCatalog
from training.data import read_dataset, read_datasets
from training.errors import RunFolderError
from training.run_folder import read_run_split, read_split
from training.split import CoinKey, RunSplit, Split, split_coins

runner = CliRunner()
SPEC = Spec(n_coins=6, angles=(0.0, 180.0), lights=("diffuse",), size=32)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _twin(root: Path, seed: int) -> Path:
    """A collection as `rig simulate --seed SEED` writes it: the same ids, its seed's collection."""
    write_dataset(root, Spec(**{**SPEC.__dict__, "seed": seed}))
    catalog = CoinCatalog(seed=seed)
    coins = [json.loads(line) for line in (root / "coins.jsonl").read_text().splitlines()]
    lines = [{**c, "collection": catalog.collection} for c in coins]
    (root / "coins.jsonl").write_text("".join(json.dumps(c) + "\n" for c in lines))
    return root


def test_rig_simulate_names_a_collection_by_its_seed() -> None:
    lines = [coin_line(CoinCatalog(seed=seed), "SIM-0001") for seed in (0, 1)]
    assert [line["collection"] for line in lines] == ["sim-seed-0", "sim-seed-1"]
    # the same seed with other types strikes other coins under the same ids
    assert CoinCatalog(seed=0, types=3).collection != CoinCatalog(seed=0).collection


def test_where_a_dataset_records_its_collection(tmp_path: Path) -> None:
    plain = write_dataset(tmp_path / "plain", SPEC)
    assert (
        {r.collection for r in read_dataset(plain).records}
        == {"plain@2026-01-01T00:00:00Z"}
        == {default_collection(plain, "2026-01-01T00:00:00Z")}
    )
    header = json.loads((plain / "dataset.json").read_text())
    (plain / "dataset.json").write_text(json.dumps({**header, "collection": "Sawhill"}))
    assert {r.collection for r in read_dataset(plain).records} == {"Sawhill"}
    twin = _twin(tmp_path / "twin", 4)  # a coin's own line wins over the dataset's
    (twin / "dataset.json").write_text(json.dumps({**header, "collection": "Sawhill"}))
    records = read_dataset(twin).records
    assert {r.collection for r in records} == {"sim-seed-4"}
    assert records[0].view == f"sim-seed-4/{records[0].coin_id}/{records[0].side}"


def test_same_ids_in_two_collections_are_two_coins(tmp_path: Path) -> None:
    records = read_datasets([_twin(tmp_path / "a", 1), _twin(tmp_path / "b", 2)])
    assert len({r.coin_id for r in records}) == 6
    assert len({r.coin for r in records}) == 12 and len({r.view for r in records}) == 24
    split = split_coins([r.coin for r in records], (0.5, 0.25, 0.25), seed=0)
    assert len(split.train) + len(split.val) + len(split.test) == 12


@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=8), st.text(max_size=8)), unique=True, max_size=12
    )
)
def test_split_json_keeps_collection_and_id(coins: list[tuple[str, str]]) -> None:
    keys = tuple(CoinKey(*c) for c in coins)
    thirds = len(keys) // 3
    split = Split(keys[thirds:], keys[:thirds], ())
    back = RunSplit.from_json(json.loads(split.to_json()))
    assert back is not None and not back.legacy
    assert back.parts == {"train": set(split.train), "val": set(split.val), "test": set()}
    assert all(back.seen(k) for k in keys)
    assert not any(back.seen(CoinKey(k.collection + "x", k.coin_id)) for k in keys)


@pytest.mark.parametrize(
    "bad",
    [[], {"train": [], "val": []}, {"train": [[1, 2]], "val": [], "test": []},
     {"train": [["", "C1"]], "val": [], "test": []}, {"train": [["a"]], "val": [], "test": []}],
)  # fmt: skip
def test_a_damaged_split_is_refused(tmp_path: Path, bad: object) -> None:
    (tmp_path / "split.json").write_text(json.dumps(bad))
    with pytest.raises(RunFolderError, match="not a split"):
        read_split(tmp_path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run trained on two twin collections (seeds 1 and 2) that share every coin id."""
    tmp = tmp_path_factory.mktemp("collections")
    paths = {name: _twin(tmp / name, seed) for name, seed in (("a", 1), ("b", 2), ("c", 3))}
    run = tmp / "run"
    args = [
        "train", "--data", str(paths["a"]), "--data", str(paths["b"]), "--out", str(run),
        "--cache-dir", str(tmp / "cache"), "--model", "resnet-tiny", "--image-size", "32",
        "--batch-size", "16", "--epochs", "1", "--steps-per-epoch", "3", "--split", "0.5,0.17,0.33",
        "--seed", "0",
        "--no-progress", "--workers", "1",
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return {**paths, "run": run, "cache": tmp / "cache"}


def test_two_twin_collections_train_as_separate_classes(trained: dict[str, Path]) -> None:
    run = trained["run"]
    summary = json.loads((run / "summary.json").read_text())
    assert sum(summary["coins"].values()) == 12  # not 6: SYN-0000 of seed 1 is not of seed 2
    split = json.loads((run / "split.json").read_text())
    coins = [tuple(c) for part in ("train", "val", "test") for c in split[part]]
    assert len(coins) == len(set(coins)) == 12
    assert {c[0] for c in coins} == {"sim-seed-1", "sim-seed-2"}
    assert summary["train_views"] == 2 * len(split["train"])  # one class per coin side


def _evaluate(trained: dict[str, Path], run: Path, data: Path) -> tuple[str, dict]:
    args = ["evaluate", "--run", str(run), "--data", str(data)]
    result = runner.invoke(app, [*args, "--cache-dir", str(trained["cache"]), "--workers", "2"])
    assert result.exit_code == 0, result.output
    return result.output, json.loads((run / "eval-catalog" / "metrics.json").read_text())


def test_an_unseen_collection_is_evaluated_on_all_its_coins(trained: dict[str, Path]) -> None:
    output, metrics = _evaluate(trained, trained["run"], trained["c"])
    assert metrics["coins"] == 6  # all of them, though every id is also a training coin's
    assert metrics["overall"]["queries"] == 6 * 2 * 2
    assert metrics["collections"] == [
        {"collection": "sim-seed-3", "seen": False, "coins": 6, "held_out": 6}
    ]
    assert "collection sim-seed-3: not seen by the run; all its 6 coins evaluated" in output


def test_a_training_collection_is_evaluated_on_its_held_out_coins(
    trained: dict[str, Path],
) -> None:
    split = json.loads((trained["run"] / "split.json").read_text())
    held_out = [c for c in split["test"] if c[0] == "sim-seed-1"]
    assert held_out  # the seed gives collection a test coins: the case to check
    output, metrics = _evaluate(trained, trained["run"], trained["a"])
    assert metrics["coins"] == len(held_out)
    assert metrics["collections"][0]["seen"] is True
    assert f"its {len(held_out)} held-out coins (of 6) evaluated" in output


def test_a_run_from_before_collections_still_evaluates(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    old = tmp_path / "old-run"
    shutil.copytree(trained["run"], old)
    split = json.loads((old / "split.json").read_text())
    bare = {part: sorted({c[1] for c in split[part]}) for part in ("train", "val", "test")}
    (old / "split.json").write_text(json.dumps(bare))  # ids only, as runs used to write it
    assert read_split(old).legacy
    # the ids meant coins of the run's own datasets, so of collections sim-seed-1 and -2 only
    resolved = read_run_split(old, [str(trained["a"]), str(trained["b"])])
    some = bare["train"][0]
    assert resolved.seen(CoinKey("sim-seed-1", some)) and resolved.seen(CoinKey("sim-seed-2", some))
    assert not resolved.seen(CoinKey("sim-seed-3", some))
    assert read_split(old).seen(CoinKey("anything", some))  # their datasets unknown: any
    _, metrics = _evaluate(trained, old, trained["c"])
    assert metrics["coins"] == 6  # seed 3 is none of the run's collections: all its coins
