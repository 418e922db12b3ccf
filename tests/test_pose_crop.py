"""Frames of one pose are cut out by one outline, found in all of them together."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rig.sim.coins import CoinCatalog
from rig.sim.relief import coin_surface
from rig.sim.shading import Optics, coverage_view, grid_size_for, render_view
from rig.sim.world import LightState
from training.cache import CacheItem, Preprocess, cache_key, crop_frames, load_cached
from training.coinfind import (
    BACKGROUND_RGB,
    _border_colour,
    _pose_distance,
    find_coin,
    find_coin_in_pose,
)
from training.cutout import crop_coin
from training.data import ImageBank
from training.segmenter import SEGMENTER_ENV

SIZE = 64
MARGIN = 0.04
# the quick plan's lights on the sim rig (rig/config/presets/sim.yaml)
LIGHTS = {
    "raking_n": {"north": LightState(1.0, 90.0, 20.0, False)},
    "raking_e": {"east": LightState(1.0, 0.0, 20.0, False)},
    "diffuse": {"dome": LightState(1.0, None, None, True)},
}


def _kept(crop: np.ndarray) -> np.ndarray:
    return ~np.all(np.abs(crop.astype(int) - BACKGROUND_RGB) <= 3, axis=2)


def _items(count: int) -> list[CacheItem]:
    return [CacheItem(Path(f"{i}.png"), f"{i}.png", None, 0.0, pose="p") for i in range(count)]


def _lost(crop: np.ndarray, truth: np.ndarray) -> float:
    return float((truth & ~_kept(crop)).sum() / truth.sum())


@pytest.mark.parametrize(("coin_id", "side"), [("SIM-0084", "obverse"), ("SIM-0124", "reverse")])
def test_twin_raking_frames_keep_the_whole_coin(coin_id: str, side: str) -> None:
    # Under a raking light the coin's far side is as dark as the turntable: cut out frame by
    # frame, the twin's test coins lost 8 % of their flan on average (up to half of it).
    catalog = CoinCatalog(seed=0, types=6, coins=160)
    optics = Optics()
    worst_alone = 0.0
    for angle in (0.0, 90.0, 180.0, 270.0):
        frames = [
            render_view(catalog, coin_id, side, angle, lights, size=256)
            for lights in LIGHTS.values()
        ]
        surface = coin_surface(catalog, coin_id, side, grid_size_for(256, optics))
        coverage = coverage_view(surface, angle, 256, 256, optics)
        crops = crop_frames(_items(len(frames)), frames, Preprocess(image_size=SIZE))
        circle = find_coin_in_pose(frames)
        assert circle is not None
        cover = np.repeat((coverage[..., None] * 255).astype(np.uint8), 3, axis=2)
        truth = crop_coin(cover, circle, SIZE, margin=MARGIN)[..., 0] > 127
        for light, crop in zip(LIGHTS, crops, strict=True):
            assert _lost(crop, truth) < 0.03, f"{coin_id} {side} {angle}° {light}"
            extra = (_kept(crop) & ~truth).sum() / truth.sum()
            assert extra < 0.09, f"{coin_id} {side} {angle}° {light}: kept backdrop"
        with pytest.MonkeyPatch.context() as patch:
            # by colour alone (the learned segmenter, tests/test_segmenter.py, also fills it in)
            patch.setenv(SEGMENTER_ENV, "off")
            for frame in frames:
                alone = crop_coin(frame, circle, SIZE, margin=MARGIN, mask_background=True)
                worst_alone = max(worst_alone, _lost(alone, truth))
    assert worst_alone > 0.05, worst_alone  # what the shared outline avoids


def test_a_coin_darker_than_its_card_in_every_frame_stays_whole() -> None:
    # Darkening counts when every frame shows it: a dark coin on pale card is not a shadow.
    frames = []
    for light_from in (-1, 1):
        image = np.full((240, 240, 3), 200, np.uint8)
        cv2.circle(image, (120, 120), 70, (60, 55, 50), -1)
        cv2.circle(image, (120 + 40 * light_from, 120), 30, (90, 85, 80), -1)  # a lit highlight
        frames.append(image)
    crops = crop_frames(_items(2), frames, Preprocess(image_size=SIZE))
    yy, xx = np.mgrid[:SIZE, :SIZE]
    inside = (xx - 31.5) ** 2 + (yy - 31.5) ** 2 < (0.9 * SIZE / 2 / (1 + MARGIN)) ** 2
    for crop in crops:
        assert _kept(crop)[inside].mean() > 0.99
        assert not _kept(crop)[0, 0]


def test_frames_of_different_sizes_are_found_one_by_one() -> None:
    image = np.full((200, 200, 3), 40, np.uint8)
    cv2.circle(image, (90, 100), 60, (190, 160, 90), -1)
    bigger = cv2.resize(image, (300, 300))
    assert find_coin_in_pose([image, bigger]) is None
    crops = crop_frames(_items(2), [image, bigger], Preprocess(image_size=SIZE))
    assert np.abs(crops[0].astype(int) - crops[1].astype(int)).mean() < 3.0
    assert find_coin(image).x == pytest.approx(90, abs=2)


frames_strategy = arrays(np.uint8, (24, 24, 3), elements=st.integers(0, 255))


@settings(max_examples=60, deadline=None)
@given(frames_strategy, frames_strategy)
def test_pose_distance_of_one_frame_is_the_plain_distance_and_order_free(
    first: np.ndarray, second: np.ndarray
) -> None:
    blurred = cv2.GaussianBlur(first, (5, 5), 0).astype(np.float32)
    single = _pose_distance([first])
    np.testing.assert_allclose(
        single, np.linalg.norm(blurred - _border_colour(first), axis=2), rtol=1e-4, atol=1e-2
    )
    np.testing.assert_allclose(_pose_distance([first, first]), single, atol=1e-3)
    np.testing.assert_allclose(
        _pose_distance([first, second]), _pose_distance([second, first]), atol=1e-3
    )


def test_the_cache_keeps_every_pose_frame_cut_out_alone_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a raking frame whose far side is as dark as the backdrop, and its pose's diffuse frame;
    # a flat drawing, with no relief for the learned segmenter to read: colour alone cuts it
    monkeypatch.setenv(SEGMENTER_ENV, "off")
    lit = np.full((240, 240, 3), 40, np.uint8)
    cv2.circle(lit, (120, 120), 80, (190, 160, 90), -1)
    raking = lit.copy()
    cv2.circle(raking, (120, 120), 80, (42, 41, 40), -1)
    cv2.ellipse(raking, (120, 120), (80, 80), 0, 0, 270, (190, 160, 90), -1)  # a quarter dark
    catalog = lit.copy()
    names = ("diffuse.png", "raking.png", "catalog.png")
    for name, image in zip(names, (lit, raking, catalog), strict=True):
        cv2.imwrite(str(tmp_path / name), image[..., ::-1])
    items = [
        CacheItem(tmp_path / n, n, None, 0.0, pose=None if n == "catalog.png" else "p")
        for n in names
    ]
    asked = Preprocess(image_size=SIZE, single_photos=True)
    cached = load_cached(items, asked, tmp_path / "cache")
    with_pose, alone = ({n: a[cached.rows[n]] for n in names} for a in (cached.array, cached.alone))
    # together, the raking frame keeps the whole coin; alone, its dark quarter is cut away
    assert _kept(with_pose["raking.png"]).sum() > 0.95 * _kept(with_pose["diffuse.png"]).sum()
    assert _kept(alone["raking.png"]).sum() < 0.85 * _kept(with_pose["raking.png"]).sum()
    np.testing.assert_array_equal(alone["catalog.png"], with_pose["catalog.png"])
    # a second load reads both from disk
    again = load_cached(items, asked, tmp_path / "cache")
    assert again.decoded == 0
    np.testing.assert_array_equal(again.alone, cached.alone)
    # without single photos asked, the entry is another one, with the pose crops only
    plain = load_cached(items, Preprocess(image_size=SIZE), tmp_path / "cache")
    assert plain.decoded == len(names)
    np.testing.assert_array_equal(plain.array, cached.array)
    np.testing.assert_array_equal(plain.alone, plain.array)
    entry = tmp_path / "cache" / f"{cache_key(items, Preprocess(image_size=SIZE))}.npy"
    assert np.load(entry, mmap_mode="r").shape[0] == 1  # no second layer on disk

    bank = ImageBank(
        [], [(cached.array, cached.rows[n]) for n in names], [cached.alone] * len(names)
    )
    picked = bank.pixels([1, 1, 2], alone=[False, True, True])
    np.testing.assert_array_equal(picked[0], with_pose["raking.png"])
    np.testing.assert_array_equal(picked[1], alone["raking.png"])
    np.testing.assert_array_equal(picked[2], with_pose["catalog.png"])
