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
from dataset.layout import image_name
from dataset.reader import DatasetReader
from dataset.validate import Problem, check_files

__all__ = ["Problem", "summary", "verify"]


def verify(root: Path | str) -> list[Problem]:
    """Every problem found in a dataset folder (empty when it is complete and consistent)."""
    reader = DatasetReader(root)
    problems, present = check_files(reader)
    problems.extend(_plan_accounting(reader, present))
    return problems


def _plan_accounting(reader: DatasetReader, present: set[str]) -> list[Problem]:
    problems: list[Problem] = []
    sessions = reader.sessions()
    recorded_missing: dict[str, str] = {}
    for session in sessions:
        for item in session.get("missing") or []:
            recorded_missing[str(item.get("file_name"))] = str(item.get("reason", ""))
    expected: dict[str, str] = {}
    for session in sessions:
        sid = str(session.get("session_id"))
        if session.get("status") in ("running", "preparing", "finishing"):
            problems.append(
                Problem("warning", f"sessions/{sid}.json", "session never finished (a crash?)")
            )
        try:
            events = expand(Plan.model_validate(session.get("plan")))
        except ValidationError:
            problems.append(Problem("error", f"sessions/{sid}.json", "unreadable plan"))
            continue
        ext = str(session.get("image_format", "png"))
        for coin in session.get("coins") or []:
            for event in events:
                name = image_name(str(coin["coin_id"]), event.side, event.index, ext)
                expected.setdefault(name, sid)
    for name, sid in sorted(expected.items()):
        if name in present:
            continue
        if name in recorded_missing:
            problems.append(Problem("warning", name, f"missing: {recorded_missing[name]}"))
        else:
            problems.append(Problem("error", name, f"planned by session {sid}, not accounted for"))
    return problems


def summary(root: Path | str) -> dict[str, Any]:
    """Counts for `rig dataset summary`: coins, images per side, light, angle and coin."""
    reader = DatasetReader(root)
    records = reader.records()
    captures = [r for r in records if r.get("role") == "capture"]
    sessions = reader.sessions()

    def count(key: str) -> dict[str, int]:
        return dict(sorted(Counter(str(r.get(key)) for r in captures).items()))

    angles = Counter(f"{float(r.get('turntable_deg', 0.0)) % 360:g}" for r in captures)
    return {
        "root": str(Path(root)),
        "coins": len({r.get("coin_id") for r in records} | {c["coin_id"] for c in reader.coins()}),
        "images": len(captures),
        "catalog_images": len(records) - len(captures),
        "by_side": count("side"),
        "by_light": count("light"),
        "by_angle": dict(sorted(angles.items(), key=lambda kv: float(kv[0]))),
        "by_coin": count("coin_id"),
        "sessions": dict(Counter(str(s.get("status")) for s in sessions)),
    }
