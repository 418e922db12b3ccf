"""Photo transforms a searcher meets in practice, and how often the top-1 answer survives them.

Each transform takes an RGB uint8 photo and returns another: the same coin photographed
rotated, from further away or closer, off-centre on a larger table, saved as a poor JPEG, or in
grey. `top1_stability` runs a search function over photos and each transform and reports the
share of photos whose top-1 catalog id stays the same (the issue asks for at least 90%).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]


def _backdrop(image: np.ndarray) -> tuple[int, int, int]:
    """Median colour of the photo's border, to extend the backdrop plausibly."""
    b = max(1, min(image.shape[:2]) // 40)
    frame = np.concatenate(
        [image[:b].reshape(-1, 3), image[-b:].reshape(-1, 3), image[:, :b].reshape(-1, 3)]
    )
    r, g, bl = np.median(frame, axis=0)
    return int(r), int(g), int(bl)


def rotate(image: np.ndarray, degrees: float = 37.0) -> np.ndarray:
    """The photo rotated counter-clockwise, canvas grown so nothing is cut off."""
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    nw, nh = int(h * sin + w * cos), int(h * cos + w * sin)
    matrix[0, 2] += nw / 2 - w / 2
    matrix[1, 2] += nh / 2 - h / 2
    return cv2.warpAffine(
        image, matrix, (nw, nh), borderMode=cv2.BORDER_CONSTANT, borderValue=_backdrop(image)
    )


def rescale(image: np.ndarray, factor: float = 0.6) -> np.ndarray:
    """The photo taken from further away (factor < 1) or closer (> 1)."""
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    return cv2.resize(image, None, fx=factor, fy=factor, interpolation=interpolation)


def off_centre(
    image: np.ndarray, grow: float = 2.2, where: tuple[float, float] = (0.8, 0.25)
) -> np.ndarray:
    """The photo pasted off-centre (fractions of the free space) on a larger plain canvas."""
    h, w = image.shape[:2]
    big_h, big_w = int(h * grow), int(w * grow)
    canvas = np.empty((big_h, big_w, 3), np.uint8)
    canvas[:] = _backdrop(image)
    x0, y0 = int((big_w - w) * where[0]), int((big_h - h) * where[1])
    canvas[y0 : y0 + h, x0 : x0 + w] = image
    return canvas


def jpeg(image: np.ndarray, quality: int = 30) -> np.ndarray:
    """The photo after a round trip through a low-quality JPEG."""
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else None
    if decoded is None:
        raise ValueError("JPEG round trip failed")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def grey(image: np.ndarray) -> np.ndarray:
    """The photo in grey (three equal channels, as a grey file is read)."""
    return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


TRANSFORMS: dict[str, Transform] = {
    "rotated": rotate,
    "smaller": rescale,
    "larger": lambda image: rescale(image, 1.5),
    "off-centre": off_centre,
    "jpeg": jpeg,
    "grey": grey,
}


def top1_stability(
    top1: Callable[[np.ndarray], str | None],
    photos: Sequence[np.ndarray],
    transforms: dict[str, Transform] | None = None,
) -> dict[str, float]:
    """Share of photos whose top-1 id under each transform equals the untransformed top-1.

    `top1` returns None when it finds nothing; a photo without a reference answer counts as a
    failure under every transform, so a detector that gives up cannot look stable.
    """
    transforms = TRANSFORMS if transforms is None else transforms
    if not photos:
        raise ValueError("no photos to test")
    reference = [top1(p) for p in photos]
    return {
        name: float(
            np.mean(
                [
                    ref is not None and top1(fn(p)) == ref
                    for p, ref in zip(photos, reference, strict=True)
                ]
            )
        )
        for name, fn in transforms.items()
    }
