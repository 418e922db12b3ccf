"""Pointing game, top-area precision and energy in mask, against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from training.explain.scoring import (
    energy_in_mask,
    pointing_game,
    random_baseline,
    score_map,
    top_area,
    top_area_precision,
)

# a 2×3 map and a truth mask marking the top-right two pixels (one at half weight)
HEAT = np.array([[0.0, 1.0, 4.0], [2.0, -1.0, 3.0]], np.float32)
TRUTH = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 0.5]], np.float32)


def test_pointing_game_hit_and_miss() -> None:
    assert pointing_game(HEAT, TRUTH) == 1.0  # max 4.0 at (0, 2), truth 1.0
    support = np.ones_like(TRUTH, bool)
    support[0, 2] = False  # next best within the support is 3.0 at (1, 2): truth 0.5 counts
    assert pointing_game(HEAT, TRUTH, support) == 1.0
    support[1, 2] = False  # then 2.0 at (1, 0): a miss
    assert pointing_game(HEAT, TRUTH, support) == 0.0


def test_pointing_game_tolerance() -> None:
    truth = np.zeros((9, 9), np.float32)
    truth[4, 4] = 1.0
    heat = np.zeros((9, 9), np.float32)
    heat[4, 6] = 1.0  # two pixels off the mark
    assert pointing_game(heat, truth) == 0.0
    assert pointing_game(heat, truth, tolerance_px=1) == 0.0
    assert pointing_game(heat, truth, tolerance_px=2) == 1.0


def test_ties_are_not_broken_by_position() -> None:
    truth = np.zeros((4, 4), np.float32)
    truth[3, :] = 1.0  # the bottom row
    flat = np.ones((4, 4), np.float32)
    assert pointing_game(flat, truth) == pytest.approx(0.25)  # 4 of 16 tied maxima hit
    # a quarter of a flat map, chosen among ties: not simply the top row
    assert top_area(flat, 0.25).sum() == 4 and not top_area(flat, 0.25)[0].all()


def test_top_area_and_precision() -> None:
    top = top_area(HEAT, 2 / 6)  # the two highest: 4.0 and 3.0
    assert top.tolist() == [[False, False, True], [False, False, True]]
    assert top_area_precision(HEAT, TRUTH, 2 / 6) == pytest.approx((1.0 + 0.5) / 2)
    # top half: 4, 3, 2 → truth 1, 0.5, 0
    assert top_area_precision(HEAT, TRUTH, 0.5) == pytest.approx(1.5 / 3)
    with pytest.raises(ValueError):
        top_area(HEAT, 0.0)


def test_energy_in_mask() -> None:
    # positive mass 1 + 4 + 2 + 3 = 10; on the truth 4·1 + 3·0.5 = 5.5
    assert energy_in_mask(HEAT, TRUTH) == pytest.approx(0.55)
    assert energy_in_mask(np.zeros_like(HEAT), TRUTH) == 0.0
    scores = score_map(HEAT, TRUTH, 2 / 6)
    assert (scores.pointing, scores.precision, scores.energy) == pytest.approx((1.0, 0.75, 0.55))


def test_random_baseline_matches_the_marks_share_of_the_area() -> None:
    truth = np.zeros((64, 64), np.float32)
    truth[:, :16] = 1.0  # a quarter of the image
    chance = random_baseline(truth, 0.1, scale_px=5, trials=200)
    assert chance.pointing == pytest.approx(0.25, abs=0.08)
    assert chance.precision == pytest.approx(0.25, abs=0.06)
    assert chance.energy == pytest.approx(0.25, abs=0.03)
    # a map that is the truth itself scores perfectly
    perfect = score_map(truth, truth, 0.25)
    assert (perfect.pointing, perfect.precision, perfect.energy) == (1.0, 1.0, 1.0)
