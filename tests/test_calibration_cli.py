"""The `rig calibrate` commands end to end, and what capture and training do with their files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rig.cli import app
from training.data import read_dataset

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs/sim.yaml")
PLAN = str(ROOT / "configs/plans/quick.yaml")  # raking_n, raking_e, diffuse


def test_calibrate_then_capture_records_and_uses_the_calibration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the config's calibration folder is relative: ./calibration
    runner = CliRunner()
    turntable = runner.invoke(app, ["calibrate", "turntable", "--config", CONFIG, "--angles", "6"])
    assert turntable.exit_code == 0, turntable.output
    assert "no camera calibration" in turntable.output and "wrote" in turntable.output
    patterns = ["--pattern", "raking_n", "--pattern", "raking_e", "--pattern", "diffuse"]
    flat = runner.invoke(app, ["calibrate", "flatfield", "--config", CONFIG, *patterns])
    assert flat.exit_code == 0, flat.output
    shown = runner.invoke(app, ["calibrate", "show", "--config", CONFIG])
    assert shown.exit_code == 0 and shown.output.count("sim-rig_SIM-0001/") == 2

    args = ["capture", "--coin", "SIM-0001", "--plan", PLAN, "--config", CONFIG, "--out", "data"]
    captured = runner.invoke(app, [*args, "--flatfield"])
    assert captured.exit_code == 0, captured.output
    session = json.loads(next((tmp_path / "data/sessions").glob("*Z-??????.json")).read_text())
    calibration = session["calibration"]
    assert calibration["camera"] is None and calibration["lights"] is None
    assert calibration["flatfield"]["file"].startswith("sim-rig_SIM-0001/flatfield-")
    centre = calibration["turntable"]["centre_px"]
    warnings = session["warnings"]
    assert len(warnings) == 2 and all(w.startswith("no ") for w in warnings)  # camera, lights
    lines = [
        json.loads(line)
        for line in (tmp_path / "data/metadata.jsonl").read_text().split("\n")
        if line
    ]
    assert len(lines) == 24 and all(line["flatfield"]["applied"] for line in lines)

    dataset = read_dataset(tmp_path / "data")
    assert {r.turntable_centre_px for r in dataset.records} == {tuple(centre)}
    assert {r.rotation_sign for r in dataset.records} == {1}


def test_capture_without_calibration_warns_and_flatfield_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    args = ["capture", "--coin", "SIM-0002", "--plan", PLAN, "--config", CONFIG, "--out", "data"]
    refused = runner.invoke(app, [*args, "--flatfield"])
    assert refused.exit_code == 2 and "rig calibrate flatfield" in refused.output
    plain = runner.invoke(app, args)
    assert plain.exit_code == 0, plain.output
    session = json.loads(next((tmp_path / "data/sessions").glob("*Z-??????.json")).read_text())
    assert len(session["warnings"]) == 4  # every kind missing, none fatal
    first = json.loads((tmp_path / "data/metadata.jsonl").read_text().split("\n")[0])
    assert first["flatfield"] == {"applied": False, "calibration": None}
    assert all(r.turntable_centre_px is None for r in read_dataset(tmp_path / "data").records)
