"""Reading a dataset folder as its last consistent state.

A torn last metadata line (a crash mid-append) is ignored, and a later line for the same file
supersedes an earlier one (a reshot image), so every reader sees one record per file. Records
come back as the dicts on disk, extra fields included (`records`, `coins`, `sessions`), or typed
by `dataset.schema` (`lines`, `coin_lines`, `session_records`), which raise DatasetFormatError
naming the file and line of a value of the wrong type. A file of the dataset that is not a
regular file (a link to /dev/zero, a pipe) is never read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from dataset.jsonl import JsonlContent, read_jsonl, read_regular
from dataset.layout import (
    FORMAT,
    VERSION,
    DatasetError,
    DatasetFormatError,
    resolve,
    sha256_file,
)
from dataset.schema import (
    CoinLine,
    DatasetInfo,
    MetadataLine,
    SessionRecord,
    TurntableCalibration,
    field_errors,
)

_M = TypeVar("_M", bound=BaseModel)


class NotADataset(DatasetFormatError):
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
    path = root / "dataset.json"
    try:
        text = read_regular(path)
    except OSError as exc:
        raise NotADataset(f"not a coinrig dataset (no readable dataset.json): {root}") from exc
    try:
        header = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise NotADataset(f"{path}: not JSON (damaged or truncated)") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise NotADataset(f"not a coinrig dataset (dataset.json format is not a {FORMAT}): {root}")
    version = header.get("version")
    if type(version) is not int or version != VERSION:  # `true == 1`: the type matters too
        raise NotADataset(f"{path}: unsupported dataset version {version!r:.40}")
    try:
        return DatasetInfo.model_validate(header)
    except ValidationError as exc:
        raise NotADataset(f"{path}: {'; '.join(field_errors(exc))}") from exc


class DatasetReader:
    """Reads a dataset folder: latest record per file, coins, sessions."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.metadata = read_jsonl(self.root / "metadata.jsonl")

    def info(self) -> dict[str, Any]:
        """dataset.json as it is on disk, or {} when absent.

        Raises:
            DatasetFormatError: it cannot be read, is not JSON or not an object.
        """
        path = self.root / "dataset.json"
        if not path.exists():
            return {}
        return json_object(path, "dataset.json")

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

    def session_paths(self) -> list[Path]:
        """The session record files, oldest first (a session id starts with its UTC start)."""
        return session_paths(self.root)

    def sessions(self) -> list[dict[str, Any]]:
        """Every session record as it is on disk, oldest first.

        Raises:
            DatasetFormatError: a record cannot be read, is not JSON or not an object.
        """
        return [json_object(p, f"sessions/{p.name}") for p in self.session_paths()]

    def session_records(self) -> list[SessionRecord]:
        """Every session record, typed, oldest first.

        Raises:
            DatasetFormatError: a record is unreadable, not JSON, or holds a wrong-typed value.
        """
        records = []
        for path in self.session_paths():
            raw = json_object(path, f"sessions/{path.name}")
            records.append(typed(SessionRecord, raw, f"sessions/{path.name}"))
        return records

    def lines(self) -> list[MetadataLine]:
        """One typed metadata line per file (the latest), as records() orders them.

        Raises:
            DatasetFormatError: a line has a value of the wrong type or no coin_id.
        """
        numbers = dict(zip(map(id, self.metadata.records), self.metadata.numbers, strict=True))
        return [
            typed(MetadataLine, r, f"metadata.jsonl line {numbers[id(r)]}") for r in self.records()
        ]

    def coin_lines(self) -> list[CoinLine]:
        """The coins.jsonl lines, typed.

        Raises:
            DatasetFormatError: a line is unreadable, or has no coin_id or a wrong-typed value.
        """
        content = self.coin_content()
        return [
            typed(CoinLine, r, f"coins.jsonl line {n}")
            for r, n in zip(content.records, content.numbers, strict=True)
        ]

    def coin_content(self) -> JsonlContent:
        """coins.jsonl as lines (corrupt ones and a torn last one set apart).

        Raises:
            DatasetFormatError: the file exists but cannot be read.
        """
        path = self.root / "coins.jsonl"
        try:
            return read_jsonl(path)
        except OSError as exc:
            raise DatasetFormatError(f"{path}: cannot read: {exc.strerror or exc}") from exc

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


def session_paths(root: Path) -> list[Path]:
    """A dataset's session record files, oldest first (a session id starts with its UTC start)."""
    folder = root / "sessions"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def json_object(path: Path, name: str) -> dict[str, Any]:
    """The JSON object a file of the dataset holds.

    Raises:
        DatasetFormatError: unreadable, not JSON (damaged, truncated), or not an object.
    """
    try:
        data = read_regular(path)
    except OSError as exc:
        raise DatasetFormatError(f"{name}: cannot read: {exc.strerror or exc}") from exc
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise DatasetFormatError(f"{name}: not JSON (damaged or truncated)") from exc
    if not isinstance(value, dict):
        kind = type(value).__name__.replace("NoneType", "null")
        raise DatasetFormatError(f"{name}: holds a JSON {kind}, not an object")
    return value


def typed(model: type[_M], raw: dict[str, Any], where: str) -> _M:
    """`raw` (a line or record of the dataset) validated as `model`.

    Raises:
        DatasetFormatError: naming `where` and every field of the wrong type, in one line.
    """
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise DatasetFormatError(f"{where}: {'; '.join(field_errors(exc))}") from exc


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
        if record is None:
            return False
        try:
            path = resolve(self.root, file_name)  # never read through a link out of the folder
            return path.is_file() and sha256_file(path) == record.get("sha256")
        except (DatasetError, OSError):
            return False  # unsafe or unreadable: not intact, so a capture retakes it

    def names(self) -> Iterator[str]:
        """Every recorded file name."""
        return iter(self._records)
