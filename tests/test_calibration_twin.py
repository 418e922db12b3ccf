"""The twin's calibration targets: rendered through the camera path, consistent with its truth."""

from __future__ import annotations

import numpy as np
import pytest

from capture.calibration.camera import detect_board, make_board
from capture.calibration.models import BoardSpec
from rig.config import load_config
from rig.sim.camera import SimCamera, pattern_lights
from rig.sim.coins import CoinCatalog
from rig.sim.shading import Optics, grid_size_for, view_transform
from rig.sim.target_geometry import board_frame, pinhole, truth_turntable
from rig.sim.target_scene import ArucoMarker, CharucoBoard, GreyCard, TargetScene, TwinRig
from rig.sim.targets import truth_card_flat
from rig.sim.world import CoinPlacement, World

CONFIG = load_config("sim")
AXIS_MM = (0.9, -0.65)  # the turntable axis off the optical axis, for coins and targets alike
OPTICS = Optics(40.0, 20.0, 0.0, axis_offset_mm=AXIS_MM)


@pytest.fixture
def camera() -> tuple[SimCamera, World]:
    world = World()
    for name, light in pattern_lights(CONFIG.lightbox, {"dome": 1.0}).items():
        world.set_light(name, light)
    assert CONFIG.camera.driver == "sim"
    cam = SimCamera(CONFIG.camera, world, CoinCatalog(coins=2), axis_offset_mm=AXIS_MM)
    cam.connect()
    return cam, world


def test_board_corners_land_where_the_true_camera_projects_them(
    camera: tuple[SimCamera, World],
) -> None:
    cam, world = camera
    rig = TwinRig()
    board = CharucoBoard(wedge_deg=25.0, position_mm=(3.0, 1.0))
    world.place_target(TargetScene(board, rig))
    world.set_turntable_deg(70.0)
    frame = cam.grab()
    assert frame.sim is not None and frame.sim["target"] == "charuco"
    found = detect_board(frame.image, make_board(BoardSpec()))
    assert found is not None and len(found.ids) >= 20
    origin, u, v = board_frame(board, rig, 70.0, axis_mm=AXIS_MM)
    points = origin + found.object_points[:, :1] * u + found.object_points[:, 1:2] * v
    truth = pinhole(512, 512, OPTICS, rig).project(points)
    error = np.linalg.norm(truth - found.image_points, axis=1)
    assert float(np.sqrt(np.mean(error**2))) < 0.15


def test_a_target_hides_the_coin_and_leaves_with_it(camera: tuple[SimCamera, World]) -> None:
    cam, world = camera
    world.place_on_turntable(CoinPlacement("SIM-0000", "obverse"))
    coin = cam.grab().image.astype(int)
    world.place_target(TargetScene(ArucoMarker()))
    marker = cam.grab().image.astype(int)
    assert np.abs(coin - marker).mean() > 10
    world.place_target(None)
    assert np.abs(cam.grab().image.astype(int) - coin).mean() < 3


def test_the_card_shows_the_stage_lighting(camera: tuple[SimCamera, World]) -> None:
    cam, world = camera
    world.place_target(TargetScene(GreyCard()))
    image = cam.grab().image.astype(float)
    lights = world.snapshot().lights
    flat = truth_card_flat(lights, 512, 512, Optics(40.0, 20.0, 0.0)).mean(axis=2)
    # the vignette seen in the frame is the truth's, up to noise and the gamma curve
    ratio_frame = image[250:262, 250:262].mean() / image[10:22, 10:22].mean()
    ratio_truth = (flat[250:262, 250:262].mean() / flat[10:22, 10:22].mean()) ** (1 / 2.2)
    assert ratio_frame == pytest.approx(ratio_truth, rel=0.02)


@pytest.mark.parametrize("axis_mm", [(0.0, 0.0), AXIS_MM, (-2.0, 1.5)])
def test_turntable_truth_is_where_coin_renders_turn(axis_mm: tuple[float, float]) -> None:
    # one setting (Optics.axis_offset_mm, from simulation.turntable_axis_offset_mm) places the
    # coin renderer's axis and the targets' platter: the truth a turntable fit is judged
    # against is the pixel coins turn about
    optics = Optics(40.0, 20.0, 0.0, axis_offset_mm=axis_mm)
    truth = truth_turntable(512, 512, optics, TwinRig())
    grid = grid_size_for(512, optics)
    middle = grid / 2 - 0.5  # the coin grid's centre lies on the axis
    for angle in (0.0, 137.0):
        x, y, w = view_transform(512, 512, grid, angle, optics) @ [middle, middle, 1.0]
        assert np.hypot(x / w - truth["centre_x_px"], y / w - truth["centre_y_px"]) < 0.01
    expected = (255.5 + 12.8 * axis_mm[0], 255.5 + 12.8 * axis_mm[1])
    assert (truth["centre_x_px"], truth["centre_y_px"]) == pytest.approx(expected, abs=0.01)
    assert truth["px_per_mm"] == pytest.approx(12.8)


def test_near_lights_give_the_card_a_gradient_coins_never_see() -> None:
    lights = pattern_lights(CONFIG.lightbox, {"north": 1.0})
    far = truth_card_flat(lights, 512, 512, OPTICS).mean(axis=2)
    near = truth_card_flat(lights, 512, 512, OPTICS, TwinRig(light_distance_mm=300.0)).mean(axis=2)
    # lights at infinity (the default, as coins are lit): only the lens fall-off, symmetric
    assert far[20, 255] == pytest.approx(far[491, 255], rel=1e-4)
    # the north light 300 mm away lights the top of the field more than the bottom
    assert near[20, 255] / near[491, 255] > 1.2
    assert near[256, 256] == pytest.approx(far[256, 256], rel=0.01)  # same level in the middle
