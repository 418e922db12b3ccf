"""The shots of a coin in flight: exposed, their frames collected while the next ones are set up.

A shot is set up and exposed, then left to read out while the rig moves on to the next shots;
its frame is collected (and queued for writing) once IN_FLIGHT newer shots are exposed, before
the coin is flipped or leaves the table, and on the way out of any error (it was exposed: it is
a good shot). A frame lost after its exposure is taken again from scratch; a shot that still
fails is skipped or pauses the session, as its plan says. An exposed shot whose frame cannot be
kept on the way out is noted as lost after its exposure, not as not taken.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass

from capture.calibration.flatfield import FlatFieldCorrector
from capture.ending import PauseSession, stop_if_asked
from capture.engine import CaptureEngine, CoinJob, Collected, ShotSettings
from capture.events import (
    Emitter,
    FinishReason,
    SessionProgress,
    ShotDone,
    ShotRetry,
    ShotSkipped,
    utc_now,
)
from capture.plan import ShotEvent
from capture.records import flat_fielded, shot_metadata
from capture.tally import SessionSpec, SessionTally
from capture.writer import DatasetWriter
from dataset.layout import image_name
from rig.devices import Exposure, Frame
from rig.errors import RigError

log = logging.getLogger(__name__)

# Shots whose frames may still be reading out while the next ones are set up and exposed: two
# give a frame two shots' light switches and exposures to arrive in, so a camera (or the twin's
# render) a little slower than one shot now and then does not hold the rig up.
IN_FLIGHT = 2


@dataclass
class InFlightShot:
    """A shot whose exposure is over and whose frame may still be reading out."""

    job: CoinJob
    event: ShotEvent
    settings: ShotSettings
    exposure: Exposure
    captured_at: str


class ShotPipeline:
    """Sets up, exposes, collects and queues for writing the shots of one coin after another."""

    def __init__(
        self,
        spec: SessionSpec,
        engine: CaptureEngine,
        writer: DatasetWriter,
        tally: SessionTally,
        progress: SessionProgress,
        emitter: Emitter,
        stop: threading.Event,
        flatfield: FlatFieldCorrector | None = None,
    ) -> None:
        self.session_id = spec.session_id
        self.engine = engine
        self.writer = writer
        self.tally = tally
        self.progress = progress
        self.emitter = emitter
        self.stop = stop
        self.flatfield = flatfield
        self._patterns = dict(spec.plan.patterns)
        self._in_flight: deque[InFlightShot] = deque()

    def shoot(self, job: CoinJob, event: ShotEvent) -> None:
        """Set up and expose `event`, collecting earlier frames while the rig was set up.

        Raises:
            PauseSession: the shot failed for good and its plan does not skip, or a stop
                was requested.
        """
        self.progress.at_shot(event.index)
        settings = self._setup(event)
        if self._collect_down_to(IN_FLIGHT - 1):
            settings = self._setup(event)  # the rig was set up again for a retaken shot
        if isinstance(settings, RigError):
            self._failed(job, event, settings)
            return
        stop_if_asked(self.stop)  # a stop asked for while frames were collected: take no more
        captured_at = utc_now()
        try:
            exposure = self.engine.start_shot(event)
        except RigError as exc:
            self._failed(job, event, exc)
            return
        self._in_flight.append(InFlightShot(job, event, settings, exposure, captured_at))

    def collect_all(self) -> None:
        """Collect every shot in flight (before a flip, before the coin leaves the table)."""
        self._collect_down_to(0)

    def keep_on_the_way_out(self) -> None:
        """Keep exposed shots while an error unwinds; never move a device, never raise."""
        in_flight = self._in_flight
        while in_flight:
            shot = in_flight[0]
            try:
                self._collect(retake=False)
            except Exception as exc:
                job, event = shot.job, shot.event
                if in_flight and in_flight[0] is shot:  # not queued for writing
                    in_flight.popleft()
                    self.tally.lost[self._file_name(job, event)] = f"lost after its exposure: {exc}"
                self.tally.errors.append(f"shot {event.index} of {job.coin_id} lost: {exc}")
                log.warning("shot %d of %s lost: %s", event.index, job.coin_id, exc)

    def _collect_down_to(self, count: int) -> bool:
        """Collect the oldest shots until `count` are left in flight; True if one was retaken."""
        retaken = False
        while len(self._in_flight) > count:
            retaken |= self._collect()
        return retaken

    def _setup(self, event: ShotEvent) -> ShotSettings | RigError:
        """Set the rig up for a shot; a device failure (after retries) is returned, not raised."""
        try:
            return self.engine.setup_shot(event, self._patterns)
        except RigError as exc:
            return exc

    def _collect(self, *, retake: bool = True) -> bool:
        """Wait for the oldest shot's frame and queue it for writing; True if it was retaken.

        The shot leaves the queue only once it is queued for writing, skipped or has paused
        the session: an interrupt or a write error before that leaves it for the way out.
        A frame lost after its exposure is taken again from scratch (`retake`), with the
        engine's retries; a shot that still fails is skipped or pauses, as its plan says.
        """
        in_flight = self._in_flight
        shot, retaken = in_flight[0], False
        try:
            frame: Frame | None = self.engine.collect(shot.exposure)
        except RigError as exc:
            if not retake:
                raise
            retaken = True
            try:
                frame = self._retake(shot, exc)
            except PauseSession:
                in_flight.popleft()  # lost, its retakes failed: _failed has recorded it
                raise
        if frame is None:
            in_flight.popleft()  # skipped
            return retaken
        # Kept as collected: the way out writes it without waiting on the camera again.
        shot.exposure = Collected(frame)
        self._submit(shot, frame)
        return retaken

    def _submit(self, shot: InFlightShot, frame: Frame) -> None:
        """Queue the oldest shot's frame for writing (flat-fielded when calibrated)."""
        job, event = shot.job, shot.event
        name = self._file_name(job, event)
        record = shot_metadata(self.session_id, job, event, shot.settings, frame, shot.captured_at)
        image, record["flatfield"], warning = flat_fielded(self.flatfield, frame, event.light)
        if warning is not None:
            self.tally.warn_once(warning)
        self.writer.submit(name, image, record, frame.pixel_format)
        self._in_flight.popleft()  # queued: nothing after this may write it a second time
        self.tally.shot_kept(name, job.coin_id, event.index)
        self.emitter.emit(ShotDone(job.coin_id, event.index, name))

    def _retake(self, shot: InFlightShot, exc: RigError) -> Frame | None:
        """Take a shot again whose frame was lost after its exposure; None if it was skipped."""
        job, event = shot.job, shot.event
        current = self.progress.at_shot(event.index)  # retries name this shot
        self.tally.errors.append(f"shot {event.index} of {job.coin_id}: frame lost: {exc}")
        shot.exposure = Collected(error=exc)  # never waited on again, even on the way out
        self.emitter.emit(ShotRetry(job.coin_id, event.index, 1, str(exc)))
        try:
            shot.settings = self.engine.setup_shot(event, self._patterns)
            shot.captured_at = utc_now()
            frame = self.engine.exec_shot(event)
        except RigError as again:
            self._failed(job, event, again)
            return None
        finally:
            self.progress.at_shot(current)
        return frame

    def _failed(self, job: CoinJob, event: ShotEvent, exc: RigError) -> None:
        """A shot that failed after the engine's retries: skip it, or pause the session."""
        error = f"shot {event.index} of {job.coin_id}: {exc}"
        self.tally.errors.append(error)
        if event.on_failure == "skip":
            self.tally.shot_skipped(self._file_name(job, event), str(exc))
            self.emitter.emit(ShotSkipped(job.coin_id, event.index, str(exc)))
            return
        raise PauseSession(FinishReason.DEVICE_FAILURE, error) from exc

    def _file_name(self, job: CoinJob, event: ShotEvent) -> str:
        return image_name(job.coin_id, event.side, event.index, self.writer.image_format)
