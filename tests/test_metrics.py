"""Retrieval metrics, verification statistics, the learning-rate schedule and ArcFace, recomputed
by explicit loops on tiny hand-made tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.losses import LossSettings, build_loss, margin_at, set_margin
from training.metrics import (
    breakdown,
    equal_error_rate,
    genuine_impostor,
    pooled_top1,
    retrieval_metrics,
    worst_failures,
)
from training.train import lr_at


def _unit(*angles_deg: float) -> torch.Tensor:
    a = torch.tensor(angles_deg) * math.pi / 180
    return torch.stack([torch.cos(a), torch.sin(a)], dim=1)


def test_catalog_protocol_by_hand() -> None:
    # Gallery: three identities at 0°, 120°, 240°. Queries near their own identity except q2,
    # which sits closer to identity 2 than to its own identity 1.
    gallery = _unit(0, 120, 240)
    queries = _unit(10, 350, 185, 125, 230)
    labels = [0, 0, 1, 1, 2]
    metrics, result = retrieval_metrics(queries, labels, gallery, [0, 1, 2])
    # Nearest gallery items: 0, 0, 2 (185° is 55° from 240°, 65° from 120°), 1, 2.
    assert result.nearest.tolist() == [0, 0, 2, 1, 2]
    assert metrics["top1"] == pytest.approx(4 / 5)
    assert metrics["precision_at_1"] == pytest.approx(4 / 5)
    # One right answer per query (R = 1): MAP@R and R-precision equal top-1 here.
    assert metrics["map_at_r"] == pytest.approx(4 / 5)
    assert metrics["r_precision"] == pytest.approx(4 / 5)
    assert metrics["top5"] == 1.0  # only three gallery items, all within the top 5
    assert worst_failures(result, 5) == [(2, 2, 1)]


def _loop_map_at_r(emb: torch.Tensor, labels: list[int]) -> tuple[float, float, float, float]:
    """Leave-one-out top-1, top-2, MAP@R and R-precision by explicit loops."""
    n = len(labels)
    top1 = top2 = map_r = r_prec = 0.0
    for i in range(n):
        others = [j for j in range(n) if j != i]
        ranked = sorted(others, key=lambda j: -float(emb[i] @ emb[j]))
        hits = [labels[j] == labels[i] for j in ranked]
        r = sum(hits)
        top1 += hits[0]
        top2 += any(hits[:2])
        r_prec += sum(hits[:r]) / r
        precisions = [sum(hits[: k + 1]) / (k + 1) for k in range(r) if hits[k]]
        map_r += sum(precisions) / r
    return top1 / n, top2 / n, map_r / n, r_prec / n


def test_leave_one_out_map_at_r_matches_explicit_loops() -> None:
    emb = _unit(0, 20, 100, 110, 200, 95, 210, 300)
    labels = [0, 0, 0, 1, 1, 1, 2, 2]
    metrics, _ = retrieval_metrics(emb, labels, emb, labels, leave_one_out=True)
    top1, _, map_r, r_prec = _loop_map_at_r(emb, labels)
    assert metrics["top1"] == pytest.approx(top1)
    assert metrics["precision_at_1"] == pytest.approx(top1)
    assert metrics["map_at_r"] == pytest.approx(map_r)
    assert metrics["r_precision"] == pytest.approx(r_prec)


def test_top5_counts_a_right_match_anywhere_in_the_first_five() -> None:
    gallery = _unit(0, 10, 20, 30, 40, 50, 180)
    queries = _unit(0, 0)
    # Query 0's identity (label 4) is 5th nearest; query 1's (label 6) is last.
    metrics, result = retrieval_metrics(queries, [4, 6], gallery, list(range(7)))
    assert result.top5.tolist() == [True, False]
    assert metrics["top5"] == 0.5 and metrics["top1"] == 0.0


def test_breakdown_by_group() -> None:
    gallery = _unit(0, 180)
    queries = _unit(5, 175, 170, 10)
    _, result = retrieval_metrics(queries, [0, 1, 0, 1], gallery, [0, 1])
    groups = breakdown(result, ["diffuse", "diffuse", "raking", "raking"])
    assert groups["diffuse"] == {"top1": 1.0, "top5": 1.0, "queries": 2}
    assert groups["raking"]["top1"] == 0.0


def test_genuine_impostor_and_eer_by_hand() -> None:
    gallery = _unit(0, 90)
    queries = _unit(0, 60)
    _, result = retrieval_metrics(queries, [0, 1], gallery, [0, 1])
    genuine, impostor = genuine_impostor(result)
    assert sorted(genuine.round(4).tolist()) == pytest.approx(
        sorted([1.0, math.cos(math.radians(30))]), abs=1e-4
    )
    assert sorted(impostor.round(4).tolist()) == pytest.approx(sorted([0.0, 0.5]), abs=1e-4)
    # Separable scores: some threshold rejects every impostor and accepts every genuine pair.
    eer, threshold = equal_error_rate(np.array([0.9, 0.8]), np.array([0.1, 0.2]))
    assert eer == 0.0 and 0.2 < threshold <= 0.8
    # Interleaved: at t = 0.5, 1 of 2 genuine rejected and 1 of 2 impostors accepted.
    eer, _ = equal_error_rate(np.array([0.9, 0.4]), np.array([0.6, 0.1]))
    assert eer == pytest.approx(0.5)


def test_lr_schedule_warms_up_then_decays_by_cosine() -> None:
    kw = {"base_lr": 1.0, "warmup_steps": 4, "total_steps": 14, "min_lr": 0.1}
    assert [lr_at(s, **kw) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr_at(4, **kw) == pytest.approx(1.0)
    assert lr_at(9, **kw) == pytest.approx(0.1 + 0.5 * 0.9)  # half way: cos(π/2) = 0
    assert lr_at(14, **kw) == pytest.approx(0.1)
    assert lr_at(100, **kw) == pytest.approx(0.1)


def test_arcface_matches_explicit_formula() -> None:
    torch.manual_seed(0)
    settings = LossSettings(name="arcface", margin_rad=0.3, scale=8.0)
    loss_fn = build_loss(settings, num_classes=3, embedding_dim=4)
    emb = F.normalize(torch.randn(5, 4), dim=1)
    labels = torch.tensor([0, 1, 2, 1, 0])
    weights = F.normalize(next(loss_fn.parameters()).detach().T, dim=1)  # classes × dim
    total = 0.0
    for i in range(5):
        logits = []
        for c in range(3):
            cos = float(emb[i] @ weights[c])
            angle = math.acos(max(-1.0, min(1.0, cos)))
            logits.append(
                settings.scale * (math.cos(angle + settings.margin_rad) if c == labels[i] else cos)
            )
        total += -logits[int(labels[i])] + math.log(sum(math.exp(v) for v in logits))
    assert float(loss_fn(emb, labels).detach()) == pytest.approx(total / 5, rel=1e-4)
    assert any(p.requires_grad for p in loss_fn.parameters())  # the optimizer must update them


def test_margin_warms_up_linearly_then_holds_and_the_loss_uses_it() -> None:
    ramp = LossSettings(margin_rad=0.5, margin_warmup=0.25)
    assert [margin_at(s, ramp, 40) for s in (0, 5, 9, 10, 39)] == pytest.approx(
        [0.0, 0.25, 0.45, 0.5, 0.5]
    )
    assert margin_at(0, LossSettings(margin_rad=0.5), 40) == 0.5  # no warm-up: full at once
    torch.manual_seed(0)
    emb = F.normalize(torch.randn(6, 4), dim=1)
    labels = torch.tensor([0, 1, 2, 1, 0, 2])
    loss_fn = build_loss(ramp, num_classes=3, embedding_dim=4)
    plain = build_loss(LossSettings(margin_rad=0.0), num_classes=3, embedding_dim=4)
    plain.load_state_dict(loss_fn.state_dict())
    with torch.no_grad():
        full = float(loss_fn(emb, labels))
        set_margin(loss_fn, 0.0)
        assert float(loss_fn(emb, labels)) == pytest.approx(float(plain(emb, labels)), rel=1e-6)
        assert float(loss_fn(emb, labels)) < full  # a smaller margin asks less of the target
    set_margin(build_loss(LossSettings(name="triplet"), 3, 4), 0.1)  # no margin to set: no error


def test_triplet_loss_with_miner_runs_and_has_no_parameters() -> None:
    loss_fn = build_loss(LossSettings(name="triplet"), num_classes=2, embedding_dim=2)
    emb = _unit(0, 10, 20, 180, 190, 15).requires_grad_(True)
    loss = loss_fn(emb, torch.tensor([0, 0, 0, 1, 1, 1]))
    loss.backward()
    assert float(loss.detach()) > 0 and list(loss_fn.parameters()) == []


@pytest.mark.parametrize("name", ["arcface", "subcenter-arcface", "triplet"])
def test_every_loss_builds_and_backpropagates(name: str) -> None:
    loss_fn = build_loss(LossSettings(name=name), num_classes=3, embedding_dim=8)
    emb = F.normalize(torch.randn(6, 8), dim=1).requires_grad_(True)
    loss = loss_fn(emb, torch.tensor([0, 0, 1, 1, 2, 2]))
    loss.backward()
    assert emb.grad is not None and torch.isfinite(loss.detach())
    if name != "triplet":
        assert all(p.grad is not None for p in loss_fn.parameters())


def test_pooled_top1_lets_a_coin_sides_captures_outvote_one_bad_photo() -> None:
    """Two of three captures point at the right coin: pooled, the side is found."""
    gallery = torch.eye(2)
    queries = F.normalize(torch.tensor([[1.0, 0.1], [1.0, 0.2], [0.2, 1.0], [0.1, 1.0]]), dim=1)
    labels = [0, 0, 0, 1]  # the third query (coin 0) looks like coin 1
    _, result = retrieval_metrics(queries, labels, gallery, [0, 1])
    assert result.top1.tolist() == [True, True, False, True]
    pooled = pooled_top1(result, ["a/obverse", "a/obverse", "a/obverse", "b/obverse"])
    assert pooled == {"top1": 1.0, "queries": 2}
    # the bad photo alone is still wrong when it is its own group
    alone = pooled_top1(result, ["a/obverse", "a/obverse", "a/reverse", "b/obverse"])
    assert alone == {"top1": 2 / 3, "queries": 3}
    assert pooled_top1(result, []) == {"top1": 0.0, "queries": 0}
