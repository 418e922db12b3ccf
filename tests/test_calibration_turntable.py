"""`rig calibrate turntable`: the rotation model, and the fit against the twin's hidden geometry."""

from __future__ import annotations

import numpy as np
import pytest

from rig.backend import open_rig
from rig.calibration.staging import stager_for
from rig.calibration.store import CalibrationError
from rig.calibration.turntable import calibrate_turntable, fit_rotation, turn, zero_offset_deg
from rig.config import load_config
from rig.sim.shading import Optics
from rig.sim.targets import TwinRig, truth_turntable

CONFIG = load_config("configs/sim.yaml")


@pytest.mark.parametrize("sign", [1, -1])
def test_rotation_model_is_recovered_exactly(sign: int) -> None:
    centre = np.array([300.0, 200.0])
    square = np.array([[-5.0, -5.0], [5.0, -5.0], [5.0, 5.0], [-5.0, 5.0]])
    offset = np.array([60.0, 10.0])
    q = (turn(30.0) @ (square + offset).T).T  # marker x axis at 30° at driver zero
    angles = np.array([0.0, 45.0, 100.0, 200.0, 290.0])
    corners = np.stack([centre + (turn(sign * a) @ q.T).T for a in angles])
    fit = fit_rotation(angles, corners)
    assert fit.sign == sign and np.allclose(fit.centre, centre) and fit.residual_px < 1e-9
    assert zero_offset_deg(fit.corners_at_zero) == pytest.approx(30.0)


def test_too_little_rotation_is_refused() -> None:
    corners = np.zeros((3, 4, 2))
    with pytest.raises(CalibrationError, match="span only"):
        fit_rotation(np.array([0.0, 10.0, 20.0]), corners)


@pytest.mark.parametrize(
    "twin",
    [
        TwinRig(),
        TwinRig(axis_offset_mm=(-2.0, 1.5), zero_offset_deg=-100.0, rotation_sense=-1),
    ],
    ids=["default", "clockwise"],
)
def test_fit_matches_the_twin(twin: TwinRig) -> None:
    with open_rig(CONFIG) as rig:
        run = calibrate_turntable(rig, CONFIG, stager_for(rig, twin), angles=8)
        assert rig.turntable.position_deg() == pytest.approx(0.0)  # left at zero
    truth = truth_turntable(512, 512, Optics(40.0, 20.0, 0.0), twin)
    r = run.result
    centre_error = np.hypot(
        r.centre_px[0] - truth["centre_x_px"], r.centre_px[1] - truth["centre_y_px"]
    )
    assert centre_error < 1.0
    assert r.rotation_sign == truth["rotation_sign"]
    offset_error = (r.zero_offset_deg - truth["zero_offset_deg"] + 180.0) % 360.0 - 180.0
    assert abs(offset_error) < 0.5
    assert r.px_per_mm == pytest.approx(truth["px_per_mm"], rel=0.005)
    assert r.residual_px < 0.3 and len(r.angles_deg) == 8
