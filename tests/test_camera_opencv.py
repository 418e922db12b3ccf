"""OpenCvCamera reading video files and image sequences written here, with known content."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from rig.camera.opencv import OpenCvCamera, resolve_source
from rig.camera.pixels import bgr_to_rgb
from rig.config import OpenCvCameraConfig
from rig.devices import Camera
from rig.errors import ConfigError, NotConnected, SafetyError, TransportError

WIDTH, HEIGHT, FRAMES = 64, 48, 5
# Distinct, saturated colours per frame (RGB) so channel order and frame order are both checked.
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]


def make_config(source: int | str, **overrides: Any) -> OpenCvCameraConfig:
    return OpenCvCameraConfig.model_validate({"driver": "opencv", "source": source, **overrides})


def rgb_frame(index: int) -> np.ndarray:
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[:, :] = COLOURS[index]
    image[: HEIGHT // 2, : WIDTH // 2] = 128  # a grey block: tells rows/columns apart
    return image


@pytest.fixture
def png_sequence(tmp_path: Path) -> str:
    for i in range(FRAMES):
        assert cv2.imwrite(str(tmp_path / f"shot_{i:03d}.png"), rgb_frame(i)[:, :, ::-1])
    return str(tmp_path / "shot_%03d.png")


@pytest.fixture
def video_file(tmp_path: Path) -> str:
    path = tmp_path / "clip.avi"
    # MJPG in AVI: built into OpenCV (no external codec needed) and close to lossless at q=100.
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (WIDTH, HEIGHT))
    assert writer.isOpened()
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 100)
    for i in range(FRAMES):
        writer.write(np.ascontiguousarray(rgb_frame(i)[:, :, ::-1]))
    writer.release()
    return str(path)


def test_png_sequence_frames_come_back_exactly_in_rgb(png_sequence: str) -> None:
    cam = OpenCvCamera(make_config(png_sequence))
    cam.connect()
    try:
        assert isinstance(cam, Camera)
        for i in range(FRAMES):
            frame = cam.grab(timeout_s=5.0)
            np.testing.assert_array_equal(frame.image, rgb_frame(i))
            assert frame.pixel_format == "RGB8"
            assert (frame.width, frame.height) == (WIDTH, HEIGHT)
            assert math.isnan(frame.gain_db) and math.isnan(frame.exposure_us)
        with pytest.raises(TransportError, match="no more frames"):
            cam.grab(timeout_s=5.0)
    finally:
        cam.close()


def test_video_file_frames_have_the_written_colours(video_file: str) -> None:
    cam = OpenCvCamera(make_config(video_file))
    cam.connect()
    try:
        ident = cam.identity()
        assert ident.driver == "opencv" and ident.endpoint == video_file and ident.model
        for i in range(FRAMES):
            image = cam.grab().image
            assert image.shape == (HEIGHT, WIDTH, 3)
            # JPEG is lossy: compare the flat-coloured quadrant's mean, not every pixel.
            corner = image[HEIGHT // 2 + 4 :, WIDTH // 2 + 4 :].reshape(-1, 3).mean(axis=0)
            np.testing.assert_allclose(corner, COLOURS[i], atol=12)
            assert abs(float(image[4:20, 4:28].mean()) - 128) < 12
        status = cam.status()
        assert status.state == "ready" and status.details["frame_index"] == FRAMES
    finally:
        cam.close()
    assert cam.status().state == "closed"


def test_missing_file_is_not_connected(tmp_path: Path) -> None:
    cam = OpenCvCamera(make_config(str(tmp_path / "nope.avi")))
    with pytest.raises(NotConnected, match="no such file"):
        cam.connect()


def test_missing_sequence_is_not_connected(tmp_path: Path) -> None:
    cam = OpenCvCamera(make_config(str(tmp_path / "none_%03d.png")))
    with pytest.raises(NotConnected, match="cannot open"):
        cam.connect()


def test_grab_before_connect_is_not_connected(png_sequence: str) -> None:
    cam = OpenCvCamera(make_config(png_sequence))
    with pytest.raises(NotConnected):
        cam.grab()
    cam.close()


def test_size_the_source_cannot_deliver_is_a_config_error(png_sequence: str) -> None:
    cam = OpenCvCamera(make_config(png_sequence, width=WIDTH * 2))
    with pytest.raises(ConfigError, match=r"128×48 px.*64×48 px"):
        cam.connect()
    assert cam.status().state == "closed"


def test_size_the_source_has_is_accepted(png_sequence: str) -> None:
    cam = OpenCvCamera(make_config(png_sequence, width=WIDTH, height=HEIGHT))
    cam.connect()
    try:
        assert cam.grab().image.shape[:2] == (HEIGHT, WIDTH)
    finally:
        cam.close()


def test_exposure_is_refused_honestly_where_unsupported(png_sequence: str) -> None:
    cam = OpenCvCamera(make_config(png_sequence))
    cam.connect()
    try:
        assert not cam.supports_exposure
        with pytest.raises(ConfigError, match="cannot set exposure"):
            cam.configure(exposure_us=10_000)
        with pytest.raises(SafetyError):
            cam.configure(exposure_us=1.0)  # limits are checked before the capability
        with pytest.raises(ConfigError, match="gain"):
            cam.configure(gain_db=6.0)
        cam.configure(gain_db=0.0)  # "no gain" is not an error
        assert cam.status().details["exposure_us"] == "unsupported"
    finally:
        cam.close()


def test_explicit_exposure_in_config_fails_at_connect(png_sequence: str) -> None:
    cam = OpenCvCamera(make_config(png_sequence, exposure_us=5000))
    with pytest.raises(ConfigError, match="cannot set exposure"):
        cam.connect()


def test_string_digits_are_an_index() -> None:
    assert resolve_source("2") == 2
    assert resolve_source("clip.avi") == "clip.avi"


def test_bgr_to_rgb_handles_grey_and_bgra() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(bgr_to_rgb(grey), grey)
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., 0] = 10  # blue
    np.testing.assert_array_equal(bgr_to_rgb(bgra)[0, 0], [0, 0, 10])
    with pytest.raises(ValueError):
        bgr_to_rgb(np.zeros((2, 2, 2), np.uint8))
