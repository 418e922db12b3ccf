"""Bad input to the `pipeline` command: one line on stderr and exit code 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic_dataset import Spec, write_dataset
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(
        tmp_path_factory.mktemp("cli") / "ds",
        Spec(n_coins=3, angles=(0.0,), lights=("diffuse",), size=32),
    )


def _one_line_exit_2(args: list[str], expected: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.output
    assert "Traceback" not in result.output


def test_no_arguments_shows_help() -> None:
    result = runner.invoke(app, [])
    assert "train" in result.output and "evaluate" in result.output and "benchmark" in result.output


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--split", "0.7,0.3"], "bad split"),
        (["--split", "x,y,z"], "bad split"),
        (["--model", "resnet-9000"], "unknown model"),
        (["--loss", "contrastive"], "unknown loss"),
        (["--aug", "heavy"], "unknown augmentation"),
        (["--train-on", "everything"], "unknown --train-on"),
        (["--ema-decay", "1.0"], "--ema-decay must be in [0, 1)"),
        (["--single-photo-p", "1.5"], "--single-photo-p must be in [0, 1]"),
    ],
)
def test_train_bad_settings(data: Path, tmp_path: Path, extra: list[str], expected: str) -> None:
    base = [
        "train",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "run"),
        "--cache-dir",
        str(tmp_path / "c"),
        "--image-size",
        "32",
        "--epochs",
        "1",
        "--no-progress",
    ]
    _one_line_exit_2([*base, *extra], expected)


def test_train_missing_dataset(tmp_path: Path) -> None:
    _one_line_exit_2(
        ["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")], "not found"
    )


def test_train_not_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    _one_line_exit_2(
        [
            "train",
            "--data",
            str(tmp_path / "photos"),
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
        ],
        "not a coinrig dataset",
    )


def test_train_missing_weights(data: Path, tmp_path: Path) -> None:
    _one_line_exit_2(
        ["train", "--data", str(data), "--weights", str(tmp_path / "r50.pth")],
        "no such file, and not a torchvision name",
    )


def test_strict_unreadable_image(tmp_path: Path) -> None:
    root = write_dataset(
        tmp_path / "ds", Spec(n_coins=3, angles=(0.0,), lights=("diffuse",), size=32)
    )
    (root / "images/SYN-0002/obverse/0000.png").write_bytes(b"not a png")
    args = [
        "train",
        "--data",
        str(root),
        "--out",
        str(tmp_path / "run"),
        "--cache-dir",
        str(tmp_path / "c"),
        "--image-size",
        "32",
        "--epochs",
        "1",
        "--no-progress",
        "--strict",
    ]
    _one_line_exit_2(args, "unreadable image images/SYN-0002/obverse/0000.png")


def test_evaluate_bad_input(data: Path, tmp_path: Path) -> None:
    _one_line_exit_2(["evaluate", "--run", str(tmp_path / "missing")], "run directory not found")
    (tmp_path / "notarun").mkdir()
    _one_line_exit_2(["evaluate", "--run", str(tmp_path / "notarun")], "not a training run")
    _one_line_exit_2(
        ["evaluate", "--run", str(tmp_path / "notarun"), "--protocol", "some"], "unknown protocol"
    )


def test_benchmark_missing_dataset(tmp_path: Path) -> None:
    _one_line_exit_2(["benchmark", "--data", str(tmp_path / "nowhere")], "not found")
