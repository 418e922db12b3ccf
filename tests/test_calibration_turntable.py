"""`rig calibrate turntable`: the rotation model, and the fit against the twin's hidden geometry."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from capture.calibration.staging import Stager, stager_for
from capture.calibration.store import CalibrationError
from capture.calibration.turntable import calibrate_turntable, fit_rotation, turn, zero_offset_deg
from rig.assembly import open_rig
from rig.config import RigConfig, load_config, parse_config
from rig.devices import Rig
from rig.sim.shading import Optics
from rig.sim.target_geometry import truth_turntable
from rig.sim.target_scene import TwinRig
from rig.sim.world import CoinPlacement

CONFIG = load_config("sim")


def staged(rig: Rig, twin: TwinRig | None = None) -> Stager:
    """The twin placing targets (the sim backend always has one)."""
    stage = stager_for(rig, twin)
    assert stage is not None
    return stage


def with_axis(config: RigConfig, axis_mm: tuple[float, float]) -> RigConfig:
    """The config with the twin's turntable axis moved (coins and targets both follow it)."""
    data = config.model_dump(mode="json")
    data["simulation"]["turntable_axis_offset_mm"] = list(axis_mm)
    return parse_config(data)


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
    ("axis_mm", "twin"),
    [
        ((0.9, -0.65), TwinRig()),
        ((-2.0, 1.5), TwinRig(zero_offset_deg=-100.0, rotation_sense=-1)),
    ],
    ids=["default", "clockwise"],
)
def test_fit_matches_the_twin(axis_mm: tuple[float, float], twin: TwinRig) -> None:
    config = with_axis(CONFIG, axis_mm)
    with open_rig(config) as rig:
        run = calibrate_turntable(rig, config, staged(rig, twin), angles=8)
        assert rig.turntable.position_deg() == pytest.approx(0.0)  # left at zero
    optics = Optics(40.0, 20.0, 0.0, axis_offset_mm=axis_mm)
    truth = truth_turntable(512, 512, optics, twin)
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


def coin_centroid(image: np.ndarray) -> tuple[float, float]:
    """Centre of mass of the coin's silhouette (the biggest bright blob, holes filled)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    _, mask = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, [max(contours, key=cv2.contourArea)], -1, 255, cv2.FILLED)
    m = cv2.moments(filled, binaryImage=True)
    return m["m10"] / m["m00"], m["m01"] / m["m00"]


def test_coins_turn_about_the_calibrated_centre() -> None:
    # the rig config's one axis setting moves the coins and the calibration marker together,
    # so the centre training crops and de-rotates about is where coin frames really turn
    config = with_axis(CONFIG, (0.9, -0.65))
    angles = [0.0, 60.0, 120.0, 180.0, 240.0, 300.0]
    with open_rig(config) as rig:
        calibrated = calibrate_turntable(rig, config, staged(rig), angles=8).result
        assert rig.twin is not None
        rig.twin.world.place_on_turntable(CoinPlacement("SIM-0003", "obverse"))
        rig.lightbox.set_pattern("diffuse")  # no cast shadows to drag the silhouette
        centroids = []
        for angle in angles:
            rig.turntable.move_to_deg(angle)
            centroids.append(coin_centroid(rig.camera.grab().image))
    track = fit_rotation(np.array(angles), np.array(centroids)[:, None, :])
    assert track.sign == calibrated.rotation_sign
    assert np.hypot(*(track.centre - np.array(calibrated.centre_px))) < 1.0
    # and the axis is well off the image centre, so agreeing is not a coincidence
    assert np.hypot(*(np.array(calibrated.centre_px) - 255.5)) > 10.0
