"""Helpers shared by the hostile-input and fuzz tests: refusals, JSON key paths, edits, digests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from typer.testing import Result


def json_paths(value: Any, prefix: tuple[Any, ...] = (), items: int = 8) -> list[tuple[Any, ...]]:
    """Every key path in a JSON value (the value itself is the empty path; `items` per list)."""
    paths = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            paths += json_paths(v, (*prefix, k), items)
    elif isinstance(value, list):
        for i, v in enumerate(value[:items]):
            paths += json_paths(v, (*prefix, i), items)
    return paths


def replace_path(value: Any, path: tuple[Any, ...], new: Any, delete: bool) -> Any:
    """A copy of `value` with the item at `path` set to `new` (or, with `delete`, removed)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if not rest and delete and isinstance(value, dict):
        return {k: v for k, v in value.items() if k != head}
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[head] = replace_path(value[head], rest, new, delete)
    return copy


def tree_digest(folder: Path) -> dict[str, str]:
    """Every entry under a folder: a file by its sha256, a link by its target."""
    found = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_symlink():
            found[name] = f"-> {os.readlink(path)}"
        elif path.is_file():
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[name] = "folder"
    return found


def assert_refused(result: Result, expected: str = "") -> str:
    """The command exited 2 with one `error:` line (its last), and no traceback."""
    exception = result.exception
    assert exception is None or isinstance(exception, SystemExit), repr(exception)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.output
    assert "Traceback" not in result.output
    assert expected in errors[0], errors[0]
    return errors[0]
