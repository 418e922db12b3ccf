"""`pipeline benchmark`: every cell trained per split seed, rows as mean ± sd, resumable."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from synthetic_dataset import Spec, write_dataset
from typer.testing import CliRunner

from pipeline.cli import app
from training.benchmark import SCORE_FILE, summarize

runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(
        tmp_path_factory.mktemp("bench") / "ds",
        Spec(n_coins=10, angles=(0.0, 180.0), lights=("diffuse",), size=32),
    )


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "benchmark", "--data", str(data), "--models", "resnet-tiny", "--aug", "none,standard",
        "--train-on", "catalog", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8",
        "--image-size", "32", "--split", "0.5,0.2,0.3", "--out", str(out), *extra,
    ]  # fmt: skip


def test_each_row_is_the_mean_of_its_seeds_and_a_rerun_trains_nothing(
    data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    result = runner.invoke(app, _args(data, out, "--seeds", "0,1"))
    assert result.exit_code == 0, result.output
    runs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert runs == [
        "resnet-tiny-none-catalog-seed0", "resnet-tiny-none-catalog-seed1",
        "resnet-tiny-standard-catalog-seed0", "resnet-tiny-standard-catalog-seed1",
    ]  # fmt: skip
    report = json.loads((out / "benchmark.json").read_text())
    assert [(r["aug"], r["seed"]) for r in report["runs"]] == [
        ("none", 0), ("none", 1), ("standard", 0), ("standard", 1)
    ]  # fmt: skip
    for row in report["rows"]:
        values = row["capture_top1"]["values"]
        assert len(values) == 2 and row["seeds"] == [0, 1]
        assert row["capture_top1"]["mean"] == pytest.approx(sum(values) / 2)
    # the two seeds hold out different coins
    splits = [json.loads((out / r / "split.json").read_text())["test"] for r in runs[:2]]
    assert splits[0] != splits[1]
    table = (out / "benchmark.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| resnet-tiny")]
    assert len(rows) == 2 and all(re.search(r"\d+\.\d ± \d+\.\d %", r) for r in rows)

    stamps = {r: (out / r / SCORE_FILE).stat().st_mtime_ns for r in runs}
    again = runner.invoke(app, _args(data, out, "--seeds", "0,1"))
    assert again.exit_code == 0, again.output
    assert {r: (out / r / SCORE_FILE).stat().st_mtime_ns for r in runs} == stamps
    assert json.loads((out / "benchmark.json").read_text())["rows"] == report["rows"]

    # a damaged score file is not a result: that run is trained and scored again, the rest kept
    (out / runs[0] / SCORE_FILE).write_text("{not json")
    third = runner.invoke(app, _args(data, out, "--seeds", "0,1"))
    assert third.exit_code == 0, third.output
    assert set(json.loads((out / runs[0] / SCORE_FILE).read_text())) == {
        "augmented_catalog_top1", "capture_top1"
    }  # fmt: skip
    assert all((out / r / SCORE_FILE).stat().st_mtime_ns == stamps[r] for r in runs[1:])


@pytest.mark.parametrize("seeds", ["", "0,0", "a", "-1"])
def test_bad_seeds_are_one_line(data: Path, tmp_path: Path, seeds: str) -> None:
    result = runner.invoke(app, _args(data, tmp_path / "b", "--seeds", seeds))
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and "--seeds" in result.output
    assert not (tmp_path / "b").exists()


def test_summary_of_one_seed_has_no_spread() -> None:
    rows = [{"model": "m", "aug": "a", "train_on": "r", "seed": 3,
             "augmented_catalog_top1": 0.5, "capture_top1": 0.25}]  # fmt: skip
    (row,) = summarize(rows)
    assert row["capture_top1"] == {"mean": 0.25, "sd": 0.0, "values": [0.25]}
    assert row["seeds"] == [3]
