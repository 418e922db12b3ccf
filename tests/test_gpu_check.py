"""benchmarks/gpu_check.sh --smoke: the GPU check's every step, small, on the CPU.

The full check needs a GPU; the smoke run takes the same steps (throughput table, dataset,
training, catalog-protocol evaluation, training with --compile, dynamo disabled) with tiny
settings, and must print its table and exit 0; a step that fails makes it exit 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEPS = ("setup", "throughput", "dataset", "train", "evaluate", "compile", "train-compile")


def _check(
    tmp_path: Path, *args: str, python: str = sys.executable
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": python, "OUT": str(tmp_path / "out"), "TMPDIR": str(tmp_path)}
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip


def _table(stdout: str) -> dict[str, list[str]]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("step "))
    rows = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        name, status, seconds, *figure = line.split()
        rows[name] = [status, seconds, " ".join(figure)]
    return rows


def test_smoke_runs_every_step_and_prints_the_table(tmp_path: Path) -> None:
    done = _check(tmp_path, "--smoke")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = _table(done.stdout)
    assert list(rows) == list(STEPS)
    assert all(status == "ok" for name, (status, _, _) in rows.items() if name != "train-compile")
    assert rows["train-compile"][0] == "skipped"  # the smoke's one training run had --compile
    assert "img/s" in rows["throughput"][2] and "x model" in rows["throughput"][2]
    assert "catalog protocol top-1" in rows["evaluate"][2]
    assert "validation" in rows["train"][2]
    assert "resnet-tiny compiled" in rows["compile"][2] and "x eager" in rows["compile"][2]
    for name, model in (("throughput", "resnet-tiny"), ("compiled", "resnet-tiny compiled")):
        table = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        assert [r["model"] for r in table["rows"]] == [model]
        row = table["rows"][0]
        assert row["data"] > 0 and row["model_step"] > 0 and row["train"] > 0
    assert (tmp_path / "out" / "run" / "eval-catalog" / "metrics.json").is_file()


def test_a_failing_step_makes_the_check_fail(tmp_path: Path) -> None:
    done = _check(tmp_path, "--smoke", python="false")  # every Python step fails at once
    assert done.returncode == 1
    rows = _table(done.stdout)
    assert rows["throughput"][0] == "FAIL"


def test_an_unknown_argument_is_refused(tmp_path: Path) -> None:
    done = _check(tmp_path, "--fast")
    assert done.returncode == 2 and "unknown argument --fast" in done.stderr
