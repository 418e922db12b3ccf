"""Calibration records and the calibration folder: round trips, listing, staleness, `show`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from calibration_support import turntable_record as support_record
from typer.testing import CliRunner

from capture.calibration.models import CalibrationRecord, DeviceKey
from capture.calibration.store import CalibrationError, CalibrationStore, calibration_in_use
from pipeline.rig_cli.calibrate import register

DEVICE = DeviceKey(rig="bench", camera_serial="CAM/42", camera_model="m", camera_driver="sim")
ROOT = Path(__file__).resolve().parents[1]


def turntable_record(days_old: float = 0.0) -> CalibrationRecord:
    """The bench's turntable calibration, `days_old` days old."""
    return support_record(DEVICE, days_old=days_old)


def test_records_round_trip_with_arrays(tmp_path: Path) -> None:
    store = CalibrationStore(tmp_path)
    record = turntable_record()
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    stored = store.save(record, {"x.npy": array}, overlay=np.zeros((8, 8, 3), np.uint8))
    assert stored.path.parent.name == "bench_CAM-42"  # a safe folder name per device
    assert stored.path.name.startswith("turntable-") and stored.path.suffix == ".json"
    again = store.read(stored.path)
    assert again.record == record
    assert np.array_equal(again.array("x.npy"), array)
    assert (stored.path.parent / f"{store.stem(record)}.overlay.png").exists()
    data = json.loads(stored.path.read_text())
    assert data["format"] == "coinrig-calibration" and data["version"] == 1
    assert not list(tmp_path.rglob("*.tmp"))


def test_latest_and_staleness(tmp_path: Path) -> None:
    store = CalibrationStore(tmp_path)
    store.save(turntable_record(days_old=40))
    newest = store.save(turntable_record(days_old=1))
    (newest.path.parent / "camera-broken.json").write_text("{not json")  # skipped, not fatal
    assert store.latest(DEVICE, "turntable") == newest
    assert len(store.list()) == 2
    use = calibration_in_use(store, DEVICE, max_age_days=30)
    assert set(use.records) == {"turntable"}
    assert sum("no " in w for w in use.warnings) == 3  # camera, lights, flatfield missing
    summary = use.summary()
    assert summary["turntable"]["centre_px"] == [270.5, 240.25]  # type: ignore[index]
    assert summary["turntable"]["rotation_sign"] == -1  # type: ignore[index]
    stale = calibration_in_use(store, DEVICE, max_age_days=0.5)
    assert any("days old" in w for w in stale.warnings)


def test_a_bad_record_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "turntable-x.json"
    path.write_text(json.dumps({"format": "coinrig-calibration", "kind": "turntable"}))
    with pytest.raises(CalibrationError, match="not a valid calibration record"):
        CalibrationStore(tmp_path).read(path)


def test_show_lists_and_marks_stale(tmp_path: Path) -> None:
    store = CalibrationStore(tmp_path)
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps `calibrate` a sub-command
    runner = CliRunner()
    config = "sim"
    empty = runner.invoke(app, ["calibrate", "show", "--config", config, "--folder", str(tmp_path)])
    assert empty.exit_code == 0 and "no calibrations" in empty.output
    store.save(turntable_record(days_old=45))
    shown = runner.invoke(app, ["calibrate", "show", "--config", config, "--folder", str(tmp_path)])
    assert shown.exit_code == 0 and "STALE" in shown.output and "270.5" in shown.output
    as_json = runner.invoke(
        app, ["calibrate", "show", "--json", "--config", config, "--folder", str(tmp_path)]
    )
    rows = json.loads(as_json.output)
    assert rows[0]["kind"] == "turntable" and rows[0]["stale"] is True


def test_a_calibration_is_never_overwritten(tmp_path: Path) -> None:
    store = CalibrationStore(tmp_path)
    record = turntable_record()
    store.save(record)
    with pytest.raises(CalibrationError, match="exists"):
        store.save(record)
