"""BaslerCamera against pylon's own camera emulation (PYLON_CAMEMU, set in conftest).

The emulator's test image is a diagonal ramp: pixel (y, x) = (offset + x + y) mod 256 for 8-bit
formats, where the offset moves on by one every frame; 12-bit formats carry the same ramp × 16.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from rig.camera.basler import BaslerCamera
from rig.camera.pixels import to_image
from rig.config import BaslerCameraConfig
from rig.devices import Camera
from rig.errors import ConfigError, DeviceTimeout, NotConnected, SafetyError

EMULATOR_SERIAL = "0815-0000"


def make_config(**overrides: Any) -> BaslerCameraConfig:
    settings: dict[str, Any] = {"driver": "basler", "emulated": True, "grab_timeout_s": 2.0}
    settings.update(overrides)
    return BaslerCameraConfig.model_validate(settings)


@pytest.fixture
def camera() -> Iterator[BaslerCamera]:
    cam = BaslerCamera(make_config())
    cam.connect()
    yield cam
    cam.close()


def ramp_offset_free(image: np.ndarray) -> np.ndarray:
    """The expected 8-bit ramp with the same offset as the image's top-left pixel."""
    rows, cols = np.indices(image.shape[:2])
    ramp = np.asarray((int(image[0, 0]) + rows + cols) % 256)
    return ramp.astype(np.uint8)


def test_implements_the_camera_protocol(camera: BaslerCamera) -> None:
    assert isinstance(camera, Camera)


def test_opens_first_found_and_reports_identity(camera: BaslerCamera) -> None:
    ident = camera.identity()
    assert ident.kind == "camera"
    assert ident.driver == "basler"
    assert ident.serial == EMULATOR_SERIAL
    assert ident.model == "Emulation"
    assert ident.firmware  # the emulator reports "1.1"; any real camera reports something
    assert ident.endpoint == "BaslerCamEmu"


def test_opens_by_serial() -> None:
    cam = BaslerCamera(make_config(serial=EMULATOR_SERIAL))
    cam.connect()
    try:
        assert cam.identity().serial == EMULATOR_SERIAL
        assert cam.status().state == "ready"
    finally:
        cam.close()
    assert cam.status().state == "closed"


def test_unknown_serial_names_the_cameras_seen() -> None:
    cam = BaslerCamera(make_config(serial="9999-9999"))
    with pytest.raises(NotConnected, match=r"9999-9999.*0815-0000"):
        cam.connect()


def test_real_camera_config_ignores_the_emulator() -> None:
    # A real rig's config must never silently grab from pylon's emulator.
    cam = BaslerCamera(make_config(emulated=False))
    with pytest.raises(NotConnected, match="no real"):
        cam.connect()


def test_methods_before_connect_raise_not_connected() -> None:
    cam = BaslerCamera(make_config())
    with pytest.raises(NotConnected):
        cam.grab()
    with pytest.raises(NotConnected):
        cam.configure(exposure_us=1000)
    cam.close()  # idempotent on a never-opened camera


def test_exposure_and_gain_are_set_and_read_back(camera: BaslerCamera) -> None:
    camera.configure(exposure_us=12345.0, gain_db=6.0)
    frame = camera.grab()
    assert frame.exposure_us == pytest.approx(12345.0, abs=1.0)
    assert frame.gain_db == pytest.approx(6.0, abs=0.05)
    details = camera.status().details
    assert details["exposure_us"] == pytest.approx(12345.0, abs=1.0)
    assert camera._camera.ExposureTime.Value == pytest.approx(12345.0, abs=1.0)


def test_out_of_limit_exposure_is_refused_before_touching_the_camera(
    camera: BaslerCamera,
) -> None:
    camera.configure(exposure_us=5000.0)
    with pytest.raises(SafetyError, match=r"exposure 5000000.0 µs .*configured limits"):
        camera.configure(exposure_us=5_000_000.0)
    with pytest.raises(SafetyError, match=r"gain 30.0 dB"):
        camera.configure(gain_db=30.0)
    assert camera._camera.ExposureTime.Value == pytest.approx(5000.0)


def test_exposure_outside_the_camera_range_is_a_safety_error() -> None:
    # Configured limits allow 20 s, the emulator stops at 10 s: the device range is checked too.
    cam = BaslerCamera(make_config(max_exposure_us=20_000_000))
    cam.connect()
    try:
        with pytest.raises(SafetyError, match="camera's range"):
            cam.configure(exposure_us=15_000_000)
    finally:
        cam.close()


def test_out_of_limit_config_fails_at_connect() -> None:
    cam = BaslerCamera(make_config(exposure_us=10.0))
    with pytest.raises(SafetyError):
        cam.connect()


def test_mono8_frame_is_the_emulator_ramp(camera: BaslerCamera) -> None:
    frame = camera.grab()
    assert frame.image.dtype == np.uint8
    assert frame.image.shape == (camera._camera.Height.Value, camera._camera.Width.Value)
    np.testing.assert_array_equal(frame.image, ramp_offset_free(frame.image))
    assert frame.pixel_format == "Mono8"
    assert frame.camera == f"Emulation {EMULATOR_SERIAL}"
    assert frame.timestamp_s > 1.6e9


def test_each_grab_is_a_new_frame(camera: BaslerCamera) -> None:
    first = camera.grab().image[0, 0]
    second = camera.grab().image[0, 0]
    assert int(second) == (int(first) + 1) % 256


def test_mono12_is_msb_aligned_uint16(camera: BaslerCamera) -> None:
    camera.configure(pixel_format="Mono12")
    image = camera.grab().image
    assert image.dtype == np.uint16
    # The emulator's 12-bit ramp is the 8-bit ramp × 16; MSB-aligned that is the 8-bit ramp × 256.
    as8 = (image >> 8).astype(np.uint8)
    np.testing.assert_array_equal(image, as8.astype(np.uint16) << 8)
    np.testing.assert_array_equal(as8, ramp_offset_free(as8))
    assert image.max() > 4095  # scaled to the 16-bit range, not left as 12-bit values
    assert not np.any(image & 0x000F)  # the four padding bits are zero


def test_rgb8_is_height_width_3(camera: BaslerCamera) -> None:
    camera.configure(pixel_format="RGB8")
    frame = camera.grab()
    assert frame.pixel_format == "RGB8"
    assert frame.image.shape[2] == 3
    assert frame.image.dtype == np.uint8
    np.testing.assert_array_equal(frame.image[:, :, 0], ramp_offset_free(frame.image[:, :, 0]))


@pytest.mark.parametrize(
    ("fmt", "dtype", "scale"), [("BayerRG8", np.uint8, 1), ("BayerRG12", np.uint16, 256)]
)
def test_bayer_is_demosaiced_to_rgb(
    camera: BaslerCamera, fmt: str, dtype: type, scale: int
) -> None:
    camera.configure(pixel_format=fmt)
    image = camera.grab().image
    assert image.ndim == 3 and image.shape[2] == 3
    assert image.dtype == dtype
    # Bilinear demosaicing reproduces a linear ramp exactly, so every channel equals the ramp
    # wherever the 3×3 neighbourhood does not straddle the ramp's wrap from 255 to 0.
    rows, cols = np.indices(image.shape[:2])
    # Anchor the ramp on a row-2 pixel well away from the border and from the wrap.
    row2 = image[2, :, 1].astype(np.int64) // scale
    x = next(x for x in range(2, len(row2)) if 10 <= row2[x] <= 245)
    base = int(row2[x]) - 2 - x
    expected = np.asarray((base + rows + cols) % 256)
    interior: np.ndarray = (expected >= 2) & (expected <= 253)
    interior[:2, :] = interior[-2:, :] = interior[:, :2] = interior[:, -2:] = False
    for channel in range(3):
        values = image[:, :, channel].astype(np.int64) // scale
        assert np.abs(values[interior] - expected[interior]).max() <= 1


def test_unknown_pixel_format_lists_the_choices(camera: BaslerCamera) -> None:
    with pytest.raises(ConfigError, match="Mono12"):
        camera.configure(pixel_format="YUV422")


def test_grab_timeout_raises_device_timeout_and_the_camera_recovers(
    camera: BaslerCamera,
) -> None:
    with pytest.raises(DeviceTimeout):
        camera.grab(timeout_s=0.0)
    # The late frame of the timed-out grab must not come back as the next one.
    frame = camera.grab()
    np.testing.assert_array_equal(frame.image, ramp_offset_free(frame.image))


def test_negative_timeout_is_a_config_error(camera: BaslerCamera) -> None:
    with pytest.raises(ConfigError):
        camera.grab(timeout_s=-1.0)


# ---------------------------------------------------------------- pixel conversions (pure)


@pytest.mark.parametrize(
    ("fmt", "top_left", "expected_rgb"),
    [
        # Each Bayer name gives the top-left 2×2 cell: R, G, B sites carry 200, 100, 50.
        ("BayerRG8", [[200, 100], [100, 50]], (200, 100, 50)),
        ("BayerBG8", [[50, 100], [100, 200]], (200, 100, 50)),
        ("BayerGR8", [[100, 200], [50, 100]], (200, 100, 50)),
        ("BayerGB8", [[100, 50], [200, 100]], (200, 100, 50)),
    ],
)
def test_bayer_pattern_names_map_to_the_right_colours(
    fmt: str, top_left: list[list[int]], expected_rgb: tuple[int, int, int]
) -> None:
    mosaic = np.tile(np.array(top_left, np.uint8), (4, 4))
    rgb = to_image(mosaic, fmt)
    assert rgb.shape == (8, 8, 3)
    np.testing.assert_array_equal(rgb[3:5, 3:5], np.broadcast_to(expected_rgb, (2, 2, 3)))


def test_twelve_bit_is_msb_aligned_and_lossless() -> None:
    raw = np.array([[0, 1, 2048, 4095]], np.uint16)
    image = to_image(raw, "Mono12")
    np.testing.assert_array_equal(image, [[0, 16, 32768, 65520]])
    np.testing.assert_array_equal(image >> 4, raw)
    # A stray bit above bit 11 (a misparsed buffer) is masked, not wrapped round.
    np.testing.assert_array_equal(to_image(np.array([[0x1FFF]], np.uint16), "Mono12"), [[65520]])


def test_bayer12_demosaics_in_16_bit() -> None:
    mosaic = np.tile(np.array([[3200, 1600], [1600, 800]], np.uint16), (4, 4))
    np.testing.assert_array_equal(to_image(mosaic, "BayerRG12")[4, 4], [51200, 25600, 12800])


def test_bgr8_is_reordered_and_conversion_copies() -> None:
    raw = np.zeros((2, 2, 3), np.uint8)
    raw[..., 0] = 7  # blue first in BGR
    image = to_image(raw, "BGR8Packed")
    np.testing.assert_array_equal(image[0, 0], [0, 0, 7])
    mono = np.ones((2, 2), np.uint8)
    out = to_image(mono, "Mono8")
    out[0, 0] = 9
    assert mono[0, 0] == 1  # the camera's buffer is never shared


def test_wrong_shape_or_dtype_is_rejected() -> None:
    with pytest.raises(ValueError, match="uint16"):
        to_image(np.zeros((2, 2), np.uint8), "Mono12")
    with pytest.raises(ValueError, match="H×W×3"):
        to_image(np.zeros((2, 2), np.uint8), "RGB8")
    with pytest.raises(ConfigError, match="Mono8"):
        to_image(np.zeros((2, 2), np.uint8), "YUV422")
