"""Webcams, video files and image sequences through cv2.VideoCapture.

`source` is a device index (`0`, or the string `"0"`), a device path (`/dev/video2`), a video
file, an image-sequence pattern (`shots/img_%03d.png`) or a stream URL. Frames come back in RGB
order (OpenCV delivers BGR).

Exposure: only the V4L2 backend (Linux webcams) has a documented unit for CAP_PROP_EXPOSURE
(`exposure_time_absolute`, 100 µs steps); every other backend's unit is backend-specific or
meaningless (a video file), so there exposure cannot be set and frames report it as NaN.
Gain: no backend reports gain in dB, so gain cannot be set (0 dB, the default, is accepted as "no
gain requested") and frames report it as NaN.

cv2's read() blocks, with no timeout of its own for most backends, so each read runs on one worker
thread owned by the camera and grab() waits for it with a timeout.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rig.camera.pixels import bgr_to_rgb
from rig.camera.settings import check_exposure_gain, require_open
from rig.config import OpenCvCameraConfig
from rig.devices import DeviceIdentity, DeviceStatus, Frame
from rig.errors import ConfigError, DeviceTimeout, NotConnected, TransportError

# Backend name → microseconds per CAP_PROP_EXPOSURE unit, for backends where that unit is known.
_EXPOSURE_UNIT_US = {"V4L2": 100.0}
# V4L2_EXPOSURE_MANUAL; OpenCV passes the value straight to V4L2_CID_EXPOSURE_AUTO.
_V4L2_MANUAL_EXPOSURE = 1.0


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's log and the C-level stderr chatter of its backends for the block.

    Backends such as V4L2, GStreamer and FFmpeg print straight to file descriptor 2, so the
    descriptor itself is pointed at /dev/null for the duration (process-wide, so keep it short).
    """
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    saved_fd: int | None = None
    try:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
            saved_fd = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        yield
    finally:
        if saved_fd is not None:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
        cv2.utils.logging.setLogLevel(previous)


def resolve_source(source: int | str) -> int | str:
    """A device index for `3` or `"3"`; anything else is a path, pattern or URL, unchanged."""
    if isinstance(source, str) and source.strip().isdigit():
        return int(source)
    return source


def open_capture(source: int | str, timeout_s: float) -> cv2.VideoCapture | None:
    """Open a VideoCapture quietly, with open/read timeouts where the backend honours them.

    Returns None when nothing could be opened.
    """
    timeout_ms = max(1, int(timeout_s * 1000))
    # FFmpeg and GStreamer honour these; other backends ignore them, hence grab()'s own timeout.
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        timeout_ms,
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        timeout_ms,
    ]
    with quiet_opencv():
        capture = cv2.VideoCapture(source, cv2.CAP_ANY, params)
        if capture.isOpened():
            return capture
        capture.release()
    return None


class OpenCvCamera:
    """A webcam, video file or image sequence implementing the rig Camera protocol."""

    def __init__(self, config: OpenCvCameraConfig) -> None:
        self.config = config
        self._source = resolve_source(config.source)
        self._name = f"opencv camera {self._source!r}"
        self._capture: cv2.VideoCapture | None = None
        self._backend = ""
        self._worker: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: concurrent.futures.Future[tuple[bool, Any]] | None = None
        self._exposure_us = math.nan

    @property
    def live(self) -> bool:
        """Whether the source is a camera (index or /dev path) rather than a file or stream."""
        return isinstance(self._source, int) or str(self._source).startswith("/dev/")

    @property
    def supports_exposure(self) -> bool:
        """Whether this backend can set exposure in known units (only V4L2); False if closed."""
        return self._backend in _EXPOSURE_UNIT_US

    # ------------------------------------------------------------------ lifecycle

    def connect(self) -> None:
        """Open the source, apply the requested size and (where supported) exposure.

        Raises:
            SafetyError: the configured exposure is outside the configured limits.
            NotConnected: the source does not exist or no backend can open it.
            ConfigError: the source cannot deliver the requested size, or an exposure or gain was
                configured that the backend cannot set.
        """
        if self._capture is not None:
            return
        explicit = self.config.model_fields_set
        exposure = self.config.exposure_us if "exposure_us" in explicit else None
        gain = self.config.gain_db if "gain_db" in explicit else None
        check_exposure_gain(self.config, exposure, None, name=self._name)
        source = self._source
        is_file = isinstance(source, str) and "://" not in source and "%" not in source
        if is_file and not Path(str(source)).exists():
            raise NotConnected(f"{self._name}: no such file or device")
        capture = open_capture(source, self.config.grab_timeout_s)
        if capture is None:
            raise NotConnected(
                f"{self._name}: cannot open (no such device, busy, or no backend can read it)"
            )
        self._capture = capture
        self._backend = capture.getBackendName()
        self._name = f"opencv camera {source!r} ({self._backend})"
        self._worker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="opencv-camera"
        )
        try:
            if self.live:
                # Keep at most one frame queued so a grab shows the scene now, not seconds ago.
                capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            self._apply_size(capture)
            self.configure(exposure_us=exposure, gain_db=gain)
        except BaseException:
            self.close()
            raise

    def _apply_size(self, capture: cv2.VideoCapture) -> None:
        width, height = self.config.width, self.config.height
        if width is not None:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height is not None:
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        got_w = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        got_h = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        # A webcam picks its nearest mode and a file cannot resize: refuse rather than resample.
        if (width is not None and got_w != width) or (height is not None and got_h != height):
            raise ConfigError(
                f"{self._name}: asked for {width or got_w}×{height or got_h} px, "
                f"the source delivers {got_w}×{got_h} px"
            )

    def close(self) -> None:
        """Release the source and the worker thread (idempotent)."""
        capture, self._capture = self._capture, None
        worker, self._worker = self._worker, None
        pending, self._pending = self._pending, None
        if worker is None:
            if capture is not None:
                capture.release()
            return
        if pending is not None and not pending.done():
            with contextlib.suppress(concurrent.futures.TimeoutError):
                pending.result(timeout=1.0)
        if pending is None or pending.done():
            if capture is not None:
                capture.release()
            worker.shutdown(wait=True)
        elif capture is not None:
            # A read is still blocked inside OpenCV: releasing under it could crash, so let the
            # worker release the capture once the read returns, and do not wait for it.
            worker.submit(capture.release)
            worker.shutdown(wait=False)

    # ------------------------------------------------------------------ who and how

    def identity(self) -> DeviceIdentity:
        """The backend and source; webcams report no serial or firmware through OpenCV.

        Raises:
            NotConnected: the source is not open.
        """
        require_open(self._capture, self._name)
        return DeviceIdentity(
            kind="camera", driver="opencv", model=self._backend, endpoint=str(self._source)
        )

    def status(self) -> DeviceStatus:
        """Open/closed, backend, frame size, position in a file, and what can be set."""
        if self._capture is None:
            return DeviceStatus("closed", {"source": str(self._source)})
        capture = self._capture
        details: dict[str, Any] = {
            "source": str(self._source),
            "backend": self._backend,
            "width": int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            "height": int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            "exposure_us": self._exposure_us if self.supports_exposure else "unsupported",
            "gain_db": "unsupported",
        }
        if not self.live:
            details["frame_index"] = int(capture.get(cv2.CAP_PROP_POS_FRAMES))
        state = "busy" if self._pending is not None and not self._pending.done() else "ready"
        return DeviceStatus(state, details)

    # ------------------------------------------------------------------ settings

    def configure(
        self,
        *,
        exposure_us: float | None = None,
        gain_db: float | None = None,
        pixel_format: str | None = None,
    ) -> None:
        """Set exposure where the backend supports it; gain and pixel format cannot be set.

        Raises:
            NotConnected: the source is not open.
            SafetyError: the exposure is outside the configured limits.
            ConfigError: the backend cannot set exposure, a non-zero gain or any pixel format
                was asked for, or the camera did not take the exposure.
        """
        capture = require_open(self._capture, self._name)
        # gain is not checked here: OpenCV cannot set it at all (ConfigError below)
        check_exposure_gain(self.config, exposure_us, None, name=self._name)
        if pixel_format is not None:
            raise ConfigError(
                f"{self._name}: pixel format cannot be chosen through OpenCV "
                f"(frames are RGB8, or Mono8 for grey sources)"
            )
        if gain_db is not None and gain_db != 0.0:
            raise ConfigError(f"{self._name}: cannot set gain in dB through OpenCV")
        if exposure_us is None:
            return
        unit_us = _EXPOSURE_UNIT_US.get(self._backend)
        if unit_us is None:
            raise ConfigError(
                f"{self._name}: the {self._backend} backend cannot set exposure "
                f"(asked for {exposure_us} µs)"
            )
        capture.set(cv2.CAP_PROP_AUTO_EXPOSURE, _V4L2_MANUAL_EXPOSURE)
        capture.set(cv2.CAP_PROP_EXPOSURE, exposure_us / unit_us)
        got_us = capture.get(cv2.CAP_PROP_EXPOSURE) * unit_us
        # The driver rounds to whole 100 µs steps; anything further off means it ignored us.
        if abs(got_us - exposure_us) > unit_us:
            raise ConfigError(
                f"{self._name}: asked for exposure {exposure_us} µs, camera reports {got_us} µs"
            )
        self._exposure_us = got_us

    # ------------------------------------------------------------------ grabbing

    def _read(self) -> tuple[bool, Any]:
        capture = self._capture
        if capture is None:
            return False, None
        if self.live:
            # Drop the frame that may have sat in the driver's queue since the last grab.
            capture.grab()
        return capture.read()

    def grab(self, timeout_s: float | None = None) -> Frame:
        """Read the next frame (a fresh one for live cameras) within the timeout.

        Raises:
            NotConnected: the source is not open.
            ConfigError: a negative timeout.
            DeviceTimeout: no frame within the timeout (or an earlier read is still blocked).
            TransportError: the source ended (end of a file or sequence) or the camera failed.
        """
        require_open(self._capture, self._name)
        assert self._worker is not None
        timeout = self.config.grab_timeout_s if timeout_s is None else timeout_s
        if timeout < 0:
            raise ConfigError(f"{self._name}: grab timeout must be >= 0 s, got {timeout}")
        deadline = time.monotonic() + timeout
        if self._pending is not None:
            # A read that timed out earlier still holds the capture; its frame is stale anyway.
            try:
                self._pending.result(timeout=timeout)
            except concurrent.futures.TimeoutError:
                raise DeviceTimeout(
                    f"{self._name}: an earlier read is still blocked after {timeout:.3f} s"
                ) from None
            self._pending = None
        future = self._worker.submit(self._read)
        try:
            ok, image = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            self._pending = future
            raise DeviceTimeout(f"{self._name}: no frame within {timeout:.3f} s") from None
        except cv2.error as exc:
            raise TransportError(f"{self._name}: read failed: {exc}") from exc
        arrived_s = time.time()
        if not ok or image is None:
            what = "camera returned no frame" if self.live else "no more frames in the source"
            raise TransportError(f"{self._name}: {what}")
        rgb = bgr_to_rgb(image)
        return Frame(
            image=rgb,
            exposure_us=self._exposure_us,
            gain_db=math.nan,
            pixel_format=_pixel_format_of(rgb),
            camera=f"opencv {self._source}",
            timestamp_s=arrived_s,
        )


def _pixel_format_of(image: np.ndarray) -> str:
    depth = "8" if image.dtype == np.uint8 else "16"
    return f"{'Mono' if image.ndim == 2 else 'RGB'}{depth}"
