"""Reading the photos people bring: EXIF rotation, 16-bit PNG/TIFF, grey, corrupt files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from training.imageio import is_image_name, load_rgb
from training.search_errors import ImageReadError


def _marker(h: int = 40, w: int = 60) -> np.ndarray:
    """RGB image, dark, with a red block in the top-left corner (to see rotations)."""
    image = np.full((h, w, 3), 30, np.uint8)
    image[:10, :10] = (255, 0, 0)
    return image


@pytest.mark.parametrize(
    ("orientation", "corner"),
    [(1, "top-left"), (3, "bottom-right"), (6, "top-right"), (8, "bottom-left")],
)
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, corner: str) -> None:
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(_marker()).save(path, quality=95, exif=exif)
    rgb = load_rgb(path)
    # 6 and 8 are quarter turns: the stored 40×60 becomes 60×40 upright.
    assert rgb.shape == ((60, 40, 3) if orientation in (6, 8) else (40, 60, 3))
    h, w = rgb.shape[:2]
    spots = {
        "top-left": rgb[2, 2],
        "top-right": rgb[2, w - 3],
        "bottom-left": rgb[h - 3, 2],
        "bottom-right": rgb[h - 3, w - 3],
    }
    assert spots[corner][0] > 200 and spots[corner][1] < 60
    assert sum(int(v[0] > 200) for v in spots.values()) == 1


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    # A 12-bit camera frame in a 16-bit PNG: full scale is 4095, not 65535.
    ramp = (np.linspace(0, 4095, 64).reshape(1, 64).repeat(8, 0)).astype(np.uint16)
    path = tmp_path / "deep.png"
    assert cv2.imwrite(str(path), ramp)
    rgb = load_rgb(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (8, 64, 3)
    assert rgb[0, -1, 0] == 255 and rgb[0, 0, 0] == 0
    assert abs(int(rgb[0, 32, 0]) - 130) < 3  # mid ramp stays mid grey


def test_16_bit_colour_tiff_keeps_colour_order(tmp_path: Path) -> None:
    rgb16 = np.zeros((10, 12, 3), np.uint16)
    rgb16[..., 0] = 65535  # red
    rgb16[..., 2] = 16384  # a quarter blue
    path = tmp_path / "scan.tiff"
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb16, cv2.COLOR_RGB2BGR))
    rgb = load_rgb(path)
    assert rgb.dtype == np.uint8
    assert tuple(int(v) for v in rgb[5, 5]) == (255, 0, 64)


def test_grey_jpeg_becomes_three_channels(tmp_path: Path) -> None:
    path = tmp_path / "grey.jpg"
    Image.fromarray(np.full((20, 30), 128, np.uint8), mode="L").save(path)
    rgb = load_rgb(path)
    assert rgb.shape == (20, 30, 3)
    assert np.all(np.abs(rgb.astype(int) - 128) <= 2)


def test_transparent_png_goes_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[:5, :, :3] = (200, 100, 0)
    rgba[:5, :, 3] = 255  # top half opaque, bottom transparent
    path = tmp_path / "cutout.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    rgb = load_rgb(path)
    assert tuple(rgb[1, 1]) == (200, 100, 0)
    assert tuple(rgb[8, 8]) == (255, 255, 255)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("notes.jpg", b"this is not a picture"),
        ("empty.png", b""),
        ("cut.jpg", None),  # a real JPEG, truncated halfway
    ],
)
def test_unreadable_files_raise_one_line(tmp_path: Path, name: str, content: bytes | None) -> None:
    path = tmp_path / name
    if content is None:
        ok, data = cv2.imencode(
            ".jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
        )
        assert ok
        content = data.tobytes()[: len(data) // 2]
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as info:
        load_rgb(path)
    message = str(info.value)
    assert name in message and "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="no such file"):
        load_rgb(tmp_path / "gone.png")


def test_image_names() -> None:
    assert is_image_name(Path("a/B.JPG")) and is_image_name(Path("x.tiff"))
    assert not is_image_name(Path("lots.csv"))
