"""Dataset checks and summaries: `rig dataset verify` and `rig dataset summary`.

verify proves three things: every metadata line names a file that exists with its checksum,
no file under images/ or catalog/ is unaccounted for, and every shot of every session's plan is
either on disk or recorded as missing by a session. Errors make the dataset unusable as is;
warnings (a torn last line, a skipped shot) describe a dataset a rerun of capture completes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import ValidationError

from capture.plan import Plan, expand
from capture.writer import (
    FORMAT,
    VERSION,
    DatasetReader,
    InvalidCoinId,
    image_name,
    sha256_file,
    validate_coin_id,
)

REQUIRED = [
    "file_name",
    "coin_id",
    "side",
    "role",
    "session_id",
    "shot",
    "turntable_deg",
    "tilt_deg",
    "light",
    "lights",
    "exposure_us",
    "gain_db",
    "camera",
    "width",
    "height",
    "pixel_format",
    "captured_at",
    "sha256",
]
CATALOG_REQUIRED = ("file_name", "coin_id", "side", "role", "sha256")


@dataclass(frozen=True)
class Problem:
    """One finding of verify: an error (the dataset is inconsistent) or a warning."""

    severity: Literal["error", "warning"]
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.where}: {self.message}"


def _safe_relative(name: str) -> bool:
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts and "\\" not in name


def verify(root: Path | str) -> list[Problem]:
    """Every problem found in a dataset folder (empty when it is complete and consistent)."""
    root = Path(root)
    problems: list[Problem] = []

    def error(where: str, message: str) -> None:
        problems.append(Problem("error", where, message))

    def warning(where: str, message: str) -> None:
        problems.append(Problem("warning", where, message))

    reader = DatasetReader(root)
    info = reader.info()
    if info.get("format") != FORMAT or info.get("version") != VERSION:
        error("dataset.json", f"missing or not {FORMAT} version {VERSION}")
    for line in reader.metadata.corrupt_lines:
        error("metadata.jsonl", f"line {line} is not a JSON object")
    if reader.metadata.torn:
        warning("metadata.jsonl", "torn last line (an interrupted write); the next capture cuts it")

    records = reader.records()
    known: set[str] = set()
    for record in records:
        name = str(record["file_name"])
        role = record.get("role")
        required = REQUIRED if role == "capture" else CATALOG_REQUIRED
        absent = [key for key in required if key not in record]
        if absent:
            error(name, f"metadata line lacks {absent}")
        if role not in ("capture", "catalog"):
            error(name, f"role {role!r} is neither capture nor catalog")
        if not _safe_relative(name):
            error(name, "file_name is not a safe relative path")
            continue
        try:
            validate_coin_id(str(record.get("coin_id")))
        except InvalidCoinId as exc:
            error(name, str(exc))
        known.add(name)
        path = root / name
        if not path.is_file():
            error(name, "file listed in metadata.jsonl is missing")
        elif sha256_file(path) != record.get("sha256"):
            error(name, "checksum mismatch (file changed or corrupt); a capture rerun reshoots it")

    for folder in ("images", "catalog"):
        base = root / folder
        if not base.exists():
            continue
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            name = path.relative_to(root).as_posix()
            if name in known:
                continue
            if ".tmp-" in path.name:
                warning(name, "leftover temporary file from an interrupted write")
            else:
                error(name, "orphan file: no metadata line names it")

    coins = {c.get("coin_id") for c in reader.coins()}
    for coin_id in sorted({str(r.get("coin_id")) for r in records} - coins):
        warning("coins.jsonl", f"coin {coin_id} has images but no coins.jsonl line")

    problems.extend(_plan_accounting(reader, known))
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
