"""The simulated camera: renders the digital twin's world as the rig's camera would see it.

It implements rig.devices.Camera and TriggeredCamera (frames render while the rig moves on) and
reports the same metadata a real camera does (exposure, gain, pixel format, size, timestamp),
plus the twin's ground truth in `Frame.sim`: which coin and side lie on the turntable, the
coin's true angle in the image, the lit channels and the tilt. Each exposure is recorded in
the clock's ledger as the camera's physical time (and waited for when the clock runs in scaled
real time). Geometry conventions: see rig.sim.shading.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from rig.camera.settings import check_exposure_gain
from rig.config import ModbusLightboxConfig, SimCameraConfig
from rig.devices import DeviceIdentity, DeviceStatus, Frame
from rig.errors import ConfigError, NotConnected
from rig.sim.clock import SimClock
from rig.sim.coins import CoinCatalog, stable_rng
from rig.sim.relief import coin_surface
from rig.sim.shading import Optics, Sensor, expose, grid_size_for, radiance_view
from rig.sim.world import LightState, World, WorldSnapshot

# pixel format → (colour, bit depth); 16-bit output uses the full 0..65535 range
PIXEL_FORMATS: dict[str, tuple[bool, int]] = {
    "Mono8": (False, 8),
    "Mono16": (False, 16),
    "RGB8": (True, 8),
    "RGB16": (True, 16),
}
COIN_DIAMETER_MM = 20.0


def pixel_format_for(color: bool, bit_depth: int) -> str:
    """The pixel format name of a colour/bit-depth pair."""
    for name, spec in PIXEL_FORMATS.items():
        if spec == (color, bit_depth):
            return name
    raise ConfigError(f"no pixel format for color={color}, bit_depth={bit_depth}")


def pattern_lights(
    lightbox: ModbusLightboxConfig, levels: Mapping[str, float]
) -> dict[str, LightState]:
    """Every channel of a lightbox as the twin sees it, at the given levels (others off)."""
    unknown = sorted(set(levels) - {c.name for c in lightbox.channels})
    if unknown:
        raise ConfigError(f"unknown light channel(s) {unknown}")
    return {
        c.name: LightState(
            float(levels.get(c.name, 0.0)), c.azimuth_deg, c.elevation_deg, c.diffuse
        )
        for c in lightbox.channels
    }


class SimCamera:
    """A camera that renders the twin's world on every software trigger."""

    def __init__(
        self,
        config: SimCameraConfig,
        world: World,
        catalog: CoinCatalog,
        clock: SimClock | None = None,
        *,
        coin_diameter_mm: float = COIN_DIAMETER_MM,
        axis_offset_mm: tuple[float, float] = (0.0, 0.0),
        ground_truth: bool = True,
    ) -> None:
        """Render `world` as `config` describes; coins turn about `axis_offset_mm` (plane mm).

        `ground_truth` False: frames carry no `sim` (a real device moves what the twin cannot
        see, so the twin's state is not the truth; rig.assembly.twin_ground_truth).
        """
        self.config = config
        self.ground_truth = ground_truth
        self.world = world
        self.catalog = catalog
        self.clock = clock or SimClock(0.0)
        self.coin_diameter_mm = coin_diameter_mm
        self.axis_offset_mm = axis_offset_mm
        self._exposure_us = config.exposure_us
        self._gain_db = config.gain_db
        self._pixel_format = pixel_format_for(config.color, config.bit_depth)
        self._open = False
        self._frames = 0
        self._rng = stable_rng("sim-camera", config.serial, catalog.seed)
        self._views: dict[tuple[object, ...], int] = {}  # the coin on the table's exposures
        self._name = f"sim camera {config.serial}"
        self._jobs: queue.SimpleQueue[tuple[_Shot, Future[Frame]] | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None

    # ------------------------------------------------------------ Device

    def connect(self) -> None:
        """Open the camera (nothing to open: the twin is in-process)."""
        self._open = True

    def close(self) -> None:
        """Close the camera (idempotent); frames already triggered are still rendered."""
        self._open = False
        if self._worker is not None:
            self._jobs.put(None)
            self._worker.join()
            self._worker = None

    def _require_open(self) -> None:
        if not self._open:
            raise NotConnected(f"{self._name}: not connected (call connect() first)")

    def identity(self) -> DeviceIdentity:
        """Who the camera is.

        Raises:
            NotConnected: the camera is not open.
        """
        self._require_open()
        return DeviceIdentity(
            kind="camera",
            driver="sim",
            model=f"coinrig twin {self.config.width}x{self.config.height}",
            serial=self.config.serial,
            firmware="twin-1",
            endpoint="in-process",
        )

    def status(self) -> DeviceStatus:
        """Open/closed, settings and frames grabbed so far."""
        return DeviceStatus(
            "ready" if self._open else "closed",
            {
                "exposure_us": self._exposure_us,
                "gain_db": self._gain_db,
                "pixel_format": self._pixel_format,
                "width": self.config.width,
                "height": self.config.height,
                "frames": self._frames,
            },
        )

    # ------------------------------------------------------------ Camera

    def configure(
        self,
        *,
        exposure_us: float | None = None,
        gain_db: float | None = None,
        pixel_format: str | None = None,
    ) -> None:
        """Set exposure, gain and pixel format.

        Raises:
            NotConnected: the camera is not open.
            SafetyError: exposure or gain outside the configured limits.
            ConfigError: a pixel format the simulated camera does not offer.
        """
        self._require_open()
        check_exposure_gain(self.config, exposure_us, gain_db, name=self._name)
        if pixel_format is not None and pixel_format not in PIXEL_FORMATS:
            raise ConfigError(
                f"{self._name}: pixel format {pixel_format!r} is not offered; "
                f"choose one of {sorted(PIXEL_FORMATS)}"
            )
        if exposure_us is not None:
            self._exposure_us = float(exposure_us)
        if gain_db is not None:
            self._gain_db = float(gain_db)
        if pixel_format is not None:
            self._pixel_format = pixel_format

    def grab(self, timeout_s: float | None = None) -> Frame:
        """Expose (recording the physical time), render the world, return the frame.

        Raises:
            NotConnected: the camera is not open.
            ConfigError: a negative timeout.
        """
        self._require_open()
        if timeout_s is not None and timeout_s < 0:
            raise ConfigError(f"{self._name}: grab timeout must be >= 0 s, got {timeout_s}")
        shot = self._expose()
        # Rendered here while the exposure runs: the render no longer adds to the critical path
        # wherever it takes less time than the exposure.
        frame = self._render(shot)
        _sleep_until(shot.exposure_ends, self.clock.now)
        return frame

    def trigger(self) -> PendingFrame:
        """Start an exposure and return at once; the frame renders on its own thread.

        The world is copied as the exposure starts, so the frame shows the rig as it was then
        whatever moves once `PendingFrame.wait_exposed()` has returned: the render stands in
        for a real camera's readout and transfer, which also go on while the rig moves on.

        Raises:
            NotConnected: the camera is not open.
        """
        self._require_open()
        shot = self._expose()
        future: Future[Frame] = Future()
        if self._worker is None:
            # One long-lived thread: starting a thread per frame costs a hand-over of the
            # interpreter lock (milliseconds on a busy machine) in the rig's critical path.
            self._worker = threading.Thread(
                target=self._render_jobs, name="sim-camera-render", daemon=True
            )
            self._worker.start()
        self._jobs.put((shot, future))
        return PendingFrame(shot.exposure_ends, future, self.clock.now)

    def _render_jobs(self) -> None:
        """The render thread: frames in trigger order until close() sends None."""
        while (job := self._jobs.get()) is not None:
            shot, future = job
            try:
                future.set_result(self._render(shot))
            except BaseException as exc:  # handed to whoever collects the frame
                future.set_exception(exc)

    def _expose(self) -> _Shot:
        """Copy the world and the settings and book the exposure: the moment the shutter opens."""
        self._frames += 1
        snap = self.world.snapshot()
        return _Shot(
            snap=snap,
            exposure_us=self._exposure_us,
            gain_db=self._gain_db,
            pixel_format=self._pixel_format,
            rng=self._frame_rng(snap),
            timestamp_s=time.time(),
            exposure_ends=self.clock.record("camera", "exposure", self._exposure_us / 1e6),
        )

    def _frame_rng(self, snap: WorldSnapshot) -> np.random.Generator:
        """One frame's noise generator, fixed as the shutter opens (so render order is free).

        A coin frame's seed is its view (coin, side, angles, lights, settings) and how often
        this camera exposed that view before: a coin's shots get the same noise whichever tray
        load, worker process (`rig simulate --workers`) or place in a run takes them, and a
        repeated exposure still gets new noise. Other frames (calibration targets, an empty
        table) draw from the camera's own stream in trigger order.
        """
        coin = snap.on_turntable
        if coin is None or snap.target is not None:
            return np.random.default_rng(int(self._rng.integers(0, 2**63)))
        lights = tuple(sorted((name, light.intensity) for name, light in snap.lights.items()))
        view: tuple[object, ...] = (coin.coin_id, coin.side_up, coin.spin_deg, snap.turntable_deg)
        view += (snap.tilt_deg, lights, self._exposure_us, self._gain_db, self._pixel_format)
        if next(iter(self._views), (coin.coin_id,))[0] != coin.coin_id:
            self._views.clear()  # another coin: memory stays one coin's views in a long run
        repeat = self._views[view] = self._views.get(view, -1) + 1
        return stable_rng("sim-camera", self.config.serial, self.catalog.seed, view, repeat)

    def _render(self, shot: _Shot) -> Frame:
        """The frame of an exposure: a pure function of what `_expose` copied."""
        snap = shot.snap
        color, bit_depth = PIXEL_FORMATS[shot.pixel_format]
        width, height = self.config.width, self.config.height
        optics = Optics(
            field_of_view_mm=self.config.field_of_view_mm,
            coin_diameter_mm=self.coin_diameter_mm,
            tilt_deg=snap.tilt_deg,
            axis_offset_mm=self.axis_offset_mm,
        )
        placement = snap.on_turntable
        angle = snap.turntable_deg + (placement.spin_deg if placement is not None else 0.0)
        if snap.target is not None:
            # a calibration target hides the coin: same lights, optics and sensor as coin frames
            from rig.sim.targets import target_radiance

            radiance = target_radiance(
                snap.target, snap.lights, snap.turntable_deg, width, height, optics
            )
        else:
            surface = None
            if placement is not None:
                grid = grid_size_for(width, optics)
                surface = coin_surface(self.catalog, placement.coin_id, placement.side_up, grid)
            radiance = radiance_view(surface, snap.lights, angle, width, height, optics)
        sensor = Sensor(
            exposure_us=shot.exposure_us,
            gain_db=shot.gain_db,
            read_noise_e=self.config.read_noise_e,
            full_well_e=self.config.full_well_e,
            bit_depth=bit_depth,
            color=color,
        )
        image = expose(radiance, sensor, shot.rng)
        truth = {
            "coin": placement.coin_id if placement is not None else None,
            "side": placement.side_up if placement is not None else None,
            "true_angle_deg": float(np.mod(angle, 360.0)),
            "turntable_deg": snap.turntable_deg,
            "lights": {name: light.intensity for name, light in snap.lights.items()},
            "tilt_deg": snap.tilt_deg,
            "target": snap.target.kind if snap.target is not None else None,
        }
        return Frame(
            image=image,
            exposure_us=shot.exposure_us,
            gain_db=shot.gain_db,
            pixel_format=shot.pixel_format,
            camera=f"sim:{self.config.serial}",
            timestamp_s=shot.timestamp_s,
            sim=truth if self.ground_truth else None,
        )


@dataclass(frozen=True)
class _Shot:
    """What one exposure saw and was set to, copied as the shutter opened."""

    snap: WorldSnapshot
    exposure_us: float
    gain_db: float
    pixel_format: str
    rng: np.random.Generator
    timestamp_s: float
    exposure_ends: float  # monotonic wall time at which the (scaled) exposure is over


class PendingFrame:
    """A triggered exposure (rig.devices.Exposure): the rig may move on after `wait_exposed()`."""

    def __init__(
        self, exposure_ends: float, future: Future[Frame], now: Callable[[], float]
    ) -> None:
        self._exposure_ends = exposure_ends
        self._future = future
        self._now = now

    def wait_exposed(self) -> None:
        """Return once the exposure is over (at time scale 0: at once)."""
        _sleep_until(self._exposure_ends, self._now)

    def result(self, timeout_s: float | None = None) -> Frame:
        """The frame, once rendered (re-raises what the render raised).

        Raises:
            TimeoutError: not rendered within `timeout_s`.
        """
        return self._future.result(timeout=timeout_s)


def _sleep_until(deadline: float, now: Callable[[], float]) -> None:
    remaining = deadline - now()
    if remaining > 0:
        time.sleep(remaining)
