"""The dataset's on-disk format (DESIGN.md, version 1): names, coin ids, reading, resuming.

Everything here only reads; capture.writer writes. A reader tolerates a torn last metadata
line (a crash mid-append) and lets a later line for the same file supersede an earlier one (a
reshot image), so a dataset is always read as its last consistent state.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capture.plan import ShotEvent

FORMAT = "coinrig-dataset"
VERSION = 1
_COIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SIDES = ("obverse", "reverse")


class DatasetError(Exception):
    """A problem with a dataset folder: locked, wrong format, a write that failed."""


class InvalidCoinId(DatasetError, ValueError):
    """A coin id that could escape the dataset folder or is not allowed by the format."""


def validate_coin_id(coin_id: str) -> str:
    """Return the id if it matches the format's pattern (ASCII, no separators, no `..`).

    Raises:
        InvalidCoinId: with the reason, before anything is written or moved.
    """
    # fullmatch, not match with `$`: `$` would accept a trailing newline.
    if not isinstance(coin_id, str) or not _COIN_ID.fullmatch(coin_id) or ".." in coin_id:
        raise InvalidCoinId(
            f"invalid coin id {coin_id!r}: use 1-64 ASCII letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..'"
        )
    return coin_id


def image_name(coin_id: str, side: str, shot: int, ext: str = "png") -> str:
    """The file name of a capture, relative to the dataset root."""
    validate_coin_id(coin_id)
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    return f"images/{coin_id}/{side}/{shot:04d}.{ext}"


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class JsonlContent:
    """Lines of a JSONL file: parsed records, whether the last line is torn, corrupt line numbers."""

    records: list[dict[str, Any]]
    torn: bool
    corrupt_lines: list[int]
    good_bytes: int


def read_jsonl(path: Path) -> JsonlContent:
    """Parse a JSONL file, tolerating a torn last line (a crash mid-append)."""
    if not path.exists():
        return JsonlContent([], False, [], 0)
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]
    records: list[dict[str, Any]] = []
    corrupt: list[int] = []
    offset = good = 0
    torn = bool(tail.strip())
    for number, raw in enumerate(complete, start=1):
        offset += len(raw) + 1
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError:
            if number == len(complete) and not torn:
                torn = True  # a newline landed but the line is garbage: still the last write
                continue
            corrupt.append(number)
            continue
        records.append(record)
        good = offset
    return JsonlContent(records, torn, corrupt, good)


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


class ResumeIndex:
    """Which shots a dataset already holds intact: file present and matching its sha256."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._records = {r["file_name"]: r for r in DatasetReader(root).records()}

    def record(self, file_name: str) -> dict[str, Any] | None:
        """The latest metadata record for a file."""
        return self._records.get(file_name)

    def intact(self, file_name: str) -> bool:
        """Whether the file exists and its bytes match the recorded checksum."""
        record = self._records.get(file_name)
        path = self.root / file_name
        if record is None or not path.is_file():
            return False
        return sha256_file(path) == record.get("sha256")

    def names(self) -> Iterator[str]:
        """Every recorded file name."""
        return iter(self._records)

    def todo(self, coin_id: str, events: Sequence[ShotEvent], ext: str) -> list[ShotEvent]:
        """The shots of a coin still to take: absent, torn off, or failing their checksum.

        Raises:
            DatasetError: a file exists from a plan with other settings for that shot number.
        """
        missing: list[ShotEvent] = []
        for event in events:
            name = image_name(coin_id, event.side, event.index, ext)
            record = self.record(name)
            if record is not None and settings_differ(record, event):
                raise DatasetError(
                    f"{name} exists from a different plan (light {record.get('light')!r} "
                    f"at {record.get('turntable_deg')}°, not {event.light!r} at "
                    f"{event.turntable_deg:g}°); use another --out folder"
                )
            if not self.intact(name):
                missing.append(event)
        return missing


def settings_differ(record: dict[str, Any], event: ShotEvent) -> bool:
    """Whether an existing image was taken with other settings than this plan's shot.

    Shot numbers name files, so a different plan in the same folder would otherwise pass its
    images off as this plan's. Angles are compared modulo 360 with a tolerance because the
    record holds the angle the turntable reported.
    """
    if record.get("side") != event.side or record.get("light") != event.light:
        return True
    if bool(record.get("reference", False)) != event.reference:
        return True
    try:
        delta = (float(record.get("turntable_deg", 0.0)) - event.turntable_deg) % 360.0
        if min(delta, 360.0 - delta) > 0.5:
            return True
        tilt = record.get("tilt_deg")
        if (tilt is None) != (event.tilt_deg is None):
            return True
        if tilt is not None and event.tilt_deg is not None and abs(tilt - event.tilt_deg) > 0.5:
            return True
        if event.exposure_us is not None:
            exposure = float(record.get("exposure_us", 0.0))
            return abs(exposure - event.exposure_us) > 0.01 * event.exposure_us
    except (TypeError, ValueError):
        return True
    return False
