"""JSON-lines files as the format appends them: whole lines, a torn last line possible.

The writer appends each line (`{...}` and its newline) in one write and fsyncs it, so the only
damage a crash can do is to the last line, and only in two shapes: a prefix of the line that
lacks its newline (it starts with `{`), or bytes the filesystem zero-filled because the file's
size reached the disk before its data (NUL bytes in the last line). Either is torn: a reader
ignores it and the next writer cuts it off (`good_bytes`). Nothing else is taken for a crash:
a last line of other text (another tool's, an editor's) is corrupt like any other bad line, and
never cut. A last line that is a whole JSON object but lacks its newline (what another tool or
an editor writes) is kept; the next writer only adds the newline (`unterminated`).
"""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class JsonlContent:
    """Lines of a JSONL file: parsed records, whether the last line is torn, corrupt line numbers.

    `numbers[i]` is the 1-based line number of `records[i]`.
    """

    records: list[dict[str, Any]]
    torn: bool
    corrupt_lines: list[int]
    good_bytes: int
    unterminated: bool = False
    numbers: list[int] = field(default_factory=list)


# A metadata, coins or session line is about a kilobyte; one over this is damage, not data.
MAX_LINE_BYTES = 1 << 20


def read_jsonl(path: Path) -> JsonlContent:
    """Parse a JSONL file, tolerating a torn last line (a crash mid-append).

    Raises:
        OSError: the file exists but cannot be read (a folder in its place, no permission).
    """
    if not path.exists():
        return JsonlContent([], False, [], 0)
    data = read_regular(path)
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]
    records: list[dict[str, Any]] = []
    numbers: list[int] = []
    corrupt: list[int] = []
    offset = good = 0
    tail_record = _object(tail) if tail.strip() else None
    torn = bool(tail.strip()) and tail_record is None and _torn(tail, terminated=False)
    if tail.strip() and tail_record is None and not torn:
        corrupt.append(len(lines))
    for number, raw in enumerate(complete, start=1):
        offset += len(raw) + 1
        if not raw.strip():
            continue
        record = _object(raw)
        if record is None:
            last = number == len(complete) and not tail.strip()
            if last and _torn(raw, terminated=True):
                torn = True  # the newline landed, the rest was zero-filled: still the last write
                continue
            corrupt.append(number)
            continue
        records.append(record)
        numbers.append(number)
        good = offset
    if tail_record is not None:
        records.append(tail_record)
        numbers.append(len(lines))
        good = len(data)
    return JsonlContent(
        records, torn, sorted(corrupt), good, unterminated=tail_record is not None, numbers=numbers
    )


def read_regular(path: Path) -> bytes:
    """The bytes of a regular file (following links within its folder), never a device's or a pipe's.

    Raises:
        OSError: the path is not a regular file (reading /dev/zero or a FIFO never ends), a link
            out of its folder, or cannot be read.
    """
    if path.exists() and not path.is_file():
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    if path.is_symlink() and not path.resolve().is_relative_to(path.parent.resolve()):
        # a dataset is self-contained: its own files never lead out of it
        raise OSError(errno.EXDEV, "a link out of its folder, not read", str(path))
    return path.read_bytes()


def _torn(raw: bytes, *, terminated: bool) -> bool:
    """Whether a last line that is no JSON object can be the writer's own interrupted append.

    An unterminated line is torn when it is a prefix of `{...}` or holds zero-filled bytes; a
    line whose newline landed only when the filesystem zero-filled part of it.
    """
    if b"\0" in raw:
        return True
    return not terminated and raw.lstrip(b" \t\r").startswith(b"{")


def _object(raw: bytes) -> dict[str, Any] | None:
    """The JSON object a line holds, or None when it is not one (or longer than any line is)."""
    if len(raw) > MAX_LINE_BYTES:
        return None
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None
