"""The simulated camera's trigger: the frame shows the world as the exposure began.

The capture engine moves on to the next shot once `wait_exposed()` returns, while the twin
renders on its own thread (rig.devices.TriggeredCamera); these tests pin down that the frame
and its ground truth still describe the moment of the exposure.
"""

from __future__ import annotations

import numpy as np
import pytest

from rig.config import SimCameraConfig, load_config
from rig.devices import TriggeredCamera
from rig.sim.camera import SimCamera, pattern_lights
from rig.sim.clock import SimClock
from rig.sim.coins import CoinCatalog
from rig.sim.world import CoinPlacement, World

CONFIG = SimCameraConfig(driver="sim", width=96, height=96, exposure_us=20000)
LIGHTBOX = load_config("sim").lightbox


def _set_pattern(world: World, name: str) -> None:
    for channel, light in pattern_lights(LIGHTBOX, LIGHTBOX.patterns[name]).items():
        world.set_light(channel, light)


def _camera(world: World, clock: SimClock | None = None) -> SimCamera:
    camera = SimCamera(CONFIG, world, CoinCatalog(seed=0, coins=4), clock or SimClock(0.0))
    camera.connect()
    return camera


def _scene(world: World, angle_deg: float, pattern: str) -> None:
    world.set_turntable_deg(angle_deg)
    _set_pattern(world, pattern)


def test_triggered_frame_shows_the_world_at_exposure_time() -> None:
    """The world changes right after the trigger; the frame and its truth do not."""
    world, reference_world = World(), World()
    for w in (world, reference_world):
        w.place_on_turntable(CoinPlacement("SIM-0001", "obverse"))
    camera, reference = _camera(world), _camera(reference_world)
    try:
        assert isinstance(camera, TriggeredCamera)
        frames = []
        for angle, pattern in ((30.0, "raking_n"), (75.0, "diffuse"), (120.0, "top")):
            _scene(world, angle, pattern)
            pending = camera.trigger()
            pending.wait_exposed()
            # the rig moves on before the frame is collected, and the coin is flipped
            _scene(world, angle + 90.0, "raking_e")
            world.place_on_turntable(CoinPlacement("SIM-0001", "reverse"))
            frames.append(pending)
            world.place_on_turntable(CoinPlacement("SIM-0001", "obverse"))
            # the same scene grabbed the plain way, by a camera with the same seed
            _scene(reference_world, angle, pattern)
            expected = reference.grab()
            frame = pending.result(timeout_s=30)
            assert frame.sim is not None and expected.sim is not None
            assert frame.sim == expected.sim
            assert frame.sim["turntable_deg"] == angle and frame.sim["side"] == "obverse"
            # same noise too: per-frame generators are drawn in trigger order
            assert np.array_equal(frame.image, expected.image)
    finally:
        camera.close()
        reference.close()


def test_exposure_is_booked_at_trigger_and_frames_render_in_order() -> None:
    world = World()
    world.place_on_turntable(CoinPlacement("SIM-0002", "reverse"))
    _set_pattern(world, "top")
    clock = SimClock(0.0)
    camera = _camera(world, clock)
    try:
        pending = []
        for angle in (0.0, 10.0, 20.0, 30.0):
            world.set_turntable_deg(angle)
            pending.append(camera.trigger())
        # booked as the shutter opened, before any frame was collected
        assert [e.action for e in clock.entries()] == ["exposure"] * 4
        assert clock.physical_duration_s("camera") == pytest.approx(0.08)
        truths = [p.result(timeout_s=30).sim for p in reversed(pending)]
        assert [t["turntable_deg"] for t in truths if t] == [30.0, 20.0, 10.0, 0.0]
        assert camera.status().details["frames"] == 4
    finally:
        camera.close()


def test_close_renders_what_was_triggered_and_stops_the_thread() -> None:
    world = World()
    world.place_on_turntable(CoinPlacement("SIM-0000", "obverse"))
    camera = _camera(world)
    pending = camera.trigger()
    camera.close()  # joins the render thread (the autouse fixture checks none is left)
    assert pending.result(timeout_s=0).sim is not None
    camera.close()  # idempotent


def test_a_render_failure_reaches_whoever_collects_the_frame() -> None:
    world = World()
    world.place_on_turntable(CoinPlacement("NOT-IN-CATALOG", "obverse"))
    camera = _camera(world)
    try:
        pending = camera.trigger()
        pending.wait_exposed()
        with pytest.raises(LookupError):
            pending.result(timeout_s=30)
        # the camera goes on working
        world.place_on_turntable(CoinPlacement("SIM-0000", "obverse"))
        assert camera.trigger().result(timeout_s=30).sim is not None
    finally:
        camera.close()
