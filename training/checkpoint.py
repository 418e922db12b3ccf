"""Checkpoints: safetensors weights plus a JSON of the model's own settings, so resume rebuilds it."""

from __future__ import annotations

import json
import os
import pickle
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from training.errors import RunFolderError, SettingsError
from training.models.embedding import EmbeddingModel, build_model, model_names
from training.validation import MAX_EMBEDDING_DIM, MAX_IMAGE_SIZE, MAX_ROTATIONS, whole

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.json"
OPTIMIZER_FILE = "optimizer.pt"
# Bump when model.json's layout changes, so old checkpoints fail loudly instead of half-loading.
FORMAT_VERSION = 1
# model.json's config keys (build_model's arguments); sizes bounded as TrainConfig bounds them.
_MODEL_KEYS = ("name", "embedding_dim", "image_size", "in_channels", "bn_neck", "rotations")


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
    """Return model.json's contents, checked: {"format_version", "config", "extra"}.

    Raises:
        RunFolderError: the file is missing, not JSON, from an unknown format version, or
            its model config is one build_model would refuse (or could not afford to build).
    """
    path = directory / CONFIG_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RunFolderError(f"{path}: unreadable checkpoint settings ({one_line(e)})") from e
    if not isinstance(meta, dict):
        raise RunFolderError(f"{path}: not a JSON object")
    if meta.get("format_version") != FORMAT_VERSION:
        raise RunFolderError(
            f"{path}: format_version {meta.get('format_version')!r:.20}, "
            f"this code reads {FORMAT_VERSION}"
        )
    check_model_config(meta.get("config"), path)
    if not isinstance(meta.get("extra", {}), dict):
        raise RunFolderError(f"{path}: extra is not a JSON object")
    return meta


def check_model_config(config: object, where: Path) -> None:
    """Refuse a model config that build_model would reject or that would not fit in memory.

    Raises:
        RunFolderError: not an object, unknown keys or model, sizes out of range, wrong types.
    """
    if not isinstance(config, dict):
        raise RunFolderError(f"{where}: config is not a JSON object")
    unknown = set(config) - set(_MODEL_KEYS)
    if unknown or not {"name", "embedding_dim", "image_size"} <= set(config):
        raise RunFolderError(f"{where}: config keys {sorted(config)!r:.80} are not a model's")
    try:
        if config["name"] not in model_names():
            raise SettingsError(f"unknown model {config['name']!r:.40}")
        whole("embedding_dim", config["embedding_dim"], low=1, high=MAX_EMBEDDING_DIM)
        whole("image_size", config["image_size"], low=1, high=MAX_IMAGE_SIZE)
        # every caller feeds RGB: another channel count fails at the first forward pass
        whole("in_channels", config.get("in_channels", 3), low=3, high=3)
        whole("rotations", config.get("rotations", 1), low=1, high=MAX_ROTATIONS)
        if not isinstance(config.get("bn_neck", False), bool):
            raise SettingsError(f"bn_neck must be true or false, got {config['bn_neck']!r:.20}")
    except SettingsError as e:
        raise RunFolderError(f"{where}: {e}") from e


def load_checkpoint(directory: Path, *, device: str | torch.device = "cpu") -> EmbeddingModel:
    """Rebuild the model from model.json and load model.safetensors into it strictly.

    Raises:
        RunFolderError: model.json is damaged (read_checkpoint_meta), or the weights file is
            missing, not safetensors, truncated, or does not fit the config.
    """
    config = read_checkpoint_meta(directory)["config"]
    path = directory / WEIGHTS_FILE
    try:
        model = build_model(**config)
        state = load_file(str(path), device=str(device))
        model.load_state_dict(state, strict=True)
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise RunFolderError(f"{path}: damaged or does not fit {CONFIG_FILE}: {one_line(e)}") from e
    # NaN weights embed every image as NaN: scores nobody can rank, and not JSON either
    if not all(bool(t.isfinite().all()) for t in state.values() if t.is_floating_point()):
        raise RunFolderError(f"{path}: holds NaN or infinite weights (a run that diverged)")
    return model.to(device)


def save_optimizer(directory: Path, optimizer: torch.optim.Optimizer) -> None:
    """Write the optimizer's state_dict to optimizer.pt."""
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / OPTIMIZER_FILE, lambda p: torch.save(optimizer.state_dict(), p))


def load_optimizer(
    directory: Path, optimizer: torch.optim.Optimizer, *, device: str | torch.device = "cpu"
) -> None:
    """Load optimizer.pt into `optimizer` (read by load_torch_state: nothing in it is run).

    Raises:
        RunFolderError: the file is missing, damaged, pickles an object (refused unrun), or
            holds another optimizer's state.
    """
    path = directory / OPTIMIZER_FILE
    state = load_torch_state(path, device=device)
    try:
        if not isinstance(state, dict) or not isinstance(state.get("param_groups"), list):
            raise ValueError("not an optimizer state_dict")
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as e:
        raise RunFolderError(f"{path}: not this run's optimizer state: {one_line(e)}") from e


def load_torch_state(path: Path, *, device: str | torch.device = "cpu") -> object:
    """A torch.save file's tensors and plain data; weights_only=True refuses any other object.

    Raises:
        RunFolderError: missing or damaged, or it pickles objects (refused without running).
    """
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of foreign files before refusing them
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        raise RunFolderError(
            f"{path}: holds pickled objects, not only tensors (refused, nothing in it was run)"
        ) from e
    # RuntimeError: a damaged zip; EOFError: a truncated pickle
    except (OSError, RuntimeError, EOFError, ValueError) as e:
        raise RunFolderError(f"{path}: damaged ({one_line(e)})") from e


def one_line(error: BaseException) -> str:
    """An exception's message on one line, at most 200 characters (for one-line errors)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:199] + "…"


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
