"""Dataset checks and summaries: `rig dataset verify` and `rig dataset summary`.

verify proves three things: every metadata line names a file that exists with its checksum
and holds values of the format's types, no file under images/ or catalog/ is unaccounted for
(those two are dataset.validate's), and every shot of every session's plan is either on disk or
recorded as missing by a session (here, because it needs the plan). Errors make the dataset
unusable as is; warnings (a torn last line, a skipped shot) describe a dataset a rerun of
capture completes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from capture.plan import Plan, expand
from dataset.layout import DatasetFormatError, InvalidCoinId, image_name
from dataset.reader import DatasetReader, json_object, typed
from dataset.schema import SessionRecord
from dataset.validate import Problem, check_files, check_well_formed

__all__ = ["Problem", "summary", "verify"]


def verify(root: Path | str) -> list[Problem]:
    """Every problem found in a dataset folder (empty when it is complete and consistent).

    A damaged file is a problem like any other; only a metadata.jsonl that cannot be read at
    all (a folder in its place) leaves nothing else to check.
    """
    try:
        reader = DatasetReader(root)
    except OSError as exc:
        return [Problem("error", "metadata.jsonl", f"cannot read: {exc.strerror or exc}")]
    problems, present = check_files(reader)
    problems.extend(_plan_accounting(reader, present))
    return problems


def _plan_accounting(reader: DatasetReader, present: set[str]) -> list[Problem]:
    problems: list[Problem] = []
    sessions = _readable_sessions(reader)  # unreadable ones are check_files' errors
    recorded_missing: dict[str, str] = {}
    for session in sessions:
        for item in session.missing or []:
            recorded_missing[item.file_name] = item.reason or ""
    expected: dict[str, str] = {}
    for session in sessions:
        sid = str(session.session_id)
        where = f"sessions/{sid}.json"
        if session.status in ("running", "preparing", "finishing"):
            problems.append(Problem("warning", where, "session never finished (a crash?)"))
        try:
            events = expand(Plan.model_validate((session.model_extra or {}).get("plan")))
        except ValidationError:
            problems.append(Problem("error", where, "unreadable plan"))
            continue
        ext = session.image_format or "png"
        for coin in session.coins or []:
            try:
                names = [image_name(coin.coin_id, e.side, e.index, ext) for e in events]
            except InvalidCoinId as exc:
                problems.append(Problem("error", where, str(exc)))
                continue
            for name in names:
                expected.setdefault(name, sid)
    for name, sid in sorted(expected.items()):
        if name in present:
            continue
        if name in recorded_missing:
            problems.append(Problem("warning", name, f"missing: {recorded_missing[name]}"))
        else:
            problems.append(Problem("error", name, f"planned by session {sid}, not accounted for"))
    return problems


def _readable_sessions(reader: DatasetReader) -> list[SessionRecord]:
    """The session records that read as the format says, oldest first."""
    sessions = []
    for path in reader.session_paths():
        name = f"sessions/{path.name}"
        try:
            sessions.append(typed(SessionRecord, json_object(path, name), name))
        except DatasetFormatError:
            continue
    return sessions


def summary(root: Path | str) -> dict[str, Any]:
    """Counts for `rig dataset summary`: coins, images per side, light, angle and coin.

    Raises:
        DatasetFormatError: a file of the dataset is damaged (NotADataset: not a dataset).
    """
    check_well_formed(root)
    reader = DatasetReader(root)
    lines = reader.lines()
    captures = [line for line in lines if line.role == "capture"]

    def count(key: str) -> dict[str, int]:
        return dict(sorted(Counter(str(getattr(line, key)) for line in captures).items()))

    angles = Counter(f"{(line.turntable_deg or 0.0) % 360:g}" for line in captures)
    coins = {line.coin_id for line in lines} | {line.coin_id for line in reader.coin_lines()}
    return {
        "root": str(Path(root)),
        "coins": len(coins),
        "images": len(captures),
        "catalog_images": len(lines) - len(captures),
        "by_side": count("side"),
        "by_light": count("light"),
        "by_angle": dict(sorted(angles.items(), key=lambda kv: float(kv[0]))),
        "by_coin": count("coin_id"),
        "sessions": dict(Counter(str(s.status) for s in reader.session_records())),
    }
