"""Hierarchical ruler → type classification: the rule, the folds, and the gain on synthetic coins."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.errors import DataError, SettingsError
from training.hierarchy import (
    ClassifierSettings,
    LabelledImage,
    balanced_accuracy,
    class_balanced_folds,
    hierarchy_predict,
    paired_line,
    run_hierarchy_cv,
    sign_test_p,
)
from training.hierarchy_plot import write_confusion_png
from training.hierarchy_run import fit_hierarchy, load_hierarchy_run, save_hierarchy_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def synthetic_coins(
    coins_per_type: int = 6, per_side: int = 2, size: int = 32, seed: int = 0
) -> list[LabelledImage]:
    """Two rulers × two reverse designs = four types, built so the reverse alone is ambiguous.

    The obverse shows the ruler (a horizontal or a vertical bar); the reverse shows only the
    design (a disc or a square), drawn the same for both rulers' types, so reverse-only can at
    best tell two of the four types apart and the obverse must settle the ruler.
    """
    rng = np.random.default_rng(seed)
    out: list[LabelledImage] = []
    c = size // 2
    for ruler in range(2):
        for design in range(2):
            for k in range(coins_per_type):
                coin_id = f"C{ruler}{design}{k}"
                for _ in range(per_side):
                    for side in ("obverse", "reverse"):
                        img = np.zeros((size, size, 3), np.uint8)
                        cv2.circle(img, (c, c), int(size * 0.45), (150, 120, 80), -1)
                        dx, dy = (int(v) for v in rng.integers(-2, 3, 2))
                        if side == "obverse":
                            half = (10, 2) if ruler == 0 else (2, 10)
                            p = (c + dx - half[0], c + dy - half[1])
                            q = (c + dx + half[0], c + dy + half[1])
                            cv2.rectangle(img, p, q, (240, 220, 160), -1)
                        else:
                            colour = (240, 220, 160) if design == 0 else (40, 30, 20)
                            cv2.circle(img, (c + dx, c + dy), 8, colour, -1)
                        noise = rng.normal(0, 12, img.shape)
                        img = np.clip(img + noise, 0, 255).astype(np.uint8)
                        out.append(
                            LabelledImage(img, f"R{ruler}", f"T{ruler}{design}", side, coin_id)
                        )
    return out


def test_hierarchy_rule_by_hand() -> None:
    # two rulers; types 0, 1 belong to ruler 0 and type 2 to ruler 1
    p_ruler = np.array([[0.9, 0.1], [0.2, 0.8]])
    p_type = np.array([[0.1, 0.3, 0.6], [0.5, 0.1, 0.4]])
    # row 0: 0.09, 0.27, 0.06 → type 1 (reverse-only would say 2)
    # row 1: 0.10, 0.02, 0.32 → type 2 (reverse-only would say 0)
    assert hierarchy_predict(p_ruler, p_type, [0, 0, 1]).tolist() == [1, 2]


def test_sign_test_by_hand() -> None:
    assert sign_test_p(0, 0) == 1.0
    assert sign_test_p(5, 0) == pytest.approx(2 / 32)  # both tails of five fair coin flips
    assert sign_test_p(1, 3) == pytest.approx(2 * (1 + 4) / 16)
    assert sign_test_p(3, 3) == 1.0  # capped: a tie is no evidence either way


def test_balanced_accuracy_is_the_mean_of_the_row_normalised_diagonal() -> None:
    confusion = np.array([[8, 2, 0], [1, 1, 0], [0, 0, 0]])
    assert balanced_accuracy(confusion) == pytest.approx((0.8 + 0.5) / 2)  # row 3 is absent


def test_folds_are_class_balanced_and_disjoint() -> None:
    labels = ["a"] * 10 + ["b"] * 6 + ["c"] * 5
    folds = class_balanced_folds(labels, 5, seed=3)
    tests = [set(test.tolist()) for _, test in folds]
    assert set().union(*tests) == set(range(len(labels)))
    assert sum(len(t) for t in tests) == len(labels)  # disjoint
    for (train, test), t in zip(folds, tests, strict=True):
        assert set(train.tolist()).isdisjoint(t)
        counts = Counter(labels[i] for i in test)
        assert counts["a"] == 2 and counts["b"] in (1, 2) and counts["c"] == 1


def test_hierarchy_beats_reverse_only_on_synthetic_coins(tmp_path: Path) -> None:
    images = synthetic_coins(per_side=1)
    settings = ClassifierSettings(image_size=32, epochs=6, batch_size=16, lr=3e-3, aug="none")
    result = run_hierarchy_cv(images, settings, folds=3, seed=0)
    rev = result["reverse_only"]["balanced_accuracy"]
    obv = result["obverse_only"]["balanced_accuracy"]
    hier = result["hierarchy"]["balanced_accuracy"]
    assert result["coins"] == 24 and result["types"] == 4 and result["rulers"] == 2
    # the reverse cannot tell the two rulers' types apart: 0.5 expected, luck gives a little more
    assert rev <= 0.7
    assert obv >= 0.9
    assert hier >= 0.9 and hier >= rev + 0.25
    # every test coin counted exactly once over the folds
    assert np.sum(result["hierarchy"]["confusion"]) == 24
    # the paired comparison: per-fold gains are the folds' own differences, and the pairs
    # only one method gets right all go the hierarchy's way here
    paired = result["hierarchy_vs_reverse"]
    per_fold = [
        h - r
        for h, r in zip(
            result["hierarchy"]["per_fold"], result["reverse_only"]["per_fold"], strict=True
        )
    ]
    assert paired["per_fold_gain"] == pytest.approx(per_fold)
    assert (
        paired["fold_gain_mean"] == pytest.approx(np.mean(per_fold))
        and paired["fold_gain_mean"] > 0.2
    )
    assert paired["only_hierarchy_right"] >= 5 > paired["only_reverse_right"]
    assert paired["sign_test_p"] < 0.05
    assert "sign test p" in paired_line(result)
    write_confusion_png(tmp_path / "h.png", result["hierarchy"], "hierarchy")
    assert (tmp_path / "h.png").stat().st_size > 1000


def test_types_with_too_few_coins_are_left_out_and_named() -> None:
    images = synthetic_coins(coins_per_type=2, per_side=1)
    warned: list[str] = []
    with pytest.raises(SettingsError, match="at least 2 types"):
        run_hierarchy_cv(images, ClassifierSettings(image_size=32), folds=3, warn=warned.append)
    assert "T00" in warned[0]


def test_a_saved_hierarchy_classifies_unseen_coins_as_it_did_in_memory(tmp_path: Path) -> None:
    images = synthetic_coins(per_side=2)
    train = [im for im in images if int(im.coin_id[-1]) < 4]  # 4 coins of each type
    held_out = [im for im in images if int(im.coin_id[-1]) >= 4]  # 2 others of each type
    settings = ClassifierSettings(image_size=32, epochs=6, batch_size=16, lr=3e-3, aug="none")
    model, coins = fit_hierarchy(train, settings)
    assert len(coins) == 16 and model.rulers == ["R0", "R1"]
    assert [model.rulers[r] for r in model.ruler_of_type] == ["R0", "R0", "R1", "R1"]
    save_hierarchy_run(tmp_path, model, settings, {"training_coins": coins})
    loaded, config = load_hierarchy_run(tmp_path)
    assert config["task"] == "hierarchy" and config["training_coins"] == coins
    obverse = [im.image for im in held_out if im.side == "obverse"]
    reverse = [im.image for im in held_out if im.side == "reverse"]
    truth = np.array([model.types.index(im.type_class) for im in held_out if im.side == "reverse"])
    in_memory, from_disk = model.predict(obverse, reverse), loaded.predict(obverse, reverse)
    for a, b in zip(in_memory, from_disk, strict=True):
        assert np.array_equal(a, b)
    _, reverse_only, hierarchy = from_disk
    assert np.mean(hierarchy == truth) >= 0.9
    assert np.mean(hierarchy == truth) >= np.mean(reverse_only == truth) + 0.25


def test_loading_refuses_what_is_not_a_whole_hierarchy_run(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a run of `pipeline train --task hierarchy`"):
        load_hierarchy_run(tmp_path)
    images = synthetic_coins(coins_per_type=2, per_side=1)
    settings = ClassifierSettings(image_size=32, epochs=1, batch_size=16, aug="none")
    model, coins = fit_hierarchy(images, settings)
    save_hierarchy_run(tmp_path, model, settings, {"training_coins": coins})
    (tmp_path / "checkpoints" / "hierarchy" / "type.safetensors").unlink()
    with pytest.raises(DataError, match="missing weights"):
        load_hierarchy_run(tmp_path)
