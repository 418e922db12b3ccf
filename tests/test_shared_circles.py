"""Frames of one pose share the coin's circle, so a raking light's shadow never moves the crop."""

from pathlib import Path

import cv2
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from training.cache import SHARED_SLACK, CacheItem, Preprocess, load_cached, shared_circles
from training.coinfind import Circle, find_coin


def _frame(shadow: bool) -> np.ndarray:
    # a lit coin on the rig's dark backdrop; a raking light from the left casts its shadow right
    image = np.full((240, 240, 3), 90, np.uint8)
    if shadow:
        cv2.circle(image, (132, 122), 70, (5, 5, 5), -1)
    cv2.circle(image, (116, 118), 70, (160, 140, 100), -1)
    cv2.line(image, (90, 100), (140, 150), (90, 80, 60), 3)  # a scratch: the coin's identity
    return image


def test_a_shadowed_frame_is_cropped_like_its_pose_s_diffuse_frame(tmp_path: Path) -> None:
    items = []
    for name, shadow in (("diffuse.png", False), ("raking.png", True)):
        cv2.imwrite(str(tmp_path / name), _frame(shadow))
        items.append(CacheItem(tmp_path / name, name, None, 0.0, pose="s|c|obverse|0|None"))
    assert find_coin(_frame(True)).r > 1.08 * find_coin(_frame(False)).r  # the shadow inflates

    settings_ = Preprocess(image_size=64, mask_background=True)
    shared = load_cached(items, settings_, tmp_path / "shared")
    diffuse, raking = (
        shared.array[shared.rows["diffuse.png"]],
        shared.array[shared.rows["raking.png"]],
    )
    assert np.abs(diffuse.astype(int) - raking.astype(int)).mean() < 2.0

    alone = [CacheItem(i.path, i.file_name, None, 0.0) for i in items]
    own = load_cached(alone, settings_, tmp_path / "alone")
    moved = own.array[own.rows["raking.png"]]
    assert np.abs(diffuse.astype(int) - moved.astype(int)).mean() > 5.0  # what sharing avoids


def test_a_moved_coin_or_a_fragment_keeps_its_own_circle() -> None:
    coin = Circle(100, 100, 50, "blob")
    shadowed = Circle(106, 100, 57, "blob")
    moved = Circle(160, 100, 50, "blob")
    fragment = Circle(100, 100, 20, "blob")
    assert shared_circles([shadowed, coin]) == [coin, coin]
    assert shared_circles([coin, moved, shadowed]) == [coin, moved, coin]
    assert shared_circles([fragment, coin, shadowed]) == [fragment, coin, coin]
    assert shared_circles([shadowed]) == [shadowed]


circles = st.builds(
    Circle,
    st.floats(0, 400),
    st.floats(0, 400),
    st.floats(5, 200),
    st.just("blob"),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(circles, min_size=1, max_size=6))
def test_a_shared_circle_always_lies_within_the_frame_s_own(found: list[Circle]) -> None:
    for own, used in zip(found, shared_circles(found), strict=True):
        assert used == own or (
            np.hypot(used.x - own.x, used.y - own.y) + used.r <= own.r * SHARED_SLACK + 1e-9
            and used.r <= own.r * SHARED_SLACK
        )
