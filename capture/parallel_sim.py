"""One dataset from several capture processes: per-process staging datasets, adopted in order.

`rig simulate --workers N` runs its units of work (a tray load, or part of one) in processes of
their own, each with its own emulated rig. A unit writes an ordinary dataset of its own with
the crash-safe writer (capture.writer) under DATASET/.workers/unit-NNNN/; the parent process,
the only writer of the main dataset, then *adopts* each unit's files and lines into it:

- a file is hard-linked into the main dataset under a temporary name, renamed into place and
  its folder fsynced; only then is the unit's metadata line appended to metadata.jsonl and
  fsynced: the writer's own order, so a crash leaves at most one file without its line, and a
  temporary file the next writer tidies (a file system without hard links gets a copy);
- a line the main dataset already holds intact (same file, same sha256) is skipped, so adopting
  twice (a crash mid-adoption, then the rerun) adds nothing twice;
- lines are adopted in a defined order, whatever order the processes finished in: load by load,
  the catalog images of the load's units first, then their captures, unit by unit; the order one
  process writes. A unit's session records and event logs follow its lines.

A unit's folder is only a staging area: whatever a killed run left there is adopted by the next
run before anything else (`adopt_leftovers`), and a unit that resumes coins the main dataset
already holds part of starts from hard links of those files (`seed_unit`), so its session
resumes them instead of shooting them again. Nothing here knows rigs or processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from capture.writer import DatasetLock, DatasetLocked, DatasetWriter, atomic_write
from dataset.layout import DatasetError, sha256_file
from dataset.outputs import STAGING_FOLDER
from dataset.reader import FileIndex

WORKERS_DIR = STAGING_FOLDER  # DATASET/.workers/unit-NNNN
# How long a leftover unit's lock may stay held by a live process (a worker of a run killed a
# moment ago, which its parent's death is about to end) before adoption gives up.
LOCK_WAIT_S = 15.0


def units_dir(root: Path) -> Path:
    """Where a dataset's unit staging folders live."""
    return root / WORKERS_DIR


def unit_root(root: Path, index: int) -> Path:
    """The staging dataset of unit `index` of the dataset at `root`."""
    return units_dir(root) / f"unit-{index:04d}"


def leftover_units(root: Path) -> list[Path]:
    """Staging folders an earlier run left behind, in unit order."""
    folder = units_dir(root)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("unit-"))


@dataclass(frozen=True)
class UnitLine:
    """One complete metadata line of a unit: its raw bytes and the fields adoption needs."""

    raw: bytes
    file_name: str
    sha256: str
    catalog: bool


def unit_lines(unit: Path) -> list[UnitLine]:
    """The complete, well-formed metadata lines of a unit's dataset, in file order.

    A torn last line (the unit's process was killed mid-append) has no newline and is left out;
    so is a line without a file name or checksum, which no writer produces.
    """
    try:
        data = (unit / "metadata.jsonl").read_bytes()
    except FileNotFoundError:
        return []
    lines: list[UnitLine] = []
    for raw in data.split(b"\n")[:-1]:
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        name, sha = record.get("file_name"), record.get("sha256")
        if isinstance(name, str) and isinstance(sha, str):
            lines.append(UnitLine(raw + b"\n", name, sha, record.get("role") == "catalog"))
    return lines


def count_lines(unit: Path) -> int:
    """How many lines a unit's metadata.jsonl holds so far (for progress)."""
    try:
        return (unit / "metadata.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _link_or_copy(source: Path, target: Path) -> None:
    """Put `source`'s bytes at `target` atomically: a hard link renamed into place, else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    temp.unlink(missing_ok=True)
    try:
        os.link(source, temp)
    except OSError:
        atomic_write(target, source.read_bytes())  # no hard links here (or across devices)
        return
    try:
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Adopter:
    """Adopts units' files, lines, coins and session records into an open main dataset."""

    def __init__(self, writer: DatasetWriter) -> None:
        """`writer` is the main dataset's writer, open: it holds the lock and tidied the folder."""
        self.writer = writer
        self.root = writer.root
        self.adopted = 0
        self._index = FileIndex(self.root)
        self._have: dict[str, str] = {}  # lines appended by this adopter: file name -> sha256

    def _held(self, line: UnitLine) -> bool:
        """Whether the main dataset already holds this line's file, intact, under this line."""
        if self._have.get(line.file_name) == line.sha256:
            return True
        record = self._index.record(line.file_name)
        if record is None or record.get("sha256") != line.sha256:
            return False
        return self._index.intact(line.file_name)

    def adopt_line(self, unit: Path, line: UnitLine) -> bool:
        """File into place, then its line; False when already held or the file is gone.

        Raises:
            DatasetError: writing failed (the main dataset keeps no torn line).
        """
        if self._held(line):
            return False
        source, target = unit / line.file_name, self.root / line.file_name
        try:
            if source.is_file():
                _link_or_copy(source, target)
            elif not (target.is_file() and sha256_file(target) == line.sha256):
                return False  # lost with a killed unit: the resume shoots it again
            self._append(line.raw)
        except OSError as exc:
            raise DatasetError(f"adopting {line.file_name} failed: {exc}") from exc
        self._have[line.file_name] = line.sha256
        self.adopted += 1
        return True

    def _append(self, raw: bytes) -> None:
        path = self.root / "metadata.jsonl"
        with path.open("ab") as handle:
            before = handle.tell()
            try:
                handle.write(raw)
                handle.flush()
                os.fsync(handle.fileno())
            except OSError:
                with contextlib.suppress(OSError):
                    handle.truncate(before)  # no torn line: the next adoption appends it again
                raise

    def adopt_coins(self, unit: Path) -> None:
        """The unit's coins.jsonl lines the main dataset lacks, in the unit's order."""
        try:
            text = (unit / "coins.jsonl").read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        for raw in text.split("\n")[:-1]:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and isinstance(line.get("coin_id"), str):
                info = {k: v for k, v in line.items() if k != "coin_id"}
                self.writer.add_coin(line["coin_id"], **info)

    def adopt_sessions(self, unit: Path) -> None:
        """Copy the unit's session records and event logs (atomically, each replacing its own)."""
        folder = unit / "sessions"
        if not folder.is_dir():
            return
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue  # a temporary file of an interrupted write
            try:
                atomic_write(self.root / "sessions" / path.name, path.read_bytes())
            except OSError as exc:
                raise DatasetError(f"adopting sessions/{path.name} failed: {exc}") from exc

    def adopt_in_order(self, units: Sequence[Path]) -> int:
        """Adopt units as one load: coins, catalog lines unit by unit, captures, then sessions.

        Returns the number of lines adopted.
        """
        before = self.adopted
        lines = {unit: unit_lines(unit) for unit in units}
        for unit in units:
            self.adopt_coins(unit)
        for catalog in (True, False):
            for unit in units:
                for line in lines[unit]:
                    if line.catalog is catalog:
                        self.adopt_line(unit, line)
        for unit in units:
            self.adopt_sessions(unit)
        return self.adopted - before


def remove_units(root: Path, units: Iterable[Path]) -> None:
    """Delete adopted staging folders (the main dataset keeps its own links to their files)."""
    for unit in units:
        shutil.rmtree(unit, ignore_errors=True)
    with contextlib.suppress(OSError):
        units_dir(root).rmdir()  # once no unit is left


def _wait_for_lock(unit: Path) -> DatasetLock:
    """Take a unit's lock, waiting while a dying worker of a killed run still holds it.

    Raises:
        DatasetLocked: a live process kept it for LOCK_WAIT_S.
    """
    lock = DatasetLock(unit)
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            lock.acquire()
            return lock
        except DatasetLocked:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def adopt_leftovers(writer: DatasetWriter) -> int:
    """Adopt what units of an earlier, killed run left, unit by unit, and remove them.

    Returns the number of lines adopted.

    Raises:
        DatasetLocked: a unit is still being written by a live process.
        DatasetError: adopting failed (disk full).
    """
    units = leftover_units(writer.root)
    if not units:
        return 0
    adopter = Adopter(writer)
    for unit in units:
        lock = _wait_for_lock(unit)
        try:
            adopter.adopt_in_order([unit])
        finally:
            lock.release()
    remove_units(writer.root, units)
    return adopter.adopted


def seed_unit(index: FileIndex, unit: Path, coin_ids: Collection[str]) -> int:
    """Create a unit's staging dataset holding what the main dataset has of its coins.

    `index` is the main dataset's. Files are hard links (or copies) of its intact files, with
    their lines, so the unit's session resumes those coins as a resume in the main dataset
    would. Returns the number of lines seeded.
    """
    root = index.root
    unit.mkdir(parents=True, exist_ok=True)
    for folder in ("images", "catalog", "sessions"):
        (unit / folder).mkdir(exist_ok=True)
    info = root / "dataset.json"
    if info.is_file():  # the main dataset's identity (its collection), not one of its own
        atomic_write(unit / "dataset.json", info.read_bytes())
    wanted = set(coin_ids)
    seeded: list[bytes] = []
    for name in list(index.names()):
        record = index.record(name)
        if record is None or record.get("coin_id") not in wanted or not index.intact(name):
            continue
        _link_or_copy(root / name, unit / name)
        seeded.append((json.dumps(record) + "\n").encode())
    if seeded:
        atomic_write(unit / "metadata.jsonl", b"".join(seeded))
    return len(seeded)
