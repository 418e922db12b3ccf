"""Checkpoints rebuild the same model and optimizer from safetensors, JSON and optimizer.pt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from training.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_checkpoint,
    load_optimizer,
    read_checkpoint_meta,
    save_checkpoint,
    save_optimizer,
)
from training.models import EmbeddingModel, build_model


def _trained_step(model: EmbeddingModel, optimizer: torch.optim.Optimizer) -> None:
    # One step so weights, BatchNorm running stats and optimizer moments all leave their init.
    model.train()
    loss = model(torch.randn(4, 3, 64, 64)).sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


@pytest.mark.parametrize(
    ("name", "bn_neck"), [("resnet-tiny", False), ("resnet-tiny-truncated", True)]
)
def test_round_trip_gives_identical_embeddings(tmp_path: Path, name: str, bn_neck: bool) -> None:
    torch.manual_seed(0)
    model = build_model(name, embedding_dim=24, image_size=64, bn_neck=bn_neck)
    _trained_step(model, torch.optim.SGD(model.parameters(), lr=0.1))
    save_checkpoint(tmp_path, model, {"step": 7, "best_map_at_r": 0.5})

    loaded = load_checkpoint(tmp_path)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        want = model.eval()(x)
        got = loaded.eval()(x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert loaded.config == model.config
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([WEIGHTS_FILE, CONFIG_FILE])


def test_meta_json_carries_config_and_extra(tmp_path: Path) -> None:
    model = build_model("resnet-tiny", embedding_dim=8, rotations=4)
    save_checkpoint(tmp_path, model, {"step": 3})
    meta = read_checkpoint_meta(tmp_path)
    assert meta["config"] == {
        "name": "resnet-tiny",
        "embedding_dim": 8,
        "image_size": 224,
        "in_channels": 3,
        "bn_neck": False,
        "rotations": 4,
    }
    assert load_checkpoint(tmp_path).rotations == 4
    assert meta["extra"] == {"step": 3}


def test_unknown_format_version_is_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, build_model("resnet-tiny", embedding_dim=8))
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    meta["format_version"] = 99
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format_version 99"):
        load_checkpoint(tmp_path)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, build_model("resnet-tiny", embedding_dim=8))
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    meta["config"]["embedding_dim"] = 16
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_checkpoint(tmp_path)


def test_optimizer_round_trip_restores_adam_moments(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("resnet-tiny", embedding_dim=8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _trained_step(model, optimizer)
    save_optimizer(tmp_path, optimizer)

    fresh = torch.optim.AdamW(model.parameters(), lr=5.0)
    load_optimizer(tmp_path, fresh)
    want, got = optimizer.state_dict(), fresh.state_dict()
    assert got["param_groups"] == want["param_groups"]
    assert set(got["state"]) == set(want["state"])
    for index, state in want["state"].items():
        for key, value in state.items():
            torch.testing.assert_close(got["state"][index][key], value, rtol=0, atol=0)
