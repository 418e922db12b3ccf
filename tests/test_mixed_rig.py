"""Real and emulated devices in one rig: the twin's ground truth only when the twin can know it.

A "real" turntable here is a GRBL emulator started outside the rig's simulation backend, with
a world of its own: to the config it is hardware on a serial port (`link`), exactly as a real
controller on /dev/ttyUSB0 would be, and the twin never sees it turn.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from simulate_support import SIM, metadata_lines, write_plan
from typer.testing import CliRunner

from dataset.reader import DatasetReader
from pipeline.rig_cli.app import app
from rig.assembly import devices_on_hardware, open_rig, twin_ground_truth
from rig.config import GrblTurntableConfig, SimCameraConfig, parse_config
from rig.sim.camera import SimCamera
from rig.sim.coins import CoinCatalog
from rig.sim.grbl_emulator import GrblEmulator
from rig.sim.world import CoinPlacement, World

# Angles away from 0°: a twin that never turns would record 0° against a real 90°.
PLAN = "name: mixed\nsides: [obverse]\nangles_deg: [90, 200]\nlights: [raking_n]\n"


def sim_data() -> dict[str, Any]:
    """rig/config/presets/sim.yaml as a dict."""
    data: dict[str, Any] = yaml.safe_load(SIM.read_text())
    return data


@pytest.fixture
def real_turntable() -> Iterator[GrblEmulator]:
    """A GRBL controller outside the twin: to the rig, hardware on a serial port."""
    config = parse_config(sim_data(), source="test").turntable
    assert isinstance(config, GrblTurntableConfig)
    grbl = GrblEmulator.for_config(config, world=World())
    with grbl:
        yield grbl


def mixed_config(tmp_path: Path, port: str) -> Path:
    """The sim rig with its turntable on hardware (a serial link), everything else emulated."""
    data = sim_data()
    data["turntable"].pop("emulate")
    data["turntable"]["link"] = {"kind": "serial", "port": port}
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_which_devices_are_real_and_whether_the_twin_knows_the_truth() -> None:
    data = sim_data()
    assert devices_on_hardware(parse_config(data)) == []
    assert twin_ground_truth(parse_config(data))
    cases = {
        "turntable": {"link": {"kind": "serial", "port": "/dev/ttyUSB0"}},
        "lightbox": {"link": {"kind": "tcp", "host": "10.0.0.5"}},
        "arm": {"link": {"kind": "serial", "port": "/dev/ttyACM0"}},
    }
    for device, link in cases.items():
        changed = sim_data()
        changed[device].pop("emulate")
        changed[device].update(link)
        config = parse_config(changed)
        assert devices_on_hardware(config) == [device]
        assert not twin_ground_truth(config), device  # each of them moves the twin
    # a real camera does not move the twin: what the twin knows stays true (unrecorded)
    webcam = sim_data()
    webcam["camera"] = {"driver": "opencv", "source": 0}
    assert devices_on_hardware(parse_config(webcam)) == ["camera"]
    assert twin_ground_truth(parse_config(webcam))


def test_sim_camera_without_ground_truth_writes_no_sim_fields() -> None:
    world = World()
    world.place_on_turntable(CoinPlacement("SIM-0000", "obverse"))
    config = SimCameraConfig(driver="sim", width=32, height=32)
    catalog = CoinCatalog(coins=1)
    for truth in (True, False):
        camera = SimCamera(config, world, catalog, ground_truth=truth)
        camera.connect()
        frame = camera.grab()
        camera.close()
        assert (frame.sim is not None) is truth
        assert isinstance(frame.image, np.ndarray)


def test_open_rig_marks_a_mixed_twin(tmp_path: Path, real_turntable: GrblEmulator) -> None:
    config = parse_config(yaml.safe_load(mixed_config(tmp_path, real_turntable.port).read_text()))
    with open_rig(config) as rig:
        assert rig.twin is not None
        assert rig.twin.on_hardware == ("turntable",)
        assert not rig.twin.ground_truth
        assert rig.twin.mixed_warning is not None and "turntable" in rig.twin.mixed_warning
        rig.turntable.home()
        rig.turntable.move_to_deg(90.0)
        assert rig.twin.world.snapshot().turntable_deg == 0.0  # why the truth is withheld
        assert rig.camera.grab().sim is None


def test_simulate_refuses_a_mixed_config(tmp_path: Path, real_turntable: GrblEmulator) -> None:
    config = mixed_config(tmp_path, real_turntable.port)
    out = tmp_path / "sim"
    result = CliRunner().invoke(
        app,
        [
            *("simulate", "--config", str(config), "--coins", "1", "--image-size", "32"),
            *("--plan", str(write_plan(tmp_path / "plan.yaml", PLAN)), "--out", str(out)),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "every device emulated" in result.output and "turntable" in result.output
    assert not out.exists()


def test_capture_on_a_mixed_rig_warns_records_and_writes_no_twin_truth(
    tmp_path: Path, real_turntable: GrblEmulator
) -> None:
    config = mixed_config(tmp_path, real_turntable.port)
    out = tmp_path / "data"
    plan = write_plan(tmp_path / "plan.yaml", PLAN)
    result = CliRunner().invoke(
        app,
        [
            *("capture", "--coin", "SIM-0001", "--slot", "1", "--config", str(config)),
            *("--plan", str(plan), "--out", str(out)),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "warning: this rig mixes hardware (turntable)" in result.output
    captures = [line for line in metadata_lines(out) if line["role"] == "capture"]
    # the real table's angles, as its controller reports them (to its step resolution)
    assert [c["turntable_deg"] for c in captures] == pytest.approx([90.0, 200.0], abs=0.1)
    assert all("sim" not in c for c in captures), captures[0]
    coin = json.loads((out / "coins.jsonl").read_text().splitlines()[0])
    assert coin["coin_id"] == "SIM-0001" and "ruler" not in coin and "type" not in coin
    (session,) = DatasetReader(out).sessions()
    assert any("mixes hardware (turntable)" in w for w in session["warnings"])
    assert session["rig_config"]["turntable"]["emulate"] is None  # recorded as it was
