"""The CPU half of indexing and searching: read a picture, find its coins, crop them.

These run in pool workers (training.parallel), so this module imports neither torch nor the
model: a worker starts in well under a second and takes no GPU memory. The parent embeds the
crops in order, so an index or a search result is the same whatever the worker count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.cache import Preprocess, crop_photo, cut_photo
from training.catalog import Entry, Source, load_entries
from training.coinfind import Circle
from training.cutout import PoseCut
from training.detect import Coin, crop, detect_coins
from training.imageio import load_photo
from training.search_errors import NoCoinFound, SearchError

# Side of the query crop kept for contact sheets: the model-size crop is often only 64 px.
PREVIEW_PX = 160


def crop_detected(image: np.ndarray, coin: Coin, settings: Preprocess) -> np.ndarray:
    """A detected coin cropped exactly as a run's training preprocessed it (margin, masking).

    A query must look like what the model learned from: the same margin around the flan and,
    for masked runs, the same flat colour outside its outline, whatever the photo's background.
    """
    return crop_photo(image, Circle(coin.x, coin.y, coin.r, coin.method), settings)


def cut_detected(image: np.ndarray, coin: Coin, settings: Preprocess) -> PoseCut:
    """crop_detected's crop (the one in `crops`) with the coin's outline profile."""
    return cut_photo(image, Circle(coin.x, coin.y, coin.r, coin.method), settings)


@dataclass(frozen=True)
class PreparedSource:
    """A catalog picture's coins and their model-size crops, or why it was skipped."""

    entries: list[Entry]
    crops: list[np.ndarray]
    outlines: list[np.ndarray]
    problem: str | None = None


def prepare_source(task: tuple[Source, Preprocess]) -> PreparedSource:
    """Read one catalog picture and crop each coin in it (a pool task)."""
    source, settings = task
    try:
        image, found = load_entries(source)
    except SearchError as e:
        return PreparedSource([], [], [], str(e))
    cuts = [cut_detected(image, e.coin, settings) for e in found]
    return PreparedSource(found, [c.crops[0] for c in cuts], [c.outline for c in cuts])


@dataclass(frozen=True)
class PreparedQuery:
    """A query photo's coins with their model-size crops and contact-sheet previews."""

    name: str
    coins: list[Coin]
    crops: list[np.ndarray]
    previews: list[np.ndarray]
    outlines: list[np.ndarray]


def prepare_image(image: np.ndarray, name: str, settings: Preprocess) -> PreparedQuery:
    """Find every coin of an RGB photo and crop it.

    Raises:
        NoCoinFound: nothing in the image looks like a coin.
    """
    coins = detect_coins(image)
    if not coins:
        raise NoCoinFound(f"{name}: no coin found in the photo")
    cuts = [cut_detected(image, c, settings) for c in coins]
    return PreparedQuery(
        name,
        coins,
        [c.crops[0] for c in cuts],
        [crop(image, c, PREVIEW_PX) for c in coins],
        [c.outline for c in cuts],
    )


def prepare_photo(task: tuple[Path, Preprocess]) -> PreparedQuery | SearchError:
    """Read one query photo and crop its coins (a pool task); the error, not raised, if not.

    Returned rather than raised so that the parent raises the first failing photo's error in
    photo order, as one worker would.
    """
    photo, settings = task
    try:
        return prepare_image(load_photo(photo), str(photo), settings)
    except SearchError as e:
        return e
