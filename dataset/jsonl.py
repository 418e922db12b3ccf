"""JSON-lines files as the format appends them: whole lines, a torn last line possible.

An append that a crash interrupts leaves a last line without its newline, or garbage ending in
one; either is the last write, so a reader ignores it and the next writer cuts it off
(`good_bytes`). A last line that is a whole JSON object but lacks its newline (what another tool
or an editor writes) is kept, not torn: a crash cannot leave a complete object short of its
newline and anything else, so cutting it would lose a real line; the next writer only adds the
newline (`unterminated`). A bad line before the last cannot come from a crash and is reported as
corrupt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class JsonlContent:
    """Lines of a JSONL file: parsed records, whether the last line is torn, corrupt line numbers."""

    records: list[dict[str, Any]]
    torn: bool
    corrupt_lines: list[int]
    good_bytes: int
    unterminated: bool = False


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
    tail_record = _object(tail) if tail.strip() else None
    torn = bool(tail.strip()) and tail_record is None
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
    if tail_record is not None:
        records.append(tail_record)
        good = len(data)
    return JsonlContent(records, torn, corrupt, good, unterminated=tail_record is not None)


def _object(raw: bytes) -> dict[str, Any] | None:
    """The JSON object a line holds, or None when it is not one."""
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
