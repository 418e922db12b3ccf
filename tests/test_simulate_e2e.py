"""`rig simulate` end to end: emulators, the real drivers, the twin and the dataset, in-process."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import pytest
from simulate_support import (
    QUICK,
    assert_complete_once,
    ground_truth_mismatches,
    metadata_lines,
    planned_names,
    verify_errors,
    write_config,
    write_plan,
)
from typer.testing import CliRunner

from capture.checks import verify
from capture.engine import CaptureEngine
from dataset.reader import DatasetReader
from pipeline.rig_cli.app import app
from pipeline.rig_cli.simulate import paused_ending, tray_batches, tray_spin_deg
from rig.sim.catalog_style import render_catalog_image
from rig.sim.coins import CoinCatalog

COINS = ["SIM-0000", "SIM-0001", "SIM-0002"]
# One side, angles that do not end at 0°: the table is left at 250° after each coin.
ODD_PLAN = "name: odd\nsides: [obverse]\nangles_deg: [30, 150, 250]\nlights: [raking_n, diffuse]\n"
TINY_PLAN = "name: tiny\nsides: [obverse, reverse]\nangle_count: 2\nlights: [raking_n, diffuse]\n"


def simulate(out: Path, *args: str) -> tuple[int, str]:
    """Run `rig simulate` in-process; returns (exit code, output)."""
    result = CliRunner().invoke(app, ["simulate", "--out", str(out), "--image-size", "64", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_simulate_quick_plan_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    code, output = simulate(out, "--coins", "3", "--types", "2", "--plan", str(QUICK))
    assert code == 0, output
    assert "physical duration (twin ledger)" in output and "wall time" in output

    assert_complete_once(out, QUICK, COINS)
    verified = CliRunner().invoke(app, ["dataset", "verify", str(out)])
    assert verified.exit_code == 0 and "0 error(s), 0 warning(s)" in verified.output
    assert ground_truth_mismatches(out) == []

    records = DatasetReader(out).records()
    captures = [r for r in records if r["role"] == "capture"]
    assert len(captures) == 72
    image = cv2.imread(str(out / captures[0]["file_name"]))
    assert image.shape == (64, 64, 3) and captures[0]["width"] == 64
    # Tray loads lie first side up with a seeded spin; the table loads each coin at 0°, so
    # the picture's rotation minus the recorded angle is exactly that spin.
    for record in captures:
        offset = (record["sim"]["true_angle_deg"] - record["turntable_deg"]) % 360.0
        spin = tray_spin_deg(0, record["coin_id"])
        assert min(abs(offset - spin), 360 - abs(offset - spin)) < 1e-3

    # Ground truth from the twin's catalog, computed independently of the command.
    catalog = CoinCatalog(seed=0, rulers=2, types=2, coins=3)
    lines = {line["coin_id"]: line for line in DatasetReader(out).coins()}
    assert set(lines) == set(COINS)
    for coin_id in COINS:
        truth = catalog.record(coin_id)
        for key in ("ruler", "type", "catalog_ref", "collection"):
            assert lines[coin_id][key] == truth[key]
        assert lines[coin_id]["type_index"] == catalog.coin(coin_id).type_index
        for side in ("obverse", "reverse"):
            (ref,) = [r for r in records if r["file_name"] == f"catalog/{coin_id}/{side}.jpg"]
            assert ref["role"] == "catalog" and ref["catalog_ref"] == truth["catalog_ref"]
            # stored exactly as the twin's auction-style JPEG: compressed once, not re-encoded
            _, jpeg = render_catalog_image(catalog, coin_id, side)
            assert (out / ref["file_name"]).read_bytes() == jpeg
            assert ref["sha256"] == hashlib.sha256(jpeg).hexdigest()

    (session,) = DatasetReader(out).sessions()
    assert session["status"] == "done" and session["timings"]["physical_s"] > 60

    # the closing summary table: this run's counts and the dataset's
    rows = {
        cells[0]: cells[1:]
        for line in output.splitlines()
        if "│" in line
        for cells in [[c.strip() for c in line.strip("│ ").split("│")]]
    }
    assert rows["capture images"] == ["72", "72"]
    assert rows["catalog images"] == ["6", "6"]
    assert rows["tray loads"][0] == "1 run, 0 already done"
    assert rows["physical duration (twin ledger)"][0] and rows["wall time"][0]

    before = (out / "metadata.jsonl").read_bytes()
    code, output = simulate(out, "--coins", "3", "--types", "2", "--plan", str(QUICK))
    assert code == 0 and "nothing to do" in output
    assert (out / "metadata.jsonl").read_bytes() == before

    # negative control: the ground-truth check sees a record naming another light pattern
    lines = (out / "metadata.jsonl").read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if '"light": "raking_n"' in line)
    lines[index] = lines[index].replace('"light": "raking_n"', '"light": "raking_e"')
    (out / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    (wrong,) = ground_truth_mismatches(out)
    assert "'raking_e' but the twin had" in wrong


def test_capture_tray_with_the_real_drivers(tmp_path: Path) -> None:
    """`rig capture --tray` on the sim rig: the arm works through the tray, slot by slot."""
    config = write_config(tmp_path / "rig.yaml", camera={"width": 64, "height": 64})
    plan = write_plan(tmp_path / "tiny.yaml", TINY_PLAN)
    tray = tmp_path / "tray.csv"
    tray.write_text("slot,coin_id\n3,SIM-0005\n0,SIM-0002\n")
    out = tmp_path / "ds"
    args = ["capture", "--tray", str(tray), "--config", str(config), "--plan", str(plan)]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "done: 16 images" in result.output
    names = {line["file_name"] for line in metadata_lines(out)}
    assert len(names) == len(metadata_lines(out)) == 16
    assert names == planned_names(plan, ["SIM-0005", "SIM-0002"])
    # every frame shows the coin its record names: the arm took each from its own slot
    assert ground_truth_mismatches(out) == [] and verify_errors(out) == []
    (session,) = DatasetReader(out).sessions()
    assert session["coins"] == [
        {"coin_id": "SIM-0005", "slot": 3},
        {"coin_id": "SIM-0002", "slot": 0},
    ]
    assert session["on_turntable"] is None  # both returned to the tray


def test_tray_loads_keep_one_angle_frame(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """More coins than slots: several tray loads on one rig, and angles stay the twin's angles.

    Without homing switches each session's home() declares the current angle zero; the first
    load leaves the table at 250°, so the second load would record 0° where the table is at
    250°. The negative control (the return to a whole turn switched off) shows that the check
    reads the twin's world, not the driver's report.
    """
    config = write_config(tmp_path / "rig.yaml", tray={"rows": 1, "cols": 2})
    plan = write_plan(tmp_path / "odd.yaml", ODD_PLAN)
    args = ["--coins", "3", "--types", "2", "--config", str(config), "--plan", str(plan)]
    out = tmp_path / "sim"
    code, output = simulate(out, *args)
    assert code == 0, output
    assert "tray load 2 of 2" in output
    assert len(DatasetReader(out).sessions()) == 2
    assert_complete_once(out, plan, COINS)
    assert verify_errors(out) == []
    assert ground_truth_mismatches(out) == []

    monkeypatch.setattr(CaptureEngine, "_back_to_whole_turn", lambda self: None)
    control = tmp_path / "control"
    code, output = simulate(control, *args)
    assert code == 0, output
    wrong = ground_truth_mismatches(control)
    assert wrong and all("SIM-0002" in problem for problem in wrong)


def test_heavy_faults_pause_resumably_and_resume_completes(tmp_path: Path) -> None:
    # Short reply timeouts keep lost replies cheap in wall time; the faults are the preset's.
    config = write_config(
        tmp_path / "rig.yaml",
        turntable={"reply_timeout_s": 0.4},
        arm={"reply_timeout_s": 0.4},
        lightbox={"timeout_s": 0.4},
    )
    plan = write_plan(tmp_path / "tiny.yaml", TINY_PLAN)
    out = tmp_path / "sim"
    args = ["--coins", "2", "--types", "1", "--faults", "heavy", "--config", str(config)]
    codes: list[int] = []
    outputs = ""
    for _ in range(15):
        code, output = simulate(out, *args, "--plan", str(plan))
        codes.append(code)
        outputs += output
        assert code in (0, 3), output
        # Paused or done, the folder is consistent and every shot matches the twin.
        assert verify_errors(out) == []
        assert ground_truth_mismatches(out) == []
        last = max(DatasetReader(out).sessions(), key=lambda s: s["timings"]["started_at"])
        if code == 0 and "nothing to do" in output:
            # the session before paused after its last shot (e.g. an arm error while returning
            # the coin): the rerun has nothing to shoot, and says how that session ended
            assert last["status"] == "paused" and "paused after its last shot" in output
        else:
            assert last["status"] == ("done" if code == 0 else "paused")
        if code == 0:
            break
    assert codes[-1] == 0, f"never completed: exit codes {codes}"
    assert "retry" in outputs or "attempt 1/" in outputs  # the faults fired and were retried
    assert_complete_once(out, plan, COINS[:2])
    assert [str(p) for p in verify(out)] == []  # no warnings left either


def test_tray_batches_split_like_an_operator_refilling_the_tray() -> None:
    coins = [f"SIM-{i:04d}" for i in range(5)]
    loads = tray_batches(coins, 2)
    assert [[(j.coin_id, j.slot) for j in load] for load in loads] == [
        [("SIM-0000", 0), ("SIM-0001", 1)],
        [("SIM-0002", 0), ("SIM-0003", 1)],
        [("SIM-0004", 0)],
    ]
    assert tray_batches(coins, None) == [[type(loads[0][0])(c) for c in coins]]


def test_refusals_exit_2_before_anything_runs(tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "tiny.yaml", TINY_PLAN)
    out = tmp_path / "sim"
    code, output = simulate(out, "--coins", "1", "--faults", "storm", "--plan", str(plan))
    assert code == 2 and "none" in output and "heavy" in output
    assert not out.exists()
    code, output = simulate(out, "--coins", "1", "--plan", str(tmp_path / "nope.yaml"))
    assert code == 2 and "no such plan file" in output
    assert not out.exists()

    code, output = simulate(out, "--coins", "1", "--plan", str(plan))
    assert code == 0, output
    before = (out / "metadata.jsonl").read_bytes()
    # Another seed makes other coins under the same ids: resuming would mix two collections.
    code, output = simulate(out, "--coins", "1", "--seed", "5", "--plan", str(plan))
    assert code == 2 and "another --seed" in output
    result = CliRunner().invoke(
        app, ["simulate", "--out", str(out), "--coins", "1", "--plan", str(plan)]
    )
    assert result.exit_code == 2 and "64x64" in result.output  # default 512 px vs 64 px
    assert (out / "metadata.jsonl").read_bytes() == before
    assert json.loads((out / "dataset.json").read_text())["format"] == "coinrig-dataset"
    assert metadata_lines(out)


def test_time_scale_makes_the_rig_take_its_scaled_physical_time(tmp_path: Path) -> None:
    """--time-scale 0.01: every motion, settle and exposure waits 1 % of its physical time."""
    plan = write_plan(tmp_path / "tiny.yaml", TINY_PLAN)
    out = tmp_path / "sim"
    code, output = simulate(out, "--coins", "1", "--time-scale", "0.01", "--plan", str(plan))
    assert code == 0, output
    (session,) = DatasetReader(out).sessions()
    assert session["rig_config"]["simulation"]["time_scale"] == 0.01
    physical, wall = session["timings"]["physical_s"], session["timings"]["wall_s"]
    assert physical > 20  # one coin: load, 8 shots, flip, 8 shots, unload (about 33 s)
    assert wall >= 0.01 * physical
    assert_complete_once(out, plan, COINS[:1])
    assert ground_truth_mismatches(out) == []


def test_a_rerun_after_a_pause_past_the_last_shot_says_to_check_the_tray(tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "tiny.yaml", TINY_PLAN)
    out = tmp_path / "sim"
    code, _ = simulate(out, "--coins", "1", "--plan", str(plan))
    assert code == 0 and paused_ending(out) is None
    (record,) = (out / "sessions").glob("*.json")
    session = json.loads(record.read_text())
    session |= {"status": "paused", "message": "arm refused 'G0 X200': E26"}
    record.write_text(json.dumps(session))  # as if the arm failed while returning the coin
    code, output = simulate(out, "--coins", "1", "--plan", str(plan))
    assert code == 0 and "nothing to do" in output
    assert "paused after its last shot (arm refused 'G0 X200': E26)" in output
