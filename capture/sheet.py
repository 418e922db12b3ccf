"""Contact sheets: one PNG per coin, a row per (side, light), a column per turntable angle."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from dataset.layout import DatasetError, validate_coin_id
from dataset.reader import DatasetReader

_LABEL_H = 18
_MARGIN = 4


def _thumbnail(path: Path, size: int) -> np.ndarray:
    loaded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if loaded is None:
        thumb = np.zeros((size, size, 3), np.uint8)
        cv2.line(thumb, (0, 0), (size - 1, size - 1), (0, 0, 255), 2)  # unreadable: a red cross
        cv2.line(thumb, (0, size - 1), (size - 1, 0), (0, 0, 255), 2)
        return thumb
    image = np.asarray(loaded)
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)  # 16-bit frames: keep the top byte for display
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    height, width = image.shape[:2]
    scale = size / max(height, width)
    size_wh = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = np.asarray(cv2.resize(image, size_wh, interpolation=cv2.INTER_AREA))
    thumb = np.zeros((size, size, 3), np.uint8)
    y, x = (size - resized.shape[0]) // 2, (size - resized.shape[1]) // 2
    thumb[y : y + resized.shape[0], x : x + resized.shape[1]] = resized
    return thumb


def _label(canvas: np.ndarray, text: str, x: int, y: int) -> None:
    cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (230, 230, 230), 1)


def contact_sheet(root: Path | str, coin_id: str, *, thumb_px: int = 128) -> np.ndarray:
    """A BGR image: rows side × light (reference views last), columns by angle.

    Raises:
        DatasetError: the dataset holds no capture of this coin.
    """
    validate_coin_id(coin_id)
    reader = DatasetReader(root)
    records = reader.images_of(coin_id)
    if not records:
        raise DatasetError(f"{root}: no captures of coin {coin_id}")

    def row_key(r: dict[str, object]) -> tuple[str, str]:
        light = f"{r.get('light')}{' (ref)' if r.get('reference') else ''}"
        tilt = r.get("tilt_deg")
        return (str(r.get("side")), light if tilt is None else f"{light} tilt {tilt}")

    rows = sorted({row_key(r) for r in records})
    angles = sorted({float(r["turntable_deg"]) % 360 for r in records})
    label_w = 150
    cell = thumb_px + _MARGIN
    canvas = np.full(
        (_LABEL_H + len(rows) * cell, label_w + len(angles) * cell, 3), 32, dtype=np.uint8
    )
    for column, angle in enumerate(angles):
        _label(canvas, f"{angle:g} deg", label_w + column * cell + 4, _LABEL_H - 5)
    for row, key in enumerate(rows):
        _label(canvas, f"{key[0]} {key[1]}", 4, _LABEL_H + row * cell + thumb_px // 2)
    # For an exposure bracket several images share a cell; the first one found is shown.
    filled: set[tuple[int, int]] = set()
    for record in sorted(records, key=lambda r: int(r.get("shot", 0))):
        row = rows.index(row_key(record))
        column = angles.index(float(record["turntable_deg"]) % 360)
        if (row, column) in filled:
            continue
        filled.add((row, column))
        y, x = _LABEL_H + row * cell, label_w + column * cell
        canvas[y : y + thumb_px, x : x + thumb_px] = _thumbnail(
            reader.path(str(record["file_name"])), thumb_px
        )
    return canvas


def write_contact_sheet(root: Path | str, coin_id: str, out: Path, *, thumb_px: int = 128) -> Path:
    """Render the sheet and write it as PNG; returns the path."""
    image = contact_sheet(root, coin_id, thumb_px=thumb_px)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), image):
        raise DatasetError(f"could not write {out}")
    return out
