"""Draw explanation maps over images (red = more discriminative) and save them with their mask."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def normalise_heat(heat: np.ndarray) -> np.ndarray:
    """Rescale a map to [0, 1] by its 1st and 99th percentiles (one hot pixel cannot wash it out)."""
    lo, hi = np.percentile(heat, [1.0, 99.0])
    if hi - lo < 1e-12:
        return np.zeros_like(heat, dtype=np.float32)
    return np.clip((heat - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def overlay(
    image: np.ndarray,
    heat: np.ndarray,
    *,
    alpha: float = 0.5,
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """RGB uint8 image blended with a jet colouring of heat (blue = low, red = high).

    `value_range` fixes what blue and red mean (a landmark mask is already 0..1: a mask that
    keeps nothing must stay blue); None stretches the map's own range.
    """
    if image.shape[:2] != heat.shape:
        heat = cv2.resize(heat, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    if value_range is None:
        unit = normalise_heat(heat)
    else:
        lo, hi = value_range
        unit = np.clip((heat - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    level = (unit * 255).astype(np.uint8)
    colour = cv2.cvtColor(cv2.applyColorMap(level, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    blended = (1 - alpha) * rgb.astype(np.float32) + alpha * colour.astype(np.float32)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG (creating the folder).

    Raises:
        OSError: OpenCV could not write the file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")


def save_explanation(
    out: Path,
    name: str,
    image: np.ndarray,
    heat: np.ndarray,
    *,
    scale: int = 4,
    value_range: tuple[float, float] | None = None,
) -> tuple[Path, Path]:
    """Write OUT/NAME.png (image | overlay, enlarged `scale`×) and OUT/NAME.npy (raw map)."""
    pair = np.concatenate([image, overlay(image, heat, value_range=value_range)], axis=1)
    if scale > 1:  # demo images are 64 px: enlarge so the regions can be seen
        pair = cv2.resize(pair, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    png, npy = out / f"{name}.png", out / f"{name}.npy"
    write_png(png, pair)
    np.save(npy, heat.astype(np.float32))
    return png, npy
