"""Tray files: which coin lies in which tray slot, as `slot,coin_id` CSV rows.

What a spreadsheet program writes is accepted: a UTF-8 byte-order mark, CRLF line ends, a
header row (`slot,coin_id`), blank rows, empty trailing cells, `#` comment rows. Anything else
is refused whole, before a device moves, with one line naming the file and line: bytes that are
not UTF-8, a slot that is not plain ASCII digits (`²` and `٣` are digits to Python's
str.isdigit, not to a tray), a bad coin id, a slot or coin listed twice, and a file, line or
row count over the limits below.
"""

from __future__ import annotations

import csv
import io
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from capture.engine import CoinJob
from dataset.layout import InvalidCoinId, validate_coin_id

# The largest tray a rig config can describe has 100 x 100 slots, and a row is a slot number
# and a coin id of at most 64 characters: these limits are far above any valid tray file.
MAX_TRAY_BYTES = 1 << 20
MAX_LINE_CHARS = 1000
MAX_ROWS = 10_000
# Slot numbers are below 10,000 (100 x 100); six digits leaves room and keeps int() cheap.
_SLOT = re.compile(r"[0-9]{1,6}")
MAX_COIN_ID_CHARS = 64  # the dataset format's own limit (dataset.layout)


class TrayError(Exception):
    """A tray file that cannot be used: unreadable, malformed, or over a limit (one line)."""


@dataclass(frozen=True)
class _Row:
    line: int
    slot: int
    coin_id: str


def _read_text(path: Path) -> str:
    """The file's text: a regular file within MAX_TRAY_BYTES, UTF-8 with or without a BOM."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise TrayError(f"{path}: cannot read tray file: not a regular file")
        if info.st_size > MAX_TRAY_BYTES:
            raise TrayError(_too_big(path, info.st_size))
        with path.open("rb") as f:
            data = f.read(MAX_TRAY_BYTES + 1)
    except OSError as exc:
        raise TrayError(f"{path}: cannot read tray file: {exc.strerror or exc}") from exc
    if len(data) > MAX_TRAY_BYTES:  # it grew since stat
        raise TrayError(_too_big(path, len(data)))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TrayError(
            f"{path}: tray file is not UTF-8 (byte {exc.start}); save it as UTF-8 CSV"
        ) from exc


def _too_big(path: Path, size: int) -> str:
    return (
        f"{path}: tray file of {size:,} bytes is over the limit of {MAX_TRAY_BYTES:,} bytes "
        f"(a full 100 x 100 tray is far smaller)"
    )


def _parse_row(path: Path, number: int, row: list[str], first: bool) -> _Row | None:
    """One `slot,coin_id` row; None for a blank, comment or header row (before any coin)."""
    cells = [cell.strip() for cell in row]
    while cells and not cells[-1]:
        cells.pop()  # spreadsheets pad rows with empty cells up to their widest row
    if not cells or cells[0].startswith("#"):
        return None
    if first and cells[0].lower() == "slot":
        return None
    if len(cells) != 2:
        shown = ",".join(cells)[:80]
        raise TrayError(f"{path}:{number}: expected `slot,coin_id`, got {shown!r}")
    slot, coin = cells
    if not _SLOT.fullmatch(slot):
        raise TrayError(
            f"{path}:{number}: expected `slot,coin_id` with the slot in ASCII digits 0-9, "
            f"got slot {slot[:20]!r}"
        )
    if len(coin) > MAX_COIN_ID_CHARS:
        raise TrayError(
            f"{path}:{number}: coin id of {len(coin):,} characters (at most {MAX_COIN_ID_CHARS})"
        )
    try:
        coin_id = validate_coin_id(coin)
    except InvalidCoinId as exc:
        raise TrayError(f"{path}:{number}: {exc}") from None
    return _Row(number, int(slot), coin_id)


def _rows(path: Path, text: str) -> list[_Row]:
    # Lines as csv counts them (\n, \r\n or \r), so the numbers agree with its line_num.
    for number, line in enumerate(io.StringIO(text, newline=""), start=1):
        if len(line.rstrip("\r\n")) > MAX_LINE_CHARS:
            raise TrayError(f"{path}:{number}: line longer than {MAX_LINE_CHARS:,} characters")
    rows: list[_Row] = []
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        for row in reader:
            parsed = _parse_row(path, reader.line_num, row, first=not rows)
            if parsed is None:
                continue
            rows.append(parsed)
            if len(rows) > MAX_ROWS:
                raise TrayError(
                    f"{path}:{reader.line_num}: more than {MAX_ROWS:,} coins (a tray has at "
                    "most 100 x 100 slots)"
                )
    except csv.Error as exc:  # a NUL byte, an unterminated quote
        raise TrayError(f"{path}:{reader.line_num}: not readable CSV: {exc}") from None
    return rows


def read_tray(path: Path) -> list[CoinJob]:
    """The coins of a tray CSV of `slot,coin_id` rows, in file order.

    Raises:
        TrayError: unreadable or not UTF-8, a bad row, a slot or coin listed twice, no coins,
            or over a limit (one line naming the file and line).
    """
    rows = _rows(path, _read_text(path))
    if not rows:
        raise TrayError(f"{path}: no coins listed (rows are `slot,coin_id`)")
    slots: dict[int, int] = {}
    coins: dict[str, int] = {}
    for row in rows:
        first = slots.setdefault(row.slot, row.line)
        if first != row.line:
            raise TrayError(
                f"{path}:{row.line}: a slot is listed twice: slot {row.slot} (first on line "
                f"{first})"
            )
        first = coins.setdefault(row.coin_id, row.line)
        if first != row.line:
            raise TrayError(
                f"{path}:{row.line}: a coin is listed twice: {row.coin_id} (first on line {first})"
            )
    return [CoinJob(row.coin_id, row.slot) for row in rows]
