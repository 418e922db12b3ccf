"""The simulated camera: the Camera interface, metadata, ground truth and the clock ledger."""

from __future__ import annotations

import numpy as np
import pytest

from rig.config import SimCameraConfig, SimulationConfig, load_config
from rig.devices import Camera
from rig.errors import ConfigError, NotConnected, SafetyError
from rig.sim.camera import SimCamera, pattern_lights
from rig.sim.clock import SimClock
from rig.sim.coins import CoinCatalog
from rig.sim.relief import coin_surface
from rig.sim.shading import Optics, coverage_view, render_view
from rig.sim.world import CoinPlacement, LightState, World

CONFIG = SimCameraConfig(driver="sim", width=128, height=96, exposure_us=20000)


@pytest.fixture
def rig() -> tuple[SimCamera, World, SimClock]:
    world = World()
    lightbox = load_config("sim").lightbox
    for name, light in pattern_lights(lightbox, lightbox.patterns["top"]).items():
        world.set_light(name, light)
    clock = SimClock(0.0)
    camera = SimCamera(CONFIG, world, CoinCatalog(seed=0, coins=8), clock)
    camera.connect()
    return camera, world, clock


def test_is_a_camera_and_needs_connecting() -> None:
    camera = SimCamera(CONFIG, World(), CoinCatalog(coins=2))
    assert isinstance(camera, Camera)
    with pytest.raises(NotConnected):
        camera.grab()
    camera.connect()
    assert camera.identity().driver == "sim" and camera.identity().serial == CONFIG.serial
    camera.close()
    camera.close()  # idempotent
    assert camera.status().state == "closed"


def test_frame_metadata_and_ground_truth(rig: tuple[SimCamera, World, SimClock]) -> None:
    camera, world, _ = rig
    world.place_on_turntable(CoinPlacement("SIM-0003", "reverse", spin_deg=20.0))
    world.set_turntable_deg(400.0)
    world.set_tilt_deg(5.0)
    frame = camera.grab()
    assert (frame.width, frame.height) == (128, 96)
    assert frame.image.shape == (96, 128, 3) and frame.image.dtype == np.uint8
    assert frame.pixel_format == "RGB8" and frame.exposure_us == 20000 and frame.gain_db == 0
    assert frame.camera == f"sim:{CONFIG.serial}"
    assert frame.sim is not None
    assert frame.sim["coin"] == "SIM-0003" and frame.sim["side"] == "reverse"
    assert frame.sim["true_angle_deg"] == pytest.approx(60.0)  # 400 + 20, modulo a turn
    assert frame.sim["tilt_deg"] == 5.0
    assert frame.sim["lights"] == {
        "north": 0.0,
        "east": 0.0,
        "south": 0.0,
        "west": 0.0,
        "top": 0.8,
        "dome": 0.2,
    }


def test_renders_what_the_world_holds(rig: tuple[SimCamera, World, SimClock]) -> None:
    camera, world, _ = rig
    empty = camera.grab()
    assert empty.sim is not None and empty.sim["coin"] is None
    assert empty.image.std() < 6  # the bare stage
    world.place_on_turntable(CoinPlacement("SIM-0001", "obverse"))
    world.set_turntable_deg(30.0)
    frame = camera.grab()
    lights = world.snapshot().lights
    expected = render_view(
        camera.catalog, "SIM-0001", "obverse", 30.0, lights, size=(128, 96), seed_noise=None
    )
    diff = np.abs(frame.image.astype(int) - expected.astype(int))
    assert diff.mean() < 3  # the same view, up to sensor noise
    world.set_turntable_deg(120.0)
    turned = camera.grab()
    assert np.abs(turned.image.astype(int) - frame.image.astype(int)).mean() > 5


def test_exposure_is_physical_time(rig: tuple[SimCamera, World, SimClock]) -> None:
    camera, _, clock = rig
    camera.configure(exposure_us=50000)
    camera.grab()
    camera.grab()
    assert clock.physical_duration_s("camera") == pytest.approx(0.1)
    assert [e.action for e in clock.entries()] == ["exposure", "exposure"]


def test_configure_checks_limits_and_formats(rig: tuple[SimCamera, World, SimClock]) -> None:
    camera, world, _ = rig
    with pytest.raises(SafetyError, match="outside the configured limits"):
        camera.configure(exposure_us=5.0)
    with pytest.raises(SafetyError):
        camera.configure(gain_db=60.0)
    with pytest.raises(ConfigError, match="Mono16"):
        camera.configure(pixel_format="YUV422")
    world.place_on_turntable(CoinPlacement("SIM-0000", "obverse"))
    camera.configure(pixel_format="Mono16", gain_db=6.0)
    frame = camera.grab()
    assert frame.image.shape == (96, 128) and frame.image.dtype == np.uint16
    assert frame.pixel_format == "Mono16" and frame.gain_db == 6.0


def test_lights_change_the_image(rig: tuple[SimCamera, World, SimClock]) -> None:
    camera, world, _ = rig
    world.place_on_turntable(CoinPlacement("SIM-0002", "obverse"))
    lit = camera.grab().image.astype(int)
    for name in ("top", "dome"):
        world.set_light_intensity(name, 0.0)
    world.set_light("north", LightState(1.0, 90.0, 20.0, False))
    raking = camera.grab().image.astype(int)
    assert np.abs(lit - raking).mean() > 5


def _centroid(weights: np.ndarray) -> np.ndarray:
    ys, xs = np.indices(weights.shape)
    return np.array([(xs * weights).sum(), (ys * weights).sum()]) / weights.sum()


@pytest.mark.parametrize("angle_deg", [0.0, 90.0, 233.0])
def test_coins_turn_about_the_configured_turntable_axis(angle_deg: float) -> None:
    surface = coin_surface(CoinCatalog(seed=0, coins=2), "SIM-0001", "obverse", 64)
    centre = np.array([(128 - 1) / 2, (96 - 1) / 2])
    ppmm = 128 / Optics().field_of_view_mm
    on_axis = coverage_view(surface, angle_deg, 128, 96, Optics())
    assert _centroid(on_axis) == pytest.approx(centre, abs=0.3)
    # the coin lies centred on the axis: wherever the table turns, it stays there
    offset = Optics(axis_offset_mm=(4.0, -2.5))
    shifted = coverage_view(surface, angle_deg, 128, 96, offset)
    assert _centroid(shifted) == pytest.approx(centre + ppmm * np.array([4.0, -2.5]), abs=0.3)


def test_sim_camera_renders_the_coin_at_the_turntable_axis(
    rig: tuple[SimCamera, World, SimClock],
) -> None:
    camera, world, _ = rig
    world.place_on_turntable(CoinPlacement("SIM-0002", "obverse"))
    world.set_turntable_deg(45.0)
    offset = SimCamera(CONFIG, world, CoinCatalog(seed=0, coins=8), axis_offset_mm=(5.0, 0.0))
    offset.connect()
    bright = [f.image.astype(float).sum(axis=2) for f in (camera.grab(), offset.grab())]
    centroids = [_centroid(np.where(b > b.mean(), b, 0.0)) for b in bright]
    ppmm = CONFIG.width / CONFIG.field_of_view_mm
    assert centroids[1] - centroids[0] == pytest.approx([5.0 * ppmm, 0.0], abs=1.0)
    assert SimulationConfig().turntable_axis_offset_mm == (0.0, 0.0)
