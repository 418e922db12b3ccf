"""The same-coin verdict: thresholds and rates recomputed by hand on tiny score arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.search_errors import SearchError
from training.verdict import (
    NO_MATCH_TEXT,
    Verdict,
    calibrate_from_pairs,
    operating_point,
    plot_roc,
    roc_points,
    write_verdict,
)


def test_operating_point_by_hand() -> None:
    impostor = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    genuine = np.array([0.5, 0.85, 0.9, 0.99])
    # FAR ≤ 0.1 of 10 impostors allows 1 above the threshold: threshold = 2nd highest = 0.9.
    p = operating_point(genuine, impostor, 0.1)
    assert p.threshold == 0.9
    assert p.far == pytest.approx(0.1)  # only 0.95 is > 0.9
    assert p.tar == pytest.approx(0.25)  # only 0.99 is > 0.9 (0.9 itself is not above)
    assert p.frr == pytest.approx(0.75)
    assert p.resolved
    # FAR ≤ 0.3 allows 3 above: threshold 0.7, genuine above: 0.85, 0.9, 0.99.
    p = operating_point(genuine, impostor, 0.3)
    assert (p.threshold, p.far, p.tar) == (0.7, pytest.approx(0.3), pytest.approx(0.75))


def test_too_few_impostors_for_the_target_is_flagged() -> None:
    p = operating_point(np.array([0.9]), np.array([0.1, 0.4, 0.2]), 1e-3)
    assert p.threshold == 0.4 and p.far == 0.0 and not p.resolved


def test_ties_never_push_far_over_target() -> None:
    impostor = np.array([0.5, 0.5, 0.5, 0.5])
    p = operating_point(np.array([0.6, 0.5]), impostor, 0.25)
    assert p.far <= 0.25 and p.threshold == 0.5 and p.tar == 0.5


def test_calibrate_labels_and_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    impostor = rng.normal(0.1, 0.1, 5000)
    genuine = rng.normal(0.7, 0.1, 500)
    verdict = calibrate_from_pairs(genuine, impostor)
    # Thresholds: FAR 1e-3 is stricter than FAR 1e-2.
    assert verdict.match.threshold > verdict.possible.threshold
    assert verdict.match.far <= 1e-3 and verdict.possible.far <= 1e-2
    # Recompute the rates the slow way.
    t = verdict.match.threshold
    assert verdict.match.far == sum(s > t for s in impostor) / len(impostor)
    assert verdict.match.tar == sum(s > t for s in genuine) / len(genuine)
    assert verdict.match.tar > 0.9 and 0.99 < verdict.auc <= 1.0
    assert verdict.label(t + 1e-6) == "match"
    assert verdict.label(t) == "possible"
    assert verdict.label(verdict.possible.threshold) == "no match"
    verdict.save(tmp_path)
    assert Verdict.load(tmp_path) == verdict
    assert "TAR" in verdict.summary() and NO_MATCH_TEXT == "no catalog coin matches"


def test_roc_points_and_perfect_separation() -> None:
    far, tar = roc_points(np.array([0.8, 0.9]), np.array([0.1, 0.2]))
    assert far[0] == 0 and tar[-1] == 1
    assert calibrate_from_pairs([0.8, 0.9], [0.1, 0.2]).auc == pytest.approx(1.0)
    # Swapped scores: everything wrong, AUC 0.
    assert calibrate_from_pairs([0.1, 0.2], [0.8, 0.9]).auc == pytest.approx(0.0)


def test_roc_png(tmp_path: Path) -> None:
    g, i = [0.7, 0.8, 0.9, 0.6], [0.1, 0.3, 0.2, 0.65, 0.05]
    path = plot_roc(g, i, calibrate_from_pairs(g, i), tmp_path / "roc.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    verdict = write_verdict(tmp_path / "", g, i)
    assert Verdict.load(tmp_path / "verdict.json") == verdict
    assert (tmp_path / "roc.png").stat().st_size > 1000


@pytest.mark.parametrize("bad", [[], [0.1, float("nan")]])
def test_bad_scores(bad: list[float]) -> None:
    with pytest.raises(SearchError):
        calibrate_from_pairs(bad, [0.1])


def test_validation_impostor_spread_is_kept_and_old_verdicts_still_load(tmp_path: Path) -> None:
    impostor = np.array([0.1, 0.2, 0.3, 0.6])
    verdict = calibrate_from_pairs([0.9], impostor)
    assert verdict.impostor_mean == pytest.approx(0.3) and verdict.impostor_std == pytest.approx(
        impostor.std()
    )
    verdict.save(tmp_path)
    raw = json.loads((tmp_path / "verdict.json").read_text())
    del raw["impostor_mean"], raw["impostor_std"]  # as `pipeline evaluate` wrote it before
    (tmp_path / "verdict.json").write_text(json.dumps(raw))
    old = Verdict.load(tmp_path)
    assert old.impostor_mean is None and old.match == verdict.match
    raw["impostor_std"] = "wide"
    (tmp_path / "verdict.json").write_text(json.dumps(raw))
    with pytest.raises(SearchError, match="not a readable verdict"):
        Verdict.load(tmp_path)


def test_load_missing(tmp_path: Path) -> None:
    with pytest.raises(SearchError, match="verdict"):
        Verdict.load(tmp_path)
