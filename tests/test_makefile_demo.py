"""The Makefile's demo recipes are commands `pipeline train` accepts and runs, cut to a few steps.

`make demo` is the command a newcomer types first; a misspelt option there would only show after
the simulation's minutes. Each training line of the `demo` and `demo-full` targets is run here on
a tiny synthetic dataset, with its length and size overridden (typer keeps an option's last value).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from synthetic_dataset import Spec, write_dataset
from typer.testing import CliRunner

from pipeline.cli import app

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"
# what each line keeps of its recipe, made small enough for a test
SHORT = ["--epochs", "1", "--steps-per-epoch", "2", "--image-size", "32", "--rotations", "1"]


def _variables(text: str) -> dict[str, str]:
    """`NAME := value` and `NAME ?= value` definitions."""
    return {m[1]: m[2].strip() for m in re.finditer(r"^(\w+)\s*[:?]?=\s*(.*)$", text, re.M)}


def _train_lines(target: str) -> list[list[str]]:
    """The `pipeline train` arguments of a target's recipe lines, variables expanded."""
    text = MAKEFILE.read_text()
    variables = _variables(text)
    recipe = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", text, re.M)
    assert recipe is not None, f"no {target} target"
    lines = []
    for line in recipe[1].splitlines():
        expanded = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m[1], m[0]), line)
        words = shlex.split(expanded)
        for i, word in enumerate(words[:-1]):
            if word.endswith(("pipeline", "pipeline.cli")) and words[i + 1] == "train":
                lines.append(words[i + 2 :])
    return lines


def _replace(args: list[str], option: str, value: str) -> list[str]:
    """args with `option`'s value set to `value` (appended if absent)."""
    out = list(args)
    if option in out:
        out[out.index(option) + 1] = value
        return out
    return [*out, option, value]


@pytest.mark.parametrize("target", ["demo", "demo-full"])
def test_the_demo_training_lines_run(target: str, tmp_path: Path) -> None:
    lines = _train_lines(target)
    assert len(lines) == 1, lines
    data = write_dataset(
        tmp_path / "ds", Spec(n_coins=10, angles=(0.0, 90.0), lights=("diffuse",), size=48)
    )
    args = _replace(_replace(lines[0], "--data", str(data)), "--out", str(tmp_path / "run"))
    args = [*args, "--split", "0.6,0.2,0.2", "--cache-dir", str(tmp_path / "cache"), *SHORT]
    result = CliRunner().invoke(app, ["train", *args])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "checkpoints" / "best").is_dir()
