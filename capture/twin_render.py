"""A plan's shots rendered straight from the digital twin: no emulators, drivers, arm or clock.

`rig simulate --direct` is for large twin collections (pretraining data): at 64 px a shot
costs 20 ms of CPU through the emulated rig (and ~60 ms of wall time, mostly waiting on its
wire protocols) and 5.6 ms here, rendering, encoding and writing included. Each planned shot is set up in a twin world as the rig would
leave it (the coin on the turntable as the arm lays it, its side up, the turntable's angle,
the tilt, the pattern's levels as the lightbox controller quantises them, exposure and gain)
and exposed by the same simulated camera, whose noise is drawn per view: a direct frame is the
rig's frame of that shot. Lines are a session's lines (capture.records.shot_metadata, with
the twin's ground truth) plus `source`, and the writer is the crash-safe one, so the dataset is
an ordinary one; what it lacks is what only a rig makes: session records, events, a ledger.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from capture.engine import CoinJob, ShotSettings
from capture.events import utc_now
from capture.plan import Plan, ShotEvent, expand
from capture.records import flat_fielded, shot_metadata
from capture.resume import ResumeIndex
from capture.writer import DatasetWriter
from dataset.layout import image_name
from rig.config import ModbusLightboxConfig, RigConfig, SimCameraConfig
from rig.lightbox.modbus import intensity_to_raw, raw_to_intensity
from rig.sim.camera import SimCamera, pattern_lights
from rig.sim.coins import CoinCatalog
from rig.sim.world import CoinPlacement, World

#: the `source` of a directly rendered capture's metadata line (what made the picture)
SOURCE = "rig.sim direct render"


def pattern_levels(lightbox: ModbusLightboxConfig, levels: dict[str, float]) -> dict[str, float]:
    """Every channel's level as the controller holds it for a pattern (others off, quantised)."""
    return {
        c.name: raw_to_intensity(c, intensity_to_raw(c, float(levels.get(c.name, 0.0))))
        for c in lightbox.channels
    }


class TwinShots:
    """Renders planned shots of coins in a twin world of their own, as the rig's camera would."""

    def __init__(
        self, config: RigConfig, plan: Plan, catalog: CoinCatalog, spin_deg: Callable[[str], float]
    ) -> None:
        """`spin_deg(coin_id)`: how each coin lies in the tray (and so on the turntable)."""
        if not isinstance(config.camera, SimCameraConfig) or config.simulation is None:
            raise ValueError("direct rendering needs a config with camera sim and simulation")
        if not isinstance(config.lightbox, ModbusLightboxConfig):
            raise ValueError("direct rendering needs the lightbox's channels (driver modbus)")
        self.lightbox = config.lightbox
        self.events = expand(plan)
        self.patterns = {**self.lightbox.patterns, **plan.patterns}
        self.spin_deg = spin_deg
        self.world = World()
        self.camera = SimCamera(
            config.camera,
            self.world,
            catalog,
            coin_diameter_mm=config.simulation.coin_diameter_mm,
            axis_offset_mm=config.simulation.turntable_axis_offset_mm,
        )
        self.camera.connect()

    def close(self) -> None:
        """Stop the camera's render thread (idempotent)."""
        self.camera.close()

    def write(self, writer: DatasetWriter, coin_ids: Sequence[str], session_id: str) -> int:
        """Render and queue every planned shot the dataset lacks of these coins; returns how many.

        Raises:
            DatasetWriteError: a write failed (disk full); the dataset stays consistent.
            DatasetError: the folder holds shots of another plan under the same names.
        """
        index = ResumeIndex(writer.root)
        queued = 0
        for coin_id in coin_ids:
            todo = index.todo(coin_id, self.events, writer.image_format)
            if todo:
                self._write_coin(writer, coin_id, todo, session_id)
                queued += len(todo)
        writer.flush()
        return queued

    def _write_coin(
        self, writer: DatasetWriter, coin_id: str, todo: list[ShotEvent], session_id: str
    ) -> None:
        """A coin's shots, handled by the twin's own moves as the arm makes them.

        Laid on the turntable where it stopped, flipped through the chute where the last side
        ended, put back: the coin's rotation in the frame comes out of the same arithmetic as
        on the rig, to the last bit, so its frames (and their noise, drawn per view) are equal.
        """
        world = self.world
        up = self.events[0].side
        world.load_tray({0: CoinPlacement(coin_id, up, self.spin_deg(coin_id))})
        world.take("tray", 0)
        world.release("turntable")
        for event in todo:
            if event.side != up:
                world.take("turntable")
                world.release("chute")  # the chute turns it over
                world.take("chute")
                world.release("turntable")
                up = event.side
            self._write_shot(writer, coin_id, event, session_id)
        world.take("turntable")
        world.release("tray", 0)

    def _write_shot(
        self, writer: DatasetWriter, coin_id: str, event: ShotEvent, session_id: str
    ) -> None:
        levels = pattern_levels(self.lightbox, self.patterns[event.light])
        world = self.world
        world.set_turntable_deg(event.turntable_deg)
        world.set_tilt_deg(event.tilt_deg or 0.0)
        for name, light in pattern_lights(self.lightbox, levels).items():
            world.set_light(name, light)
        self.camera.configure(exposure_us=event.exposure_us, gain_db=event.gain_db)
        frame = self.camera.grab()
        settings = ShotSettings(event.turntable_deg, event.tilt_deg, levels)
        record = shot_metadata(session_id, CoinJob(coin_id), event, settings, frame, utc_now())
        _, record["flatfield"], _ = flat_fielded(None, frame, event.light)  # none, as on the rig
        record["source"] = SOURCE
        name = image_name(coin_id, event.side, event.index, writer.image_format)
        writer.submit(name, frame.image, record, frame.pixel_format)
