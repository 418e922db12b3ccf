"""A contact sheet of search results: each query coin beside its ranked catalog candidates."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from training.detect import Coin, crop
from training.imageio import load_rgb
from training.search import QueryResult
from training.search_errors import SearchError

CELL_PX = 160
TEXT_PX = 44
LABEL_COLOURS = {
    "match": (20, 140, 40),
    "possible": (220, 130, 0),
    "no match": (120, 120, 120),
    "n/a": (60, 60, 160),
}


def _candidate_crop(item: dict[str, object], cache: dict[str, np.ndarray]) -> np.ndarray:
    """The catalog coin's crop, re-read from its source file (grey square when it is gone)."""
    path = str(item.get("path", ""))
    if path not in cache:
        try:
            cache[path] = load_rgb(Path(path))
        except SearchError:
            cache[path] = np.full((CELL_PX, CELL_PX, 3), 200, np.uint8)
    image = cache[path]
    circle = item.get("circle")
    if not isinstance(circle, list) or len(circle) != 3:
        return np.asarray(Image.fromarray(image).resize((CELL_PX, CELL_PX)))
    x, y, r = (float(v) for v in circle)
    return crop(image, Coin(x, y, r, (0, 0, 0, 0), "index"), CELL_PX)


def _cell(pixels: np.ndarray, lines: Sequence[str], colour: tuple[int, int, int]) -> Image.Image:
    cell = Image.new("RGB", (CELL_PX, CELL_PX + TEXT_PX), "white")
    cell.paste(Image.fromarray(pixels).resize((CELL_PX, CELL_PX)), (0, 0))
    draw = ImageDraw.Draw(cell)
    font = ImageFont.load_default()
    for n, line in enumerate(lines):
        draw.text((4, CELL_PX + 2 + 14 * n), line[:26], fill=colour, font=font)
    draw.rectangle((0, 0, CELL_PX - 1, CELL_PX - 1), outline=colour, width=3)
    return cell


def write_contact_sheet(results: Sequence[QueryResult], path: Path, top: int) -> Path:
    """One row per query coin: its crop, then the top candidates with score and label."""
    if not results:
        raise SearchError("nothing to draw: no query coins")
    cache: dict[str, np.ndarray] = {}
    columns = 1 + top
    sheet = Image.new("RGB", (columns * (CELL_PX + 8), len(results) * (CELL_PX + TEXT_PX + 8)))
    sheet.paste("white", (0, 0, *sheet.size))
    for row, result in enumerate(results):
        y = row * (CELL_PX + TEXT_PX + 8)
        query = _cell(
            result.crop,
            [f"{Path(result.photo).name} #{result.coin_number}", result.conclusion.split(":")[0]],
            (0, 0, 0),
        )
        sheet.paste(query, (0, y))
        for c in result.candidates[:top]:
            colour = LABEL_COLOURS.get(c.label, (0, 0, 0))
            lines = [f"{c.rank}. {c.score:.3f} {c.label}", str(c.item.get("id", ""))]
            sheet.paste(
                _cell(_candidate_crop(c.item, cache), lines, colour), (c.rank * (CELL_PX + 8), y)
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
