"""Reading a dataset folder as its last consistent state.

A torn last metadata line (a crash mid-append) is ignored, and a later line for the same file
supersedes an earlier one (a reshot image), so every reader sees one record per file. Records
come back as the dicts on disk, extra fields included; `dataset.schema` types them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dataset.jsonl import read_jsonl
from dataset.layout import FORMAT, VERSION, DatasetError, resolve, safe_relative, sha256_file
from dataset.schema import DatasetInfo, SessionRecord, TurntableCalibration


class NotADataset(DatasetError):
    """The folder has no readable dataset.json of this format and version."""


def default_collection(root: Path, created: str | None) -> str:
    """The collection name of a dataset that records none: its folder's name and creation time.

    Stable while the folder keeps its name (the writer records this name in dataset.json when
    it creates a folder, so only datasets from before that depend on the folder's name).
    """
    name = Path(root).resolve().name or "dataset"
    return f"{name}@{created}" if created else name


def collection_of(root: Path, info: DatasetInfo) -> str:
    """The collection a dataset's coins belong to unless their coins.jsonl line names another."""
    return info.collection or default_collection(root, info.created)


def read_info(root: Path) -> DatasetInfo:
    """The folder's dataset.json, checked to be this format, version 1.

    Raises:
        NotADataset: no readable dataset.json, another format, or another version.
    """
    try:
        header = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NotADataset(f"not a coinrig dataset (no readable dataset.json): {root}") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise NotADataset(f"not a coinrig dataset (dataset.json format is not {FORMAT!r}): {root}")
    if header.get("version") != VERSION:
        raise NotADataset(f"unsupported dataset version {header.get('version')!r} in {root}")
    try:
        return DatasetInfo.model_validate(header)
    except ValidationError as exc:
        raise NotADataset(f"{root}/dataset.json: {exc}") from exc


class DatasetReader:
    """Reads a dataset folder: latest record per file, coins, sessions."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.metadata = read_jsonl(self.root / "metadata.jsonl")

    def info(self) -> dict[str, Any]:
        """dataset.json, or {} when absent."""
        path = self.root / "dataset.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def records(self) -> list[dict[str, Any]]:
        """One record per file: a reshot file's later line supersedes the earlier one."""
        latest: dict[str, dict[str, Any]] = {}
        for record in self.metadata.records:
            name = record.get("file_name")
            if isinstance(name, str):
                latest.pop(name, None)
                latest[name] = record
        return list(latest.values())

    def nameless(self) -> int:
        """How many metadata lines have no file_name text (records() cannot place them)."""
        return sum(not isinstance(r.get("file_name"), str) for r in self.metadata.records)

    def coins(self) -> list[dict[str, Any]]:
        """coins.jsonl records."""
        return read_jsonl(self.root / "coins.jsonl").records

    def sessions(self) -> list[dict[str, Any]]:
        """Every session record, oldest first."""
        folder = self.root / "sessions"
        paths = sorted(folder.glob("*.json")) if folder.exists() else []
        return [json.loads(p.read_text(encoding="utf-8")) for p in paths]

    def images_of(self, coin_id: str, role: str = "capture") -> list[dict[str, Any]]:
        """A coin's records of one role."""
        return [r for r in self.records() if r.get("coin_id") == coin_id and r.get("role") == role]

    def path(self, file_name: str) -> Path:
        """Where a metadata file_name lies (never outside the root).

        Raises:
            DatasetError: the name would leave the dataset folder.
        """
        return resolve(self.root, file_name)

    def turntables(self) -> dict[str, TurntableCalibration]:
        """Per session id, the turntable calibration its session record names.

        Session records written before calibration existed, or unreadable ones, give nothing:
        their images are still usable, a reader just falls back to finding the coin and to
        the default sense of rotation.
        """
        found: dict[str, TurntableCalibration] = {}
        for path in sorted((self.root / "sessions").glob("*.json")):
            try:
                record = SessionRecord.model_validate_json(path.read_bytes())
            except (OSError, ValidationError):
                continue
            turntable = record.calibration.turntable if record.calibration else None
            if turntable is not None:
                found[record.session_id or path.stem] = turntable
        return found


class FileIndex:
    """Which files a dataset already holds intact: present and matching their sha256."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._records = {r["file_name"]: r for r in DatasetReader(root).records()}

    def record(self, file_name: str) -> dict[str, Any] | None:
        """The latest metadata record for a file."""
        return self._records.get(file_name)

    def intact(self, file_name: str) -> bool:
        """Whether the file exists and its bytes match the recorded checksum."""
        record = self._records.get(file_name)
        if record is None or not safe_relative(file_name):
            return False
        path = self.root / file_name
        if not path.is_file():
            return False
        return sha256_file(path) == record.get("sha256")

    def names(self) -> Iterator[str]:
        """Every recorded file name."""
        return iter(self._records)
