"""`pipeline classify`, `pipeline train --task hierarchy` and `pipeline evaluate` on its run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from synthetic_dataset import Spec, write_dataset
from typer.testing import CliRunner

from pipeline.cli import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")

runner = CliRunner()
RULER_OF = {"type-0": "A", "type-1": "A", "type-2": "B", "type-3": "B"}
TINY = ["--image-size", "32", "--epochs", "1", "--per-side", "1", "--aug", "none"]


def _relabel(data: Path, ruler_of: dict[str, str] = RULER_OF) -> Path:
    """Give the i-th coin of a synthetic dataset the (i mod n)-th type, under its ruler."""
    types, lines = list(ruler_of), []
    for i, line in enumerate((data / "coins.jsonl").read_text().splitlines()):
        row = json.loads(line)
        row["type"] = types[i % len(types)]
        row["ruler"] = ruler_of[row["type"]]
        lines.append(json.dumps(row))
    (data / "coins.jsonl").write_text("\n".join(lines) + "\n")
    return data


def _dataset(root: Path, coins: int, seed: int = 0) -> Path:
    spec = Spec(n_coins=coins, angles=(0.0,), lights=("diffuse",), seed=seed, first_id=100 * seed)
    return _relabel(write_dataset(root, spec))


def _last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


def test_classify_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["classify", "--data", str(tmp_path / "none")])
    assert result.exit_code == 2 and "dataset directory not found" in result.output
    data = write_dataset(tmp_path / "d", Spec(n_coins=3, angles=(0.0,), lights=("diffuse",)))
    result = runner.invoke(app, ["classify", "--data", str(data), "--folds", "5"])
    # 3 coins, 3 types: no type has 5 coins
    assert result.exit_code == 2 and "at least 2 types" in result.output.splitlines()[-1]


def test_classify_writes_table_results_and_confusion_pngs(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "d", coins=12)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["classify", "--data", str(data), "--image-size", "32", "--epochs", "1", "--folds", "3",
         "--per-side", "1", "--aug", "none", "--cache-dir", str(tmp_path / "cache"),
         "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "hierarchy (type)" in result.output and "sift" in result.output
    assert result.output.count("hierarchy − reverse-only") == 2  # the paired gain, each method
    saved = json.loads((out / "results.json").read_text())
    assert set(saved) == {"cnn", "sift"}
    for method in saved.values():
        assert method["coins"] == 12 and method["types"] == 4 and method["rulers"] == 2
        assert np.sum(method["hierarchy"]["confusion"]) == 12
    assert len(list(out.glob("*.png"))) == 6


def test_classify_takes_a_type_under_two_rulers_as_two_classes(tmp_path: Path) -> None:
    # the synthetic labels put each type under both rulers (coin i: type i mod 3, ruler i mod 2),
    # as real coinage reused a reverse type under several emperors: six classes of two coins
    data = write_dataset(tmp_path / "d", Spec(n_coins=12, angles=(0.0,), lights=("diffuse",)))
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["classify", "--data", str(data), *TINY, "--folds", "2", "--baseline", "none",
         "--cache-dir", str(tmp_path / "cache"), "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    cnn = json.loads((out / "results.json").read_text())["cnn"]
    assert cnn["types"] == 6 and cnn["rulers"] == 2 and cnn["dropped_types"] == []
    assert {"type-0 [ruler-0]", "type-0 [ruler-1]"} <= set(cnn["hierarchy"]["labels"])
    assert cnn["reverse_only"]["labels"] == cnn["hierarchy"]["labels"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A hierarchy run trained on 12 coins: (run, its data, the cache)."""
    root = tmp_path_factory.mktemp("hierarchy")
    data, cache, run = _dataset(root / "d", coins=12), root / "cache", root / "run"
    result = runner.invoke(
        app,
        ["train", "--task", "hierarchy", "--data", str(data), *TINY, "--folds", "3",
         "--baseline", "none", "--cache-dir", str(cache), "--out", str(run)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "hierarchy (type)" in result.output and "hierarchy − reverse-only" in result.output
    return run, data, cache


def test_train_hierarchy_cross_validates_and_saves_both_classifiers(
    trained: tuple[Path, Path, Path],
) -> None:
    run, data, _ = trained
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "hierarchy" and config["data"] == [str(data)]
    # a class is a (ruler, type) pair, named as training.hierarchy.type_class names it
    assert config["rulers"] == ["A", "B"]
    assert config["types"] == [f"{t} [{RULER_OF[t]}]" for t in sorted(RULER_OF)]
    assert [config["rulers"][r] for r in config["ruler_of_type"]] == ["A", "A", "B", "B"]
    assert len(config["training_coins"]) == 12 and config["settings"]["image_size"] == 32
    weights = sorted(p.name for p in (run / "checkpoints" / "hierarchy").iterdir())
    assert weights == ["ruler.safetensors", "type.safetensors"]
    cv = json.loads((run / "cv" / "results.json").read_text())
    assert set(cv) == {"cnn"} and cv["cnn"]["folds"] == 3 and cv["cnn"]["coins"] == 12
    assert np.sum(cv["cnn"]["hierarchy"]["confusion"]) == 12
    assert len(list((run / "cv").glob("*.png"))) == 3


def test_evaluate_a_hierarchy_run_on_other_coins(
    trained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    run, _, cache = trained
    other = _dataset(tmp_path / "other", coins=8, seed=5)
    result = runner.invoke(
        app, ["evaluate", "--run", str(run), "--data", str(other), "--cache-dir", str(cache)]
    )
    assert result.exit_code == 0, result.output
    assert "used in training" not in result.output
    report = json.loads((run / "eval-hierarchy" / "metrics.json").read_text())
    assert report["coins"] == 8 and report["pairs"] == 8 and report["trained_on"] == 0
    for key in ("reverse_only", "obverse_only", "hierarchy"):
        assert np.sum(report[key]["confusion"]) == 8
        assert 0.0 <= report[key]["balanced_accuracy"] <= 1.0
    assert len(list((run / "eval-hierarchy").glob("*.png"))) == 3


def test_evaluate_on_training_coins_warns_that_figures_are_optimistic(
    trained: tuple[Path, Path, Path],
) -> None:
    run, data, cache = trained
    result = runner.invoke(
        app, ["evaluate", "--run", str(run), "--data", str(data), "--cache-dir", str(cache)]
    )
    assert result.exit_code == 0, result.output
    assert "12 of 12 coins were used in training" in result.output


def test_hierarchy_bad_input_is_one_line_exit_2(
    trained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    run, data, cache = trained
    result = runner.invoke(app, ["train", "--task", "nonsense", "--data", str(data)])
    assert result.exit_code == 2 and "--task must be embedding or hierarchy" in result.output
    result = runner.invoke(app, ["evaluate", "--run", str(run)])
    assert result.exit_code == 2 and "give --data" in _last_line(result.output)
    # coins of types the run never saw: nothing to classify
    strangers = _relabel(
        write_dataset(tmp_path / "s", Spec(n_coins=4, angles=(0.0,), lights=("diffuse",))),
        {"type-9": "Z"},
    )
    result = runner.invoke(
        app, ["evaluate", "--run", str(run), "--data", str(strangers), "--cache-dir", str(cache)]
    )
    assert result.exit_code == 2
    assert "no coin with both sides imaged is of a type the run was trained on" in _last_line(
        result.output
    )
    # a type the run knows, under another ruler: another class (a type reused by another
    # emperor), which the run never saw, so it is named and left out
    moved = _relabel(
        write_dataset(tmp_path / "m", Spec(n_coins=4, angles=(0.0,), lights=("diffuse",))),
        {"type-0": "B"},
    )
    result = runner.invoke(
        app, ["evaluate", "--run", str(run), "--data", str(moved), "--cache-dir", str(cache)]
    )
    assert result.exit_code == 2
    assert "the run never saw: type-0 [B]" in result.output.splitlines()[0]


def test_runs_of_the_two_tasks_never_overwrite_each_other(
    trained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    run, data, _ = trained
    before = (run / "config.json").read_text()
    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(run)])
    assert result.exit_code == 2
    assert "holds a run of --task hierarchy" in _last_line(result.output)
    assert (run / "config.json").read_text() == before
    embedding = tmp_path / "embedding-run"
    embedding.mkdir()
    (embedding / "config.json").write_text(json.dumps({"model": "resnet-tiny"}))
    result = runner.invoke(
        app, ["train", "--task", "hierarchy", "--data", str(data), "--out", str(embedding)]
    )
    assert result.exit_code == 2
    assert "holds a run of --task embedding" in _last_line(result.output)
    result = runner.invoke(
        app, ["train", "--task", "hierarchy", "--data", str(data), "--resume", "--out", str(run)]
    )
    assert result.exit_code == 2 and "--task embedding only" in _last_line(result.output)


def test_bad_settings_are_refused_before_any_image_is_read(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "d", coins=4)
    cache = tmp_path / "cache"
    for flag, value, message in (
        ("--model", "resnet-9000", "unknown model 'resnet-9000'"),
        ("--aug", "sparkle", "unknown augmentation 'sparkle'"),
        ("--epochs", "0", "must be > 0"),
    ):
        result = runner.invoke(
            app,
            ["train", "--task", "hierarchy", "--data", str(data), flag, value,
             "--cache-dir", str(cache), "--out", str(tmp_path / "run")],
        )  # fmt: skip
        assert result.exit_code == 2 and message in _last_line(result.output)
    assert not cache.exists()  # nothing was decoded or cached


def test_a_damaged_run_is_one_line_exit_2(trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    run, data, cache = trained
    damaged = tmp_path / "damaged"
    shutil.copytree(run, damaged)
    weights = damaged / "checkpoints" / "hierarchy" / "ruler.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a truncated copy
    result = runner.invoke(
        app, ["evaluate", "--run", str(damaged), "--data", str(data), "--cache-dir", str(cache)]
    )
    assert result.exit_code == 2 and "is damaged" in _last_line(result.output)
    config = json.loads((damaged / "config.json").read_text())
    del config["rulers"]
    (damaged / "config.json").write_text(json.dumps(config))
    result = runner.invoke(
        app, ["evaluate", "--run", str(damaged), "--data", str(data), "--cache-dir", str(cache)]
    )
    assert result.exit_code == 2 and "damaged run config" in _last_line(result.output)
