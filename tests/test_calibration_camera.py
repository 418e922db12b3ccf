"""`rig calibrate camera` against the twin: the board through the real drivers, a fit, the truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from capture.calibration.camera import BoardView, calibrate_camera, distort_px, undistort_px
from capture.calibration.staging import Stager, stager_for
from capture.calibration.store import CalibrationError
from pipeline.rig_cli.calibrate import register
from rig.assembly import open_rig
from rig.config import load_config
from rig.devices import Rig
from rig.sim.shading import Optics
from rig.sim.target_geometry import truth_intrinsics
from rig.sim.target_scene import TwinRig

ROOT = Path(__file__).resolve().parents[1]
CONFIG = load_config("sim")


def staged(rig: Rig, twin: TwinRig | None = None) -> Stager:
    """The twin placing targets (the sim backend always has one)."""
    stage = stager_for(rig, twin)
    assert stage is not None
    return stage


@pytest.mark.parametrize(
    "twin",
    [TwinRig(), TwinRig(principal_offset_px=(7.0, -4.5))],
    ids=["centred", "off-centre"],  # coin renders have the first; the second tests the fit
)
def test_fit_recovers_the_twin_lens(twin: TwinRig) -> None:
    with open_rig(CONFIG) as rig:
        run = calibrate_camera(rig, CONFIG, staged(rig, twin))
    result = run.fit.result
    assert result.rms_px < 0.5 and result.views_used >= 15 and not run.warnings
    matrix, distortion = truth_intrinsics(512, 512, Optics(40.0, 20.0, 0.0), twin)
    fitted = np.array(result.camera_matrix)
    assert fitted[0, 0] == pytest.approx(matrix[0, 0], rel=0.01)
    assert fitted[1, 1] == pytest.approx(matrix[1, 1], rel=0.01)
    assert np.hypot(*(fitted[:2, 2] - matrix[:2, 2])) < 4.0  # the principal point
    assert result.distortion[0] == pytest.approx(distortion[0], abs=0.15)
    # the fitted lens moves image corners as the true one does, to a fraction of a pixel
    corners = np.array([[0.0, 0.0], [511.0, 0.0], [0.0, 511.0], [511.0, 511.0]])
    fitted_flat = undistort_px(corners, fitted, np.array(result.distortion))
    true_flat = undistort_px(corners, matrix, distortion)
    assert np.abs((fitted_flat - corners) - (true_flat - corners)).max() < 0.5
    assert np.allclose(distort_px(fitted_flat, fitted, np.array(result.distortion)), corners)


def test_too_few_views_is_refused() -> None:
    with open_rig(CONFIG) as rig, pytest.raises(CalibrationError, match="at least 6"):
        calibrate_camera(rig, CONFIG, staged(rig), views=[BoardView(0.0, 0.0)] * 3)


def test_command_refuses_a_fit_above_the_threshold(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    args = ["calibrate", "camera", "--config", "sim"]
    result = CliRunner().invoke(app, [*args, "--folder", str(tmp_path), "--max-rms", "0.01"])
    assert result.exit_code == 1
    assert "refused" in result.output and "nothing written" in result.output
    assert not list(tmp_path.rglob("*.json"))
