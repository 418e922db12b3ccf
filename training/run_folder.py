"""Reading a run folder back: config.json, split.json and checkpoint names, each checked.

A run folder may be copied, moved, hand-edited or damaged; nothing in it is trusted. Each
reader here returns checked values or raises RunFolderError naming the file, so `evaluate`,
`index`, `search`, `explain` and `--resume` fail in one line on a damaged run. Checkpoint names
are plain folder names: `--checkpoint ../../elsewhere` cannot lead out of RUN/checkpoints.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.checkpoint import one_line
from training.data import dataset_collections
from training.errors import RunFolderError, SettingsError
from training.split import RunSplit
from training.train_config import TrainConfig
from training.validation import check_fields

CONFIG_FILE = "config.json"
SPLIT_FILE = "split.json"
_CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def checkpoint_folder(run: Path, name: str) -> Path:
    """RUN/checkpoints/NAME for a plain folder name (`best`, `last`).

    Raises:
        SettingsError: the name is empty, has a separator or `..`, or is not ASCII.
    """
    if not _CHECKPOINT_NAME.fullmatch(name) or ".." in name:
        raise SettingsError(
            f"--checkpoint must be a folder name under RUN/checkpoints (like best), got {name!r}"
        )
    return run / "checkpoints" / name


def read_json(path: Path) -> Any:
    """A JSON file's value.

    Raises:
        RunFolderError: the file cannot be read, is not UTF-8, or is not JSON.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise RunFolderError(f"{path}: unreadable ({one_line(e)})") from e


def read_run_config(run: Path) -> tuple[TrainConfig, dict[str, Any]]:
    """An embedding run's settings, checked as `pipeline train` checks its options, and the raw JSON.

    A key missing from the raw object means the run was trained before that setting existed.

    Raises:
        RunFolderError: config.json is missing, damaged, or not an embedding run's.
    """
    path = run / CONFIG_FILE
    raw = read_json(path)
    if isinstance(raw, dict) and raw.get("task", "embedding") != "embedding":
        raise RunFolderError(f"{path}: a run of --task {raw['task']!r:.20}, not an embedding run")
    return TrainConfig.from_json(raw, where=str(path)), raw


def read_preprocess_settings(run: Path) -> dict[str, Any]:
    """config.json's values where a run records them, {} for a bare checkpoint folder.

    Only the types of the values present are checked: searching needs the preprocessing
    settings, not the datasets, so a hand-written config of those settings is enough.

    Raises:
        RunFolderError: config.json exists but is damaged or holds values of the wrong type.
    """
    path = run / CONFIG_FILE
    if not path.is_file():
        return {}
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise RunFolderError(f"{path}: not a JSON object")
    try:
        check_fields(TrainConfig, raw, str(path))
    except SettingsError as e:
        raise RunFolderError(str(e)) from e
    return raw


def read_split(run: Path) -> RunSplit:
    """split.json: the coins of the train, val and test parts (training.split.RunSplit).

    Pairs of collection and coin id, or the bare ids of a run from before collections.

    Raises:
        RunFolderError: missing, damaged, or not three lists of coins.
    """
    path = run / SPLIT_FILE
    split = RunSplit.from_json(read_json(path))
    if split is None:
        raise RunFolderError(
            f"{path}: not a split (lists of [collection, coin_id] under train, val, test)"
        )
    return split


def read_run_split(run: Path, data: Sequence[str | Path]) -> RunSplit:
    """read_split, with an old split's bare ids taken as coins of the run's datasets `data`.

    Those datasets' collections are what the ids meant; when none can be read any more, an id
    stands for that id in every collection, as such runs were always evaluated.

    Raises:
        RunFolderError: split.json is missing or damaged.
    """
    split = read_split(run)
    if not split.legacy:
        return split
    known = set().union(*(dataset_collections(Path(d)) for d in data))
    return split.in_collections(known) if known else split


def check_same_size(config: dict[str, Any], model_config: dict[str, Any], run: Path) -> None:
    """Refuse a run whose config.json and checkpoint disagree on the image size.

    Raises:
        RunFolderError: both record an image_size and they differ.
    """
    recorded = config.get("image_size")
    if recorded is not None and recorded != model_config["image_size"]:
        raise RunFolderError(
            f"{run / CONFIG_FILE}: image_size {recorded} but the checkpoint's is "
            f"{model_config['image_size']}"
        )
