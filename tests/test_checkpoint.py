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
from training.errors import RunFolderError
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
    with pytest.raises(RunFolderError, match="format_version 99"):
        load_checkpoint(tmp_path)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, build_model("resnet-tiny", embedding_dim=8))
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    meta["config"]["embedding_dim"] = 16
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(RunFolderError, match="size mismatch"):
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


def test_a_resumed_weight_average_goes_on_averaging(tmp_path: Path) -> None:
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from training.losses import LossSettings, build_loss
    from training.train import _load_state, _save_state

    def setup() -> tuple[EmbeddingModel, torch.nn.Module, torch.optim.Optimizer, AveragedModel]:
        model = build_model("resnet-tiny", embedding_dim=8, image_size=32)
        loss = build_loss(LossSettings(), 4, 8)
        opt = torch.optim.AdamW([*model.parameters(), *loss.parameters()])
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
        return model, loss, opt, ema

    torch.manual_seed(0)
    model, loss, opt, ema = setup()
    ema.update_parameters(model)
    _trained_step(model, opt)
    ema.update_parameters(model)  # now 0.9 · initial + 0.1 · trained
    _save_state(tmp_path, model, loss, opt, {"epoch": 1, "step": 1}, ema)
    assert (tmp_path / "ema" / WEIGHTS_FILE).exists()

    torch.manual_seed(1)
    resumed_model, resumed_loss, resumed_opt, resumed_ema = setup()
    state = _load_state(tmp_path, resumed_model, resumed_loss, resumed_opt, resumed_ema)
    assert state["step"] == 1
    saved = {k: v.clone() for k, v in ema.module.state_dict().items()}
    for key, value in resumed_ema.module.state_dict().items():
        torch.testing.assert_close(value, saved[key])
    # the next update averages (a fresh average would copy the weights instead)
    _trained_step(resumed_model, resumed_opt)
    resumed_ema.update_parameters(resumed_model)
    weight = "backbone.conv1.weight"
    want = 0.9 * saved[weight] + 0.1 * resumed_model.state_dict()[weight]
    torch.testing.assert_close(resumed_ema.module.state_dict()[weight], want)
