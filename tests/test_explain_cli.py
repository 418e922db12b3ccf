"""`pipeline explain` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import typer
from synthetic_dataset import Spec, write_dataset
from typer.testing import CliRunner

from pipeline.cli_explain import register
from training.checkpoint import save_checkpoint
from training.models.embedding import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True)

    @app.callback()
    def main() -> None:
        """Test harness."""

    register(app)
    return app


def _photo(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    img = np.full((120, 160, 3), 15, np.uint8)
    cv2.circle(img, (82, 58), 40, (90, 140, 170), -1)
    for _ in range(6):
        p, q = rng.integers(40, 100, 2), rng.integers(40, 100, 2)
        cv2.line(img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), (200, 220, 240), 2)
    cv2.imwrite(str(path), img)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("explain")
    data = write_dataset(root / "data", Spec(n_coins=3, angles=(0.0,), lights=("diffuse",)))
    run = root / "run"
    torch.manual_seed(0)
    save_checkpoint(
        run / "checkpoints" / "best", build_model("resnet-tiny-truncated", image_size=64)
    )
    (run / "config.json").write_text(json.dumps({"data": [str(data)], "out": str(run)}))
    return run


@pytest.mark.parametrize("method", ["match", "landmarks", "saliency"])
def test_explain_writes_overlays_and_mask(run_dir: Path, tmp_path: Path, method: str) -> None:
    query, against = _photo(tmp_path / "q.png", 0), _photo(tmp_path / "a.png", 1)
    out = tmp_path / "out"
    result = runner.invoke(
        _app(),
        ["explain", "--run", str(run_dir), "--query", str(query), "--against", str(against),
         "--method", method, "--epsilon", "0.3", "--window", "21", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "iterations" in result.output and "a.png" in result.output
    mask = np.load(out / f"{method}-query.npy")
    assert mask.shape == (64, 64) and np.isfinite(mask).all()
    assert (out / f"{method}-query.png").stat().st_size > 500
    assert (out / f"{method}-against.png").exists() == (method == "match")
    if method == "landmarks":
        assert "fraction kept" in result.output and 0.0 <= mask.min() <= mask.max() <= 1.0


def test_explain_finds_the_closest_reference_by_default(run_dir: Path, tmp_path: Path) -> None:
    data = json.loads((run_dir / "config.json").read_text())["data"][0]
    query = Path(data) / "catalog" / "SYN-0001" / "reverse.jpg"
    result = runner.invoke(
        _app(),
        ["explain", "--run", str(run_dir), "--query", str(query), "--method", "match",
         "--out", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "SYN-0001/reverse" in result.output  # its own catalog image is the closest


def test_explain_margin_over_the_runner_up_by_default(run_dir: Path, tmp_path: Path) -> None:
    data = json.loads((run_dir / "config.json").read_text())["data"][0]
    query = Path(data) / "catalog" / "SYN-0001" / "reverse.jpg"
    result = runner.invoke(
        _app(),
        ["explain", "--run", str(run_dir), "--query", str(query), "--method", "saliency",
         "--target", "margin", "--window", "11", "--out", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # matched to its own reference; the rival is the closest reverse of another coin
    # views are COLLECTION/COIN/SIDE: the folder's name and creation time name its collection
    assert "saliency vs data@2026-01-01T00:00:00Z/SYN-0001/reverse: margin" in result.output
    rival = result.output.split("over rival ")[1].split(";")[0]
    assert rival.endswith("/reverse") and "/SYN-0001/" not in rival
    assert np.isfinite(np.load(tmp_path / "saliency-query.npy")).all()


def test_explain_margin_over_a_given_rival(run_dir: Path, tmp_path: Path) -> None:
    query, against = _photo(tmp_path / "q.png", 0), _photo(tmp_path / "a.png", 1)
    rival = _photo(tmp_path / "r.png", 2)
    result = runner.invoke(
        _app(),
        ["explain", "--run", str(run_dir), "--query", str(query), "--against", str(against),
         "--method", "match", "--target", "margin", "--rival", str(rival),
         "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "match vs a.png: margin" in result.output and "over rival r.png" in result.output
    assert (tmp_path / "out" / "match-against.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "gradcam"], "--method must be one of"),
        (["--epsilon", "-1"], "--epsilon must be"),
        (["--query", "missing.png"], "no such file"),
        (["--run", "nowhere"], "not a training run"),
        (["--target", "probability"], "--target must be one of"),
        (["--rival", "q.png"], "--rival is only used with --target margin"),
        (["--target", "margin", "--against", "q.png"], "needs --rival IMAGE"),
    ],
)
def test_explain_bad_input_is_one_line_exit_2(
    run_dir: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    query = _photo(tmp_path / "q.png", 0)
    base = {"--run": str(run_dir), "--query": str(query), "--method": "saliency"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = str(tmp_path / value) if value == "q.png" else value
    result = runner.invoke(_app(), ["explain", *[x for kv in base.items() for x in kv]])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output


def test_match_on_a_pooling_model_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoints" / "best", build_model("resnet-tiny", image_size=64))
    query = _photo(tmp_path / "q.png", 0)
    result = runner.invoke(
        _app(),
        ["explain", "--run", str(run), "--query", str(query), "--against", str(query),
         "--method", "match"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "grid-keeping model" in result.output and len(result.output.strip().splitlines()) == 1
