"""Training crops use the calibrated turntable centre, when a session recorded one."""

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np

from training.cache import Preprocess
from training.coinfind import find_coin
from training.data import load_images, read_datasets

CENTRE = (230.0, 160.0)


def rig_photo() -> np.ndarray:
    """A coin on the turntable at CENTRE, and a bigger round thing (a lens cap) at the edge."""
    image = np.full((300, 400, 3), 35, np.uint8)
    cv2.circle(image, (70, 70), 55, (210, 210, 210), -1)  # the lens cap: larger, brighter
    cv2.circle(image, (int(CENTRE[0]), int(CENTRE[1])), 40, (190, 150, 80), -1)  # the coin
    return image


def test_without_a_prior_the_largest_round_thing_wins() -> None:
    circle = find_coin(rig_photo())
    assert abs(circle.x - 70) < 4 and abs(circle.y - 70) < 4


def test_the_turntable_centre_picks_the_coin_lying_on_it() -> None:
    circle = find_coin(rig_photo(), near_px=CENTRE)
    assert abs(circle.x - CENTRE[0]) < 3 and abs(circle.y - CENTRE[1]) < 3
    assert abs(circle.r - 40) < 4


def test_blank_frame_falls_back_to_the_turntable_centre() -> None:
    blank = np.full((300, 400, 3), 35, np.uint8)
    circle = find_coin(blank, near_px=CENTRE)
    assert (circle.x, circle.y, circle.method) == (CENTRE[0], CENTRE[1], "turntable")


def write_dataset(root: Path, calibrated: bool) -> None:
    (root / "images" / "C1" / "obverse").mkdir(parents=True)
    (root / "sessions").mkdir()
    ok, png = cv2.imencode(".png", cv2.cvtColor(rig_photo(), cv2.COLOR_RGB2BGR))
    assert ok
    name = "images/C1/obverse/0000.png"
    (root / name).write_bytes(png.tobytes())
    (root / "dataset.json").write_text(
        json.dumps({"format": "coinrig-dataset", "version": 1, "created": "x", "software": "t"})
    )
    line = {
        "file_name": name,
        "coin_id": "C1",
        "side": "obverse",
        "role": "capture",
        "session_id": "S1",
        "shot": 0,
        "turntable_deg": 0.0,
        "light": "diffuse",
        "sha256": hashlib.sha256(png.tobytes()).hexdigest(),
    }
    (root / "metadata.jsonl").write_text(json.dumps(line) + "\n")
    record: dict = {"session_id": "S1"}
    if calibrated:
        record["calibration"] = {"turntable": {"centre_px": list(CENTRE), "rotation_sign": 1}}
    (root / "sessions" / "S1.json").write_text(json.dumps(record))


def coin_colour_at_crop_centre(root: Path, cache: Path) -> np.ndarray:
    records = read_datasets([root])
    settings = Preprocess(image_size=48, mask_background=False)
    bank, _ = load_images(records, settings, cache)
    crop = bank.pixels([0])[0]
    # pixels() may be HWC or CHW; take the centre pixel's RGB either way
    arr = np.asarray(crop)
    if arr.shape[0] == 3:
        arr = arr.transpose(1, 2, 0)
    return arr[24, 24].astype(int)


def test_a_calibrated_session_crops_the_coin_on_the_turntable(tmp_path: Path) -> None:
    calibrated, plain = tmp_path / "cal", tmp_path / "plain"
    write_dataset(calibrated, calibrated=True)
    write_dataset(plain, calibrated=False)
    coin = np.array([190, 150, 80])
    cap = np.array([210, 210, 210])
    assert np.abs(coin_colour_at_crop_centre(calibrated, tmp_path / "c1") - coin).max() < 20
    assert np.abs(coin_colour_at_crop_centre(plain, tmp_path / "c2") - cap).max() < 20
