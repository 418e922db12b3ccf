"""Shipped configs and plans (issue 17): found by name from any folder, and inside a built wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from capture.plan import PLANS, Plan
from pipeline.rig_cli.app import app
from rig.config import load_config, parse_config, presets

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_names_resolve_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    assert load_config("sim").name == "sim-rig"
    assert load_config("sim.yaml").name == "sim-rig"
    assert Plan.load("standard").name == "standard"
    result = runner.invoke(app, ["config", "validate", "sim"])
    assert result.exit_code == 0, result.output
    assert presets.preset_names() == [
        "grbl-operator-basler", "grbl-uarm-basler", "modbus-dexarm-webcam", "sim",
    ]  # fmt: skip
    assert presets.preset_names(PLANS) == ["quick", "standard"]


def test_a_file_of_that_name_wins_over_the_preset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = yaml.safe_load(presets.resolve("sim").read_text())
    data["name"] = "my-rig"
    (tmp_path / "sim").write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)
    assert load_config("sim").name == "my-rig"


@pytest.mark.parametrize("value", ["nope", "../sim", "sub/sim"])
def test_unknown_names_are_one_line_listing_the_presets(value: str) -> None:
    result = runner.invoke(app, ["config", "validate", value])
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)
    assert "no such config file (or preset: grbl-operator-basler" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_show_prints_a_preset_that_validates_as_a_copy(tmp_path: Path) -> None:
    result = runner.invoke(app, ["config", "show", "sim"])
    assert result.exit_code == 0
    copy = tmp_path / "my-rig.yaml"
    copy.write_text(result.output)
    assert load_config(copy) == load_config("sim")
    assert parse_config(yaml.safe_load(result.output)).name == "sim-rig"
    plan = runner.invoke(app, ["config", "show", "quick"])
    assert plan.exit_code == 0 and "name: quick" in plan.output
    missing = runner.invoke(app, ["config", "show", "nope"])
    assert missing.exit_code == 2 and "no such preset" in missing.output


def test_presets_ship_inside_the_wheel(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy: building writes build/ and *.egg-info beside the sources
    for name in ("pyproject.toml", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    for package in ("rig", "capture", "pipeline", "training", "dataset"):
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(source)],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("coinrig-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in presets.preset_names():
        assert f"rig/config/presets/{name}.yaml" in names
    for name in presets.preset_names(PLANS):
        assert f"capture/plans/{name}.yaml" in names
