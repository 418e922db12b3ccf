"""Contact sheets: one PNG per coin, a row per (side, light), a column per turntable angle."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from capture.writer import atomic_write
from dataset.layout import DatasetError, validate_coin_id
from dataset.outputs import check_output_file
from dataset.reader import DatasetReader
from dataset.schema import MetadataLine
from dataset.validate import check_well_formed

_LABEL_H = 18
_MARGIN = 4
# 300 MB as 8-bit BGR: far beyond any plan's rows × angles, short of what exhausts memory
_MAX_SHEET_PIXELS = 100_000_000


def _thumbnail(path: Path, size: int) -> np.ndarray:
    """A size×size BGR thumbnail of an image file; a red cross where it cannot be shown."""
    # a pipe or a device under an image's name would be read for ever: shown as unreadable
    loaded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path.is_file() else None
    image = _displayable(np.asarray(loaded)) if loaded is not None else None
    if image is None:
        thumb = np.zeros((size, size, 3), np.uint8)
        cv2.line(thumb, (0, 0), (size - 1, size - 1), (0, 0, 255), 2)  # unreadable: a red cross
        cv2.line(thumb, (0, size - 1), (size - 1, 0), (0, 0, 255), 2)
        return thumb
    height, width = image.shape[:2]
    scale = size / max(height, width)
    size_wh = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = np.asarray(cv2.resize(image, size_wh, interpolation=cv2.INTER_AREA))
    thumb = np.zeros((size, size, 3), np.uint8)
    y, x = (size - resized.shape[0]) // 2, (size - resized.shape[1]) // 2
    thumb[y : y + resized.shape[0], x : x + resized.shape[1]] = resized
    return thumb


def _displayable(image: np.ndarray) -> np.ndarray | None:
    """A decoded image as 8-bit BGR, or None for a kind a sheet does not show."""
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)  # 16-bit frames: keep the top byte for display
    if image.dtype != np.uint8 or image.size == 0:
        return None  # float or signed TIFFs: no capture is one
    if image.ndim == 3 and image.shape[2] in (1, 2):
        image = np.ascontiguousarray(image[..., 0])  # grey (and alpha)
    if image.ndim == 2:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    if image.ndim == 3 and image.shape[2] == 4:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGRA2BGR))
    return image if image.ndim == 3 and image.shape[2] == 3 else None


def _label(canvas: np.ndarray, text: str, x: int, y: int) -> None:
    cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (230, 230, 230), 1)


def contact_sheet(root: Path | str, coin_id: str, *, thumb_px: int = 128) -> np.ndarray:
    """A BGR image: rows side × light (reference views last), columns by angle.

    Raises:
        DatasetError: the dataset holds no capture of this coin.
    """
    validate_coin_id(coin_id)
    check_well_formed(root)
    reader = DatasetReader(root)
    records = [r for r in reader.lines() if r.coin_id == coin_id and r.role == "capture"]
    if not records:
        raise DatasetError(f"{root}: no captures of coin {coin_id}")

    def row_key(r: MetadataLine) -> tuple[str, str]:
        light = f"{r.light}{' (ref)' if r.reference else ''}"
        tilt = r.tilt_deg
        return (str(r.side), light if tilt is None else f"{light} tilt {tilt}")

    def angle_of(r: MetadataLine) -> float:
        return (r.turntable_deg or 0.0) % 360

    rows = sorted({row_key(r) for r in records})
    angles = sorted({angle_of(r) for r in records})
    label_w = 150
    cell = thumb_px + _MARGIN
    height, width = _LABEL_H + len(rows) * cell, label_w + len(angles) * cell
    if height * width > _MAX_SHEET_PIXELS:
        raise DatasetError(
            f"a sheet of coin {coin_id} would be {width}×{height} pixels "
            f"({len(rows)} rows, {len(angles)} angles); use a smaller --thumb"
        )
    canvas = np.full((height, width, 3), 32, dtype=np.uint8)
    for column, angle in enumerate(angles):
        _label(canvas, f"{angle:g} deg", label_w + column * cell + 4, _LABEL_H - 5)
    for row, key in enumerate(rows):
        _label(canvas, f"{key[0]} {key[1]}", 4, _LABEL_H + row * cell + thumb_px // 2)
    # For an exposure bracket several images share a cell; the first one found is shown.
    filled: set[tuple[int, int]] = set()
    for record in sorted(records, key=lambda r: r.shot or 0):
        row = rows.index(row_key(record))
        column = angles.index(angle_of(record))
        if (row, column) in filled:
            continue
        filled.add((row, column))
        y, x = _LABEL_H + row * cell, label_w + column * cell
        canvas[y : y + thumb_px, x : x + thumb_px] = _thumbnail(
            reader.path(record.file_name), thumb_px
        )
    return canvas


def write_contact_sheet(root: Path | str, coin_id: str, out: Path, *, thumb_px: int = 128) -> Path:
    """Render the sheet and write it (PNG, or the image type `out` names); returns the path.

    The path is checked before any image is read, and the file replaced atomically.

    Raises:
        OutputPathError: `out` has an unknown extension or cannot be written.
        DatasetFormatError: a file of the dataset is damaged.
        DatasetError: no captures of the coin, or the sheet could not be encoded.
    """
    check_output_file(out, "--out")
    image = contact_sheet(root, coin_id, thumb_px=thumb_px)
    ok, encoded = cv2.imencode(out.suffix.lower(), image)
    if not ok:
        raise DatasetError(f"could not encode the sheet as {out.suffix}")
    atomic_write(out, encoded.tobytes())
    return out
