"""`pipeline train` then `pipeline evaluate` on a synthetic dataset, through the command line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from synthetic_dataset import Spec, write_dataset
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # Eight engineers share two cores; one thread is also what makes the numbers repeatable.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_train_resume_and_evaluate_far_above_chance(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "ds", Spec(n_coins=20, size=48))
    run = tmp_path / "run"
    common = ["--data", str(data), "--out", str(run), "--cache-dir", str(tmp_path / "cache")]
    args = [
        "train", *common, "--model", "resnet-tiny", "--image-size", "32", "--batch-size", "32",
        "--lr", "3e-3", "--scale", "16", "--aug", "standard", "--derotate", "--steps-per-epoch", "7",
        "--split", "0.6,0.1,0.3", "--seed", "0", "--no-progress",
    ]  # fmt: skip
    result = runner.invoke(app, [*args, "--epochs", "3"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, [*args, "--epochs", "4", "--resume"])
    assert result.exit_code == 0, result.output
    assert "4 epochs" in result.output

    summary = json.loads((run / "summary.json").read_text())
    assert summary["epoch"] == 4 and summary["images_skipped"] == 0
    assert summary["images_decoded"] == 0  # the resumed run found every image in the cache
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [1, 2, 3, 4]
    for name in (
        "config.json",
        "split.json",
        "curves.png",
        "checkpoints/best/model.safetensors",
        "checkpoints/last/optimizer.pt",
        "checkpoints/last/loss.safetensors",
    ):
        assert (run / name).exists(), name
    split = json.loads((run / "split.json").read_text())
    assert len(split["test"]) == 6

    result = runner.invoke(
        app,
        [
            "evaluate",
            "--run",
            str(run),
            "--data",
            str(data),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "eval-catalog" / "metrics.json").read_text())
    overall = metrics["overall"]
    # 6 held-out coins × 2 sides = 12 gallery images: chance is 1/12.
    assert overall["gallery"] == 12 and overall["queries"] == 12 * 8
    assert overall["top1"] >= 3 / 12, overall
    assert set(metrics["breakdown"]) == {"light", "angle", "side"}
    assert metrics["verification"]["genuine_mean"] > metrics["verification"]["impostor_mean"]
    for name in ("report.md", "failures.png", "verification_val.npz"):
        assert (run / "eval-catalog" / name).exists(), name
    # the outline's weight is fitted on the validation coins and kept for search
    fused, fit = metrics["outline_fusion"], metrics["fusion_fit"]
    assert json.loads((run / "fusion.json").read_text()) == fit
    assert fused["weight"] == fit["weight"] >= 0 and fused["queries"] == overall["queries"]
    assert 0 <= fused["top1"] <= fused["top5"] <= 1 and "outline" in result.output

    result = runner.invoke(
        app,
        [
            "evaluate",
            "--run",
            str(run),
            "--protocol",
            "all",
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (
        json.loads((run / "eval-all" / "metrics.json").read_text())["overall"]["queries"]
        == 6 * 2 * 9
    )


def test_benchmark_writes_the_poster_table(tmp_path: Path) -> None:
    data = write_dataset(
        tmp_path / "ds", Spec(n_coins=6, angles=(0.0, 180.0), lights=("diffuse",), size=32)
    )
    out = tmp_path / "bench"
    args = [
        "benchmark", "--data", str(data), "--models", "resnet-tiny", "--aug", "none,tuned",
        "--train-on", "catalog", "--epochs", "1", "--steps-per-epoch", "1", "--image-size", "32",
        "--out", str(out),
        "--cache-dir", str(tmp_path / "cache"), "--seeds", "0",
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    table = (out / "benchmark.md").read_text()
    assert "| augmented catalog top-1 | capture (real-photo) top-1 | splits |" in table
    rows = [line for line in table.splitlines() if line.startswith("| resnet-tiny")]
    assert [row.split(" | ")[1] for row in rows] == ["none", "tuned"]
    assert all(row.count("%") == 2 for row in rows)
