"""Checkpoints: safetensors weights plus a JSON of the model's own settings, so resume rebuilds it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from training.models.embedding import EmbeddingModel, build_model

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.json"
OPTIMIZER_FILE = "optimizer.pt"
# Bump when model.json's layout changes, so old checkpoints fail loudly instead of half-loading.
FORMAT_VERSION = 1


def save_checkpoint(
    directory: Path, model: EmbeddingModel, extra: Mapping[str, Any] | None = None
) -> None:
    """Write model.safetensors and model.json (model config plus JSON-able `extra`) to `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"format_version": FORMAT_VERSION, "config": model.config, "extra": dict(extra or {})}
    # Weights first, JSON last, each renamed into place: a crash never leaves a JSON whose
    # weights file is missing or half-written.
    save_weights(directory / WEIGHTS_FILE, model)
    write_atomic(directory / CONFIG_FILE, lambda p: p.write_text(json.dumps(meta, indent=2) + "\n"))


def read_checkpoint_meta(directory: Path) -> dict[str, Any]:
    """Return model.json's contents: {"format_version", "config", "extra"}.

    Raises:
        ValueError: the file is from an unknown format version.
    """
    meta: dict[str, Any] = json.loads((directory / CONFIG_FILE).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{directory / CONFIG_FILE}: format_version {meta.get('format_version')!r}, "
            f"this code reads {FORMAT_VERSION}"
        )
    return meta


def load_checkpoint(directory: Path, *, device: str | torch.device = "cpu") -> EmbeddingModel:
    """Rebuild the model from model.json and load model.safetensors into it strictly."""
    config = read_checkpoint_meta(directory)["config"]
    model = build_model(**config)
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILE), device=str(device)), strict=True)
    return model.to(device)


def save_optimizer(directory: Path, optimizer: torch.optim.Optimizer) -> None:
    """Write the optimizer's state_dict to optimizer.pt."""
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / OPTIMIZER_FILE, lambda p: torch.save(optimizer.state_dict(), p))


def load_optimizer(
    directory: Path, optimizer: torch.optim.Optimizer, *, device: str | torch.device = "cpu"
) -> None:
    """Load optimizer.pt into `optimizer`; weights_only=True refuses anything but tensors and plain data."""
    state = torch.load(directory / OPTIMIZER_FILE, map_location=device, weights_only=True)
    optimizer.load_state_dict(state)


def save_weights(path: Path, module: torch.nn.Module) -> None:
    """Write a module's weights to a safetensors file, renamed into place."""
    # safetensors wants contiguous CPU tensors that share no storage; a state_dict's do not.
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    write_atomic(path, lambda p: save_file(state, str(p)))


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write` on a temporary file beside `path`, fsync it, rename it into place."""
    # Write beside the target and rename, so a reader never sees a half-written file.
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
