"""A training run's resumable state on disk, and its metrics log.

RUN/checkpoints/last holds what `pipeline train --resume` continues from: the model with the
loop state (model.json's `extra`), the loss's class centres, the optimizer, the weight average.
Everything read back is checked, so a damaged or foreign file is one RunFolderError naming it;
`check_resumable` runs those checks before any image is loaded, `load_state` again when the
state is restored. Metrics are JSON lines with NaN and infinities written as null (bare `NaN`
is not JSON).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.optim.swa_utils import AveragedModel

from training.checkpoint import (
    OPTIMIZER_FILE,
    WEIGHTS_FILE,
    load_checkpoint,
    load_optimizer,
    load_torch_state,
    one_line,
    read_checkpoint_meta,
    save_checkpoint,
    save_optimizer,
)
from training.errors import RunFolderError, SettingsError
from training.models.embedding import EmbeddingModel
from training.validation import number, whole

# The loss's own parameters (ArcFace class centres) live beside the model weights.
LOSS_FILE = "loss.safetensors"
# The weights' moving average, beside the raw weights in checkpoints/last (for --resume).
EMA_FOLDER = "ema"


def save_state(
    folder: Path,
    model: EmbeddingModel,
    loss: nn.Module,
    opt: torch.optim.Optimizer,
    state: dict[str, Any],
    ema: AveragedModel | None,
) -> None:
    """Loss centres, optimizer, average, then the model with the loop state (written last)."""
    folder.mkdir(parents=True, exist_ok=True)
    if ema is not None:
        save_checkpoint(folder / EMA_FOLDER, cast(EmbeddingModel, ema.module))
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in loss.state_dict().items()},
        str(folder / LOSS_FILE),
    )
    save_optimizer(folder, opt)
    save_checkpoint(folder, model, extra=state)


def load_state(
    folder: Path,
    model: EmbeddingModel,
    loss: nn.Module,
    opt: torch.optim.Optimizer,
    ema: AveragedModel | None,
) -> dict[str, Any]:
    """Restore what save_state wrote; returns the saved loop state (epoch, step, best).

    Raises:
        RunFolderError: a file is missing or damaged, or belongs to another model or dataset
            (another number of classes for the loss's centres).
    """
    device = next(model.parameters()).device
    state = loop_state(folder)
    model.load_state_dict(load_checkpoint(folder, device=device).state_dict())
    try:
        loss.load_state_dict(load_file(str(folder / LOSS_FILE), device=str(device)))
    except (OSError, RuntimeError, SafetensorError) as e:
        raise RunFolderError(f"{folder / LOSS_FILE}: unusable loss state: {one_line(e)}") from e
    load_optimizer(folder, opt, device=device)
    if ema is not None:
        if (folder / EMA_FOLDER).exists():
            average = load_checkpoint(folder / EMA_FOLDER, device=device)
            try:
                ema.module.load_state_dict(average.state_dict())
            except RuntimeError as e:
                raise RunFolderError(f"{folder / EMA_FOLDER}: {one_line(e)}") from e
        else:  # the run was started without an average: begin it at the resumed weights
            ema.module.load_state_dict(model.state_dict())
        # a non-zero count makes the next update average rather than copy
        ema.n_averaged.fill_(max(1, int(state["step"])))
    return state


def loop_state(folder: Path) -> dict[str, Any]:
    """The loop state saved with the model (epoch, step, best_val_top1, best_epoch), checked.

    Raises:
        RunFolderError: model.json is damaged or its state is not a loop state.
    """
    state: dict[str, Any] = read_checkpoint_meta(folder)["extra"]
    try:
        whole("epoch", state.get("epoch"), low=0)
        whole("step", state.get("step"), low=0)
        if state.get("best_val_top1") is not None:
            number("best_val_top1", state["best_val_top1"], low=0, high=1)
        if state.get("best_epoch") is not None:
            whole("best_epoch", state["best_epoch"], low=1)
    except SettingsError as e:
        raise RunFolderError(f"{folder / 'model.json'}: not a resumable state: {e}") from e
    return state


def check_resumable(folder: Path) -> None:
    """Check RUN/checkpoints/last before any image is loaded: loop state, weights, optimizer.

    Only headers are read (safetensors) and the optimizer state is loaded without running
    anything (torch.load with weights_only); whether the tensors fit the model and the loss
    is known once they are built, when load_state checks again.

    Raises:
        RunFolderError: a file is missing or damaged.
    """
    loop_state(folder)
    names = [WEIGHTS_FILE, LOSS_FILE]
    if (folder / EMA_FOLDER).exists():
        read_checkpoint_meta(folder / EMA_FOLDER)
        names.append(f"{EMA_FOLDER}/{WEIGHTS_FILE}")
    for name in names:
        try:
            with safe_open(str(folder / name), framework="pt") as f:
                f.keys()
        except (OSError, SafetensorError) as e:
            raise RunFolderError(f"{folder / name}: not a safetensors file: {one_line(e)}") from e
    load_torch_state(folder / OPTIMIZER_FILE)


def json_safe(value: Any) -> Any:
    """`value` with NaN and infinities replaced by None, so json.dumps writes valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def check_finite_loss(value: float, epoch: int, log: Callable[[dict[str, Any]], None]) -> None:
    """Stop a run whose loss is no longer a number rather than save diverged weights.

    The epoch is logged first (its loss as null), so metrics.jsonl shows where it diverged.

    Raises:
        SettingsError: the epoch's mean loss is NaN or infinite.
    """
    if not math.isfinite(value):
        log({"kind": "epoch", "epoch": epoch + 1, "train_loss": value, "diverged": True})
        raise SettingsError(
            f"training diverged in epoch {epoch + 1} (loss {value}; checkpoints hold finished "
            "epochs only): lower --lr, or check --margin and --scale"
        )


@contextmanager
def metrics_log(
    path: Path, *, enabled: bool, append: bool
) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A writer of JSON lines to `path`, flushed per row (a no-op where disabled: other ranks)."""
    metrics_file = path.open("a" if append else "w") if enabled else None

    def log(row: dict[str, Any]) -> None:
        if metrics_file is not None:
            metrics_file.write(json.dumps(json_safe(row), allow_nan=False) + "\n")
            metrics_file.flush()

    try:
        yield log
    finally:
        if metrics_file is not None:
            metrics_file.close()
