"""Search crops a query exactly as the run's training preprocessed it."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.coinfind import BACKGROUND_RGB
from training.detect import detect_coins
from training.models.embedding import build_model
from training.search import RunModel


def photo_of_a_coin() -> np.ndarray:
    image = np.full((240, 320, 3), (30, 90, 40), np.uint8)  # green cloth
    cv2.circle(image, (190, 110), 60, (200, 170, 90), -1)
    cv2.line(image, (160, 90), (220, 130), (120, 100, 50), 2)  # a scratch
    return image


@pytest.mark.parametrize("masked", [True, False])
def test_query_crop_follows_the_runs_background_masking(tmp_path: Path, masked: bool) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"mask_background": masked}))
    run_model = RunModel(build_model("resnet-tiny", image_size=48), {}, tmp_path)
    image = photo_of_a_coin()
    coin = detect_coins(image)[0]
    crop = run_model.crop(image, coin)
    assert crop.shape == (48, 48, 3)
    corners = np.stack([crop[0, 0], crop[0, -1], crop[-1, 0], crop[-1, -1]]).astype(int)
    background = np.array(BACKGROUND_RGB, dtype=int)
    if masked:
        assert np.abs(corners - background).max() <= 2
    else:
        assert np.abs(corners - (30, 90, 40)).max() <= 10
    # the coin itself is in the middle either way
    assert np.abs(crop[24, 30].astype(int) - (200, 170, 90)).max() <= 30
