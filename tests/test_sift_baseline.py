"""The dense-SIFT + polar-pyramid + linear-SVM baseline: its parts, and end to end above chance."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from test_hierarchy import synthetic_coins
from threadpoolctl import threadpool_limits

from training.sift_baseline import (
    SiftSettings,
    dense_sift,
    polar_cells,
    pyramid_histogram,
    run_sift_baseline_cv,
)


@pytest.fixture(autouse=True)
def one_blas_thread() -> Iterator[None]:
    # two cores shared by many processes: k-means' BLAS threads only wait for a core under
    # load (16 s → 4 s measured with one), so the codebook is fitted on one
    with threadpool_limits(limits=1):
        yield


def test_dense_sift_grid() -> None:
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)
    points, desc = dense_sift(image, step_px=4, patch_px=8)
    assert desc.shape == (49, 128)  # x, y in 4, 8, …, 28
    assert points.min() == 4 and points.max() == 28


def test_polar_cells_layout() -> None:
    # a 21×21 image: centre at (10, 10), radius 10.5; two rings split at 5.25 px
    points = np.array([[13, 10], [10, 7], [18, 10], [10, 18], [4, 10], [0, 0]], np.float32)
    cells = polar_cells(points, (21, 21), rings=2, sectors=6)
    # angle 0° inner ring → 0; 270° (up, y negative) inner → sector 4; 0° outer → 6 + 0;
    # 90° (down) outer → 6 + 1; 180° outer → 6 + 3; the corner lies off the coin → -1
    assert cells.tolist() == [0, 4, 6, 7, 9, -1]


def test_pyramid_histogram_is_unit_length_and_counts_cells() -> None:
    words = np.array([0, 0, 1, 2])
    cells = np.array([0, 0, 3, -1])  # the last point is off the coin
    vec = pyramid_histogram(words, cells, vocabulary=3, n_cells=4)
    assert vec.shape == (12,)
    assert np.linalg.norm(vec) == pytest.approx(1.0)
    # counts: cell 0 word 0 → 2, cell 3 word 1 → 1: square roots 2:1 before normalising
    assert vec[0] == pytest.approx(np.sqrt(2 / 3)) and vec[3 * 3 + 1] == pytest.approx(
        np.sqrt(1 / 3)
    )
    assert np.count_nonzero(vec) == 2


def test_sift_baseline_end_to_end_beats_chance() -> None:
    images = synthetic_coins(coins_per_type=6, per_side=1, size=48)
    result = run_sift_baseline_cv(images, SiftSettings(words=24), folds=3)
    assert result["method"] == "sift" and result["coins"] == 24
    assert result["obverse_only"]["balanced_accuracy"] > 0.75  # chance 0.5
    assert result["reverse_only"]["balanced_accuracy"] > 0.3  # chance 0.25, best 0.5
    assert result["hierarchy"]["balanced_accuracy"] > 0.5
