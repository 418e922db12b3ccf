"""Checking a dataset folder against the format: the file-level half of `rig dataset verify`.

Two depths. `format_problems` finds what keeps a file from being read as the format says:
dataset.json, a metadata or coins line, or a session record that is unreadable, not JSON, or
holds a value of the wrong type. Every command that reads or appends to a dataset refuses one
with such a problem (`check_well_formed`, one line naming the first); `rig dataset verify` lists
them all. A torn last line, what the writer's own interrupted append leaves, is no such problem.

`check_files` adds the content: every metadata line must name a file that exists with its
checksum and carry its role's keys, and every file under images/ or catalog/ must have a line.
A bad value is a Problem, never an exception: verify reports everything it finds in one run.
Whether each session's plan is complete needs the plan, so capture.checks adds that half.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dataset.jsonl import JsonlContent, read_jsonl
from dataset.layout import (
    ROLES,
    DatasetError,
    DatasetFormatError,
    InvalidCoinId,
    resolve,
    safe_relative,
    sha256_file,
    validate_coin_id,
)
from dataset.reader import (
    DatasetReader,
    NotADataset,
    json_object,
    read_info,
    session_paths,
    typed,
)
from dataset.schema import CAPTURE_KEYS, CATALOG_KEYS, CoinLine, SessionRecord, type_errors

VERIFY_HINT = "`rig dataset verify` lists every problem"


@dataclass(frozen=True)
class Problem:
    """One finding of verify: an error (the dataset is inconsistent) or a warning."""

    severity: Literal["error", "warning"]
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.where}: {self.message}"


def check_well_formed(root: Path | str) -> None:
    """Refuse a dataset folder any of whose files cannot be read as the format says.

    Raises:
        NotADataset: no readable dataset.json of this format and version.
        DatasetFormatError: names the first damaged file or line, in one line.
    """
    root = Path(root)
    read_info(root)
    problems = [p for p in format_problems(root) if p.severity == "error"]
    if problems:
        first = problems[0]
        more = f"; and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise DatasetFormatError(
            f"{root}: damaged dataset: {first.where}: {first.message}{more} ({VERIFY_HINT})"
        )


def format_problems(root: Path | str) -> list[Problem]:
    """What keeps the folder's files from being read as the format says (a torn line aside)."""
    root = Path(root)
    problems: list[Problem] = []
    try:
        read_info(root)
    except NotADataset as exc:
        problems.append(Problem("error", "dataset.json", str(exc)))
    try:
        metadata = read_jsonl(root / "metadata.jsonl")
    except OSError as exc:
        problems.append(_unreadable("metadata.jsonl", exc))
    else:
        problems.extend(metadata_problems(metadata))
    problems.extend(_coin_problems(root))
    for path in session_paths(root):
        name = f"sessions/{path.name}"
        try:
            typed(SessionRecord, json_object(path, name), name)
        except DatasetFormatError as exc:
            problems.append(Problem("error", name, str(exc).removeprefix(f"{name}: ")))
    return problems


def metadata_problems(content: JsonlContent) -> list[Problem]:
    """Corrupt metadata lines, lines without a file_name, lines with wrong-typed values."""
    problems = [
        Problem("error", "metadata.jsonl", f"line {n} is not a JSON object")
        for n in content.corrupt_lines
    ]
    nameless = 0
    for record, number in zip(content.records, content.numbers, strict=True):
        name = record.get("file_name")
        if not isinstance(name, str):
            nameless += 1  # reported once for all: records() cannot place them
            continue
        wrong = type_errors(record)
        if "coin_id" not in record:
            wrong.insert(0, "coin_id: missing")
        if wrong:
            message = f"metadata.jsonl line {number} has values of the wrong type: "
            problems.append(Problem("error", name, message + "; ".join(wrong)))
    if nameless:
        problems.append(
            Problem("error", "metadata.jsonl", f"{nameless} line(s) without a file_name text")
        )
    return problems


def _coin_problems(root: Path) -> list[Problem]:
    try:
        content = read_jsonl(root / "coins.jsonl")
    except OSError as exc:
        return [_unreadable("coins.jsonl", exc)]
    problems = [
        Problem("error", "coins.jsonl", f"line {n} is not a JSON object")
        for n in content.corrupt_lines
    ]
    for record, number in zip(content.records, content.numbers, strict=True):
        try:
            typed(CoinLine, record, f"line {number}")
        except DatasetFormatError as exc:
            problems.append(Problem("error", "coins.jsonl", str(exc)))
    return problems


def _unreadable(name: str, exc: OSError) -> Problem:
    return Problem("error", name, f"cannot read: {exc.strerror or exc}")


def check_files(reader: DatasetReader) -> tuple[list[Problem], set[str]]:
    """Problems of the dataset's files, metadata lines, image files and coins; files accounted for.

    The format problems (format_problems) come first, then what the lines say of the files.
    """
    problems = format_problems(reader.root)

    def error(where: str, message: str) -> None:
        problems.append(Problem("error", where, message))

    def warning(where: str, message: str) -> None:
        problems.append(Problem("warning", where, message))

    if reader.metadata.torn:
        warning("metadata.jsonl", "torn last line (an interrupted write); the next capture cuts it")
    try:
        coins_content = reader.coin_content()
    except DatasetFormatError:  # unreadable: format_problems said so
        coins_content = JsonlContent([], False, [], 0)
    if coins_content.torn:
        warning("coins.jsonl", "torn last line (an interrupted write); the next capture cuts it")

    records = reader.records()
    known: set[str] = set()
    for record in records:
        name = str(record["file_name"])
        if _check_line(reader.root, record, error):
            known.add(name)
    problems.extend(_unaccounted(reader.root, known))
    coins = {str(c.get("coin_id")) for c in coins_content.records}
    for coin_id in sorted({str(r.get("coin_id")) for r in records} - coins):
        warning("coins.jsonl", f"coin {coin_id} has images but no coins.jsonl line")
    return problems, known


def _check_line(root: Path, record: dict[str, Any], error: Callable[[str, str], None]) -> bool:
    """Report what is wrong with one metadata line and its file; False if its name is unsafe.

    Wrong-typed values are metadata_problems'; a missing coin_id too (every role needs one).
    """
    name = str(record["file_name"])
    role = record.get("role")
    required = CAPTURE_KEYS if role == "capture" else CATALOG_KEYS
    absent = [key for key in required if key not in record and key != "coin_id"]
    if absent:
        error(name, f"metadata line lacks {absent}")
    if role not in ROLES:
        error(name, f"role {role!r} is neither capture nor catalog")
    if not safe_relative(name):
        error(name, "file_name is not a safe relative path")
        return False
    try:
        validate_coin_id(str(record.get("coin_id")))
    except InvalidCoinId as exc:
        error(name, str(exc))
    try:
        path = resolve(root, name)  # a link out of the folder (to /dev/zero) is never read
    except DatasetError as exc:
        error(name, str(exc))
        return True  # a line names it: no orphan besides
    try:
        if not path.is_file():
            error(name, "file listed in metadata.jsonl is missing")
        elif sha256_file(path) != record.get("sha256"):
            error(name, "checksum mismatch (file changed or corrupt); a capture rerun reshoots it")
    except OSError as exc:
        error(name, f"cannot read: {exc.strerror or exc}")
    return True


def _unaccounted(root: Path, known: set[str]) -> list[Problem]:
    """Files of images/ and catalog/ no metadata line names: orphans and leftover temporaries."""
    problems: list[Problem] = []
    for folder in ("images", "catalog"):
        base = root / folder
        if not base.is_dir():
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
