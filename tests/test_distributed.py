"""Distributed training really run: `torchrun --standalone --nproc_per_node=2`, gloo on the CPU.

Two ranks train a few steps of `pipeline train` on a tiny synthetic dataset, then resume for
one more epoch. They must end with bit-identical weights (checked by a collective at the end:
summary.json's `ranks_agree`), only rank 0 may write (the run folder holds exactly what a
one-process run's does: no second metrics file, no stray checkpoint), and the run must equal a
one-process run in step count, split and checkpoint format and keys.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from synthetic_dataset import Spec, write_dataset
from typer.testing import CliRunner

from pipeline.cli import app
from training.distributed import Distributed, fingerprint

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
TRAIN = [
    "train", "--model", "resnet-tiny", "--image-size", "32", "--embedding-dim", "32",
    "--batch-size", "8", "--steps-per-epoch", "3", "--rotations", "1", "--split", "0.6,0.2,0.2",
    "--no-progress",
]  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread: None) -> Iterator[None]:
    """The in-process run on one thread, as each torchrun rank (OMP_NUM_THREADS=1)."""
    yield


def _torchrun(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`torchrun --standalone --nproc_per_node=2 -m pipeline.cli ARGS` from the checkout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "pipeline.cli", *args]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _files(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}


def _keys(path: Path) -> set[str]:
    with safe_open(str(path), framework="pt") as f:
        return set(f.keys())


# 32 s on two nearly idle cores (two torchrun launches, each importing the CLI in two
# processes; 149 s under a load of 5): not marked slow.
@pytest.mark.skipif(shutil.which(str(TORCHRUN)) is None, reason="torchrun is not installed")
def test_two_ranks_train_resume_and_match_one_process(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "ds", Spec(n_coins=6, size=32, angles=(0.0, 180.0)))
    common = ["--data", str(data), "--cache-dir", str(tmp_path / "cache")]
    ddp, alone = tmp_path / "ddp", tmp_path / "alone"

    done = _torchrun([*TRAIN, *common, "--out", str(ddp), "--epochs", "1"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("1 epochs") == 1  # only rank 0 reports
    done = _torchrun([*TRAIN, *common, "--out", str(ddp), "--epochs", "2", "--resume"])
    assert done.returncode == 0, done.stderr[-3000:]

    summary = json.loads((ddp / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["rank"] == 0
    assert summary["ranks_agree"] is True
    assert summary["images_decoded"] == 0  # the resumed run read the cache rank 0 built
    # one cache entry, built once: rank 1 waited for it and left no temporary file of its own
    # (the crops, their outline profiles and the index that marks them complete)
    cached = sorted(p.name.split(".", 1)[1] for p in (tmp_path / "cache").iterdir())
    assert cached == ["json", "npy", "outline.npy"]
    epochs = [json.loads(line) for line in (ddp / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs if r["kind"] == "epoch"] == [1, 2]
    assert [r["step"] for r in epochs if r["kind"] == "epoch"] == [3, 6]

    result = CliRunner().invoke(app, [*TRAIN, *common, "--out", str(alone), "--epochs", "2"])
    assert result.exit_code == 0, result.output
    single = json.loads((alone / "summary.json").read_text())
    assert single["world_size"] == 1
    assert (summary["epoch"], summary["step"]) == (single["epoch"], single["step"]) == (2, 6)
    assert _files(ddp) == _files(alone)
    assert (ddp / "split.json").read_text() == (alone / "split.json").read_text()
    for name in ("last/model.safetensors", "last/loss.safetensors", "best/model.safetensors"):
        assert _keys(ddp / "checkpoints" / name) == _keys(alone / "checkpoints" / name), name
    for name in ("last", "best"):
        meta = [
            json.loads((run / "checkpoints" / name / "model.json").read_text())
            for run in (ddp, alone)
        ]
        assert meta[0].keys() == meta[1].keys()
        assert meta[0]["config"] == meta[1]["config"]
    optimizer = [
        torch.load(run / "checkpoints/last/optimizer.pt", weights_only=True) for run in (ddp, alone)
    ]
    assert optimizer[0]["param_groups"] == optimizer[1]["param_groups"]
    assert optimizer[0]["state"].keys() == optimizer[1]["state"].keys()


def test_alone_every_rank_agrees_and_the_fingerprint_sees_one_bit() -> None:
    model = torch.nn.Linear(3, 2)
    assert Distributed(0, 1, torch.device("cpu")).ranks_agree([model])
    before = fingerprint([model])
    with torch.no_grad():
        bits = model.weight.view(torch.int32)
        bits[0, 0] ^= 1  # the lowest bit of one float
    assert not torch.equal(before, fingerprint([model]))
