"""Checking a dataset folder against the format: the file-level half of `rig dataset verify`.

Every metadata line must name a file that exists with its checksum, carry its role's keys with
values of the right type, and every file under images/ or catalog/ must have a line. A bad
value is a Problem, never an exception: verify reports everything it finds in one run. Whether
each session's plan is complete needs the plan, so capture.checks adds that half.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dataset.layout import (
    FORMAT,
    ROLES,
    VERSION,
    InvalidCoinId,
    safe_relative,
    sha256_file,
    validate_coin_id,
)
from dataset.reader import DatasetReader
from dataset.schema import CAPTURE_KEYS, CATALOG_KEYS, type_errors


@dataclass(frozen=True)
class Problem:
    """One finding of verify: an error (the dataset is inconsistent) or a warning."""

    severity: Literal["error", "warning"]
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.where}: {self.message}"


def check_files(reader: DatasetReader) -> tuple[list[Problem], set[str]]:
    """Problems of dataset.json, metadata lines, image files and coins; the files accounted for."""
    problems: list[Problem] = []

    def error(where: str, message: str) -> None:
        problems.append(Problem("error", where, message))

    def warning(where: str, message: str) -> None:
        problems.append(Problem("warning", where, message))

    info = reader.info()
    if info.get("format") != FORMAT or info.get("version") != VERSION:
        error("dataset.json", f"missing or not {FORMAT} version {VERSION}")
    for line in reader.metadata.corrupt_lines:
        error("metadata.jsonl", f"line {line} is not a JSON object")
    if reader.metadata.torn:
        warning("metadata.jsonl", "torn last line (an interrupted write); the next capture cuts it")
    if nameless := reader.nameless():
        error("metadata.jsonl", f"{nameless} line(s) without a file_name text")

    records = reader.records()
    known: set[str] = set()
    for record in records:
        name = str(record["file_name"])
        if _check_line(reader.root, record, error):
            known.add(name)
    problems.extend(_unaccounted(reader.root, known))
    coins = {c.get("coin_id") for c in reader.coins()}
    for coin_id in sorted({str(r.get("coin_id")) for r in records} - coins):
        warning("coins.jsonl", f"coin {coin_id} has images but no coins.jsonl line")
    return problems, known


def _check_line(root: Path, record: dict[str, Any], error: Callable[[str, str], None]) -> bool:
    """Report what is wrong with one metadata line and its file; False if its name is unsafe."""
    name = str(record["file_name"])
    role = record.get("role")
    required = CAPTURE_KEYS if role == "capture" else CATALOG_KEYS
    absent = [key for key in required if key not in record]
    if absent:
        error(name, f"metadata line lacks {absent}")
    wrong = type_errors(record)
    if wrong:
        error(name, f"metadata line has values of the wrong type: {'; '.join(wrong)}")
    if role not in ROLES:
        error(name, f"role {role!r} is neither capture nor catalog")
    if not safe_relative(name):
        error(name, "file_name is not a safe relative path")
        return False
    try:
        validate_coin_id(str(record.get("coin_id")))
    except InvalidCoinId as exc:
        error(name, str(exc))
    path = root / name
    if not path.is_file():
        error(name, "file listed in metadata.jsonl is missing")
    elif sha256_file(path) != record.get("sha256"):
        error(name, "checksum mismatch (file changed or corrupt); a capture rerun reshoots it")
    return True


def _unaccounted(root: Path, known: set[str]) -> list[Problem]:
    """Files of images/ and catalog/ no metadata line names: orphans and leftover temporaries."""
    problems: list[Problem] = []
    for folder in ("images", "catalog"):
        base = root / folder
        if not base.exists():
            continue
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            name = path.relative_to(root).as_posix()
            if name in known:
                continue
            if ".tmp-" in path.name:
                problems.append(
                    Problem("warning", name, "leftover temporary file from an interrupted write")
                )
            else:
                problems.append(Problem("error", name, "orphan file: no metadata line names it"))
    return problems
