"""The `rig calibrate` commands end to end, and what capture and training do with their files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import pytest
from calibration_support import turntable_record
from typer.testing import CliRunner

from capture.calibration.models import DeviceKey
from capture.calibration.store import CalibrationStore
from pipeline.rig_cli.app import app
from training.data import read_dataset

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "sim"
PLAN = "quick"  # raking_n, raking_e, diffuse
DEVICE_FOLDER = "sim-rig_SIM-0001"  # rig/config/presets/sim.yaml's rig name and its camera's serial


def corner_to_edge(path: Path) -> float:
    """Background level in a corner over that at the top edge's middle (lens fall-off: < 1)."""
    image = cv2.imread(str(path))
    assert image is not None, path
    return float(image[4:24, 4:24].mean() / image[4:24, 246:266].mean())


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
    # the pixels were corrected, not just labelled: the lens fall-off is gone from the backdrop
    for line in lines:
        corrected = corner_to_edge(tmp_path / "data" / line["file_name"])
        assert corrected == pytest.approx(1.0, abs=0.02), line["file_name"]

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
    assert corner_to_edge(tmp_path / "data" / first["file_name"]) < 0.96  # vignetting left in
    assert all(r.turntable_centre_px is None for r in read_dataset(tmp_path / "data").records)


def test_camera_and_lights_commands_write_versioned_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    camera = runner.invoke(app, ["calibrate", "camera", "--config", CONFIG])
    assert camera.exit_code == 0, camera.output
    assert re.search(r"RMS 0\.\d+ px", camera.output)
    folder = tmp_path / "calibration" / DEVICE_FOLDER
    (camera_file,) = folder.glob("camera-*.json")
    assert re.fullmatch(r"camera-\d{8}T\d{6}Z\.json", camera_file.name)
    record = json.loads(camera_file.read_text())
    assert record["format"] == "coinrig-calibration" and record["version"] == 1
    assert record["device"]["rig"] == "sim-rig" and record["device"]["camera_serial"] == "SIM-0001"
    assert camera_file.name[7:15] == record["created"][:10].replace("-", "")  # keyed by date
    assert record["result"]["rms_px"] < 0.5
    assert (folder / camera_file.name.replace(".json", ".overlay.png")).exists()

    # a tolerance no real fit meets: every channel is reported out of it, and still written
    lights = runner.invoke(
        app, ["calibrate", "lights", "--config", CONFIG, "--tolerance-deg", "0.01"]
    )
    assert lights.exit_code == 0, lights.output
    assert f"using camera calibration {DEVICE_FOLDER}/{camera_file.name}" in lights.output
    assert lights.output.count("OUT OF TOLERANCE") == 5  # north east south west top
    assert lights.output.count("warning: light ") == 5
    (lights_file,) = folder.glob("lights-*.json")
    result = json.loads(lights_file.read_text())["result"]
    assert result["camera_calibration"] == f"{DEVICE_FOLDER}/{camera_file.name}"
    assert all(c["error_deg"] < 2.0 and not c["within_tolerance"] for c in result["channels"])

    shown = runner.invoke(app, ["calibrate", "show", "--json", "--config", CONFIG])
    rows = json.loads(shown.output)
    assert [r["kind"] for r in rows] == ["camera", "lights"] and not any(r["stale"] for r in rows)


def test_a_stale_calibration_is_used_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a turntable calibration 40 days old (the policy allows 30) that turns clockwise
    monkeypatch.chdir(tmp_path)
    device = DeviceKey(rig="sim-rig", camera_serial="SIM-0001")
    record = turntable_record(device, days_old=40, centre_px=(250.0, 260.0), zero_offset_deg=0.0)
    CalibrationStore(tmp_path / "calibration").save(record)
    args = ["capture", "--coin", "SIM-0002", "--plan", PLAN, "--config", CONFIG, "--out", "data"]
    captured = CliRunner().invoke(app, args)
    assert captured.exit_code == 0, captured.output
    session = json.loads(next((tmp_path / "data/sessions").glob("*Z-??????.json")).read_text())
    turntable = session["calibration"]["turntable"]
    assert turntable["file"].startswith(f"{DEVICE_FOLDER}/turntable-")
    assert turntable["age_days"] > 30 and turntable["rotation_sign"] == -1
    stale = [w for w in session["warnings"] if "turntable calibration" in w]
    assert len(stale) == 1 and "40.0 days old" in stale[0] and "30 days" in stale[0]
    # training reads the session's calibration: its centre, and its sense for de-rotation
    records = read_dataset(tmp_path / "data").records
    assert {r.turntable_centre_px for r in records} == {(250.0, 260.0)}
    turned = [r for r in records if r.turntable_deg != 0]
    assert turned and all(r.derotation_deg == -r.turntable_deg for r in turned)
