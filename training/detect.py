"""Find every coin in a photo: circles, boxes and tight square crops.

Two routes, chosen by what the photo looks like:

- Studio and catalog images (one coin, or an obverse/reverse plate, on a plain backdrop): the
  border is one colour, so the coin is what differs from it. This fast path also handles ancient
  flans that are far from round, which a circle detector would miss or cut.
- Everything else (phone photos of many coins on paper, a towel, a glossy table with glare):
  OpenCV's HOUGH_GRADIENT_ALT proposes circles from edge orientation, which separates touching
  coins that any foreground mask would merge. Proposals are then cleaned up with what is true of
  coins lying on a table: they do not lie inside each other (inner rings of bimetallic coins and
  round die details go), they do not overlap much, they are not a blown-out glare spot, and a
  coin mostly outside the frame is not a coin the user can search with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from training.coinfind import shadow_weighted_distance
from training.search_errors import NoCoinFound

# Circles are looked for on a copy whose longer side is this long: coins in phone photos of a
# heap are then 20-50 px in radius, plenty for Hough, and the search takes ~0.1 s.
WORK_SIDE_PX = 800
# Coins smaller than this (radius, working pixels) are looked for again at a higher resolution
# (a heap photographed from far away): Hough's edges get unreliable below ~15 px.
SMALL_COIN_PX = 16
MAX_WORK_SIDE_PX = 2400
# Smallest and largest coin radius, as fractions of the shorter image side.
MIN_RADIUS_FRACTION = 0.02
MAX_RADIUS_FRACTION = 0.5
# HOUGH_GRADIENT_ALT's "perfectness" (0..1): 0.8 rejects wood grain and towel weave.
HOUGH_PERFECTNESS = 0.8
HOUGH_CANNY_HIGH = 150
# Two circles overlapping more than this (centre distance / sum of radii) are one coin.
MAX_OVERLAP = 0.5
# A coin must have at least this share of its disk inside the frame.
MIN_VISIBLE_FRACTION = 0.7
# A disk whose pixels are mostly blown out (all channels above GLARE_LEVEL) is a reflection.
GLARE_LEVEL = 235
MAX_GLARE_FRACTION = 0.6
# The plain-backdrop fast path: border colour spread (std, 0-255 units) below this is "plain".
PLAIN_BORDER_STD = 14.0
# A blob must differ from the backdrop by this much (mean colour distance, 0-255 units), or it
# is a fold in the paper or a shadow that Otsu split off from an otherwise empty picture.
MIN_BLOB_CONTRAST = 30.0
# Least radius, relative to the plain blob's, of a blob found with shadows discounted.
MIN_UNSHADOWED_RADIUS = 0.75
# ... and how far it may poke out of the plain blob's circle (irregular flans, blur).
UNSHADOWED_SLACK = 1.06
# Share of a plain-backdrop blob that separate Hough circles must cover to make it a heap.
GROUP_COVER = 0.3
# A blob filling more of its enclosing circle than this is one coin, not a heap: one worn flan
# fills 0.85-1, while touching coins leave gaps (two fill 0.5, a packed heap of seven ~0.75).
SINGLE_COIN_FILL = 0.82
# Hull circularity (4πA/P²): a worn polygonal flan is above 0.9, a square (a pasted photo,
# a label) 0.785.
MIN_CIRCULARITY = 0.85
MIN_AREA_FRACTION = 0.003
# A picture at least this much wider than tall, showing two coins, is an obverse/reverse plate.
PLATE_ASPECT = 1.5
# ... and each coin's radius is at least this fraction of a half's shorter side.
MIN_PLATE_COIN_FRACTION = 0.25
CROP_MARGIN = 0.04


@dataclass(frozen=True)
class Coin:
    """One coin found in a photo, in full-resolution pixels; `box` is x0, y0, x1, y1."""

    x: float
    y: float
    r: float
    box: tuple[int, int, int, int]
    method: str

    @property
    def side(self) -> float:
        """Side of the square crop around the coin, margin included."""
        return 2 * self.r * (1 + CROP_MARGIN)


def _colour(image: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 RGB, whatever came in."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return np.ascontiguousarray(image[..., :3])


def _downscale(image: np.ndarray, side: int = WORK_SIDE_PX) -> tuple[np.ndarray, float]:
    """A copy whose longer side is at most `side`, and the factor back to full size."""
    scale = min(1.0, side / max(image.shape[:2]))
    if scale == 1.0:
        return image, 1.0
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return small, 1.0 / scale


def _border(image: np.ndarray) -> np.ndarray:
    """Pixels of a thin frame around the image, as N×3."""
    b = max(1, min(image.shape[:2]) // 40)
    parts = [image[:b], image[-b:], image[:, :b], image[:, -b:]]
    return np.concatenate([p.reshape(-1, 3) for p in parts]).astype(np.float32)


def _coin(x: float, y: float, r: float, shape: tuple[int, ...], method: str) -> Coin:
    h, w = shape[:2]
    box = (
        max(0, int(x - r)),
        max(0, int(y - r)),
        min(w, math.ceil(x + r)),
        min(h, math.ceil(y + r)),
    )
    return Coin(float(x), float(y), float(r), box, method)


# -- plain-backdrop fast path ---------------------------------------------------------------


Blob = tuple[float, float, float, float]


def _plain_blobs(small: np.ndarray) -> list[Blob] | None:
    """Round blobs (x, y, r, area) standing out from a plain border, or None if not plain.

    Blobs are found twice: by plain colour distance, and with shadows discounted. The second
    wins only where it finds the same coins, each inside the first's circle and not much
    smaller (a shadow inflates a circle by up to ~25 %): a pale coin on card of its own hue
    would otherwise lose its darker parts as "shadow".
    """
    border = _border(small)
    if float(border.std(axis=0).max()) > PLAIN_BORDER_STD:
        return None
    blurred = cv2.GaussianBlur(small, (5, 5), 0).astype(np.float32)
    backdrop = np.median(border, axis=0)
    full = _blobs(np.linalg.norm(blurred - backdrop, axis=2))
    unshadowed = _blobs(shadow_weighted_distance(blurred, backdrop))
    if full is None or unshadowed is None or len(full) != len(unshadowed):
        return full
    pairs = zip(sorted(full), sorted(unshadowed), strict=True)
    inside = all(
        math.dist(f[:2], u[:2]) + u[2] <= UNSHADOWED_SLACK * f[2]
        and u[2] >= MIN_UNSHADOWED_RADIUS * f[2]
        for f, u in pairs
    )
    return unshadowed if inside else full


def _blobs(distance: np.ndarray) -> list[Blob] | None:
    """Round blobs above Otsu's threshold of a distance-from-backdrop map (None: not round)."""
    span = float(distance.max()) or 1.0
    _, mask = cv2.threshold(
        (distance * (255 / span)).astype(np.uint8), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU
    )
    # Closing bridges dark die details inside a bright coin; opening removes speckle.
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel, iterations=2)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    min_area = MIN_AREA_FRACTION * mask.size
    blobs = []
    for contour in contours:
        area = cv2.contourArea(contour)
        if area < min_area:
            continue
        inside = np.zeros(mask.shape, np.uint8)
        cv2.drawContours(inside, [contour], -1, 255, -1)
        if float(distance[inside > 0].mean()) < MIN_BLOB_CONTRAST:
            continue
        hull = cv2.convexHull(contour)
        perimeter = cv2.arcLength(hull, True)
        # The hull ignores nicks in a flan's edge that would make a coin look ragged.
        if perimeter == 0 or 4 * math.pi * cv2.contourArea(hull) / perimeter**2 < MIN_CIRCULARITY:
            return None  # something non-round (a hand, a label): not a studio shot
        (x, y), r = cv2.minEnclosingCircle(contour)
        blobs.append((x, y, r, area))
    return _drop_nested_blobs(blobs)


def _drop_nested_blobs(blobs: list[Blob]) -> list[Blob]:
    """Blobs whose centre lies inside a bigger blob's circle are a part Otsu split off a coin."""
    by_size = sorted(blobs, key=lambda b: -b[2])
    kept: list[Blob] = []
    for blob in by_size:
        if not any(math.dist(blob[:2], big[:2]) < big[2] for big in kept):
            kept.append(blob)
    return [b for b in blobs if b in kept]


# -- general path: Hough circles and what coins on a table cannot be --------------------------


def _hough(gray: np.ndarray, min_fraction: float) -> list[tuple[float, float, float]]:
    side = min(gray.shape)
    found = cv2.HoughCircles(
        cv2.GaussianBlur(gray, (0, 0), 1.5),
        cv2.HOUGH_GRADIENT_ALT,
        dp=1.5,
        minDist=side * min_fraction,
        param1=HOUGH_CANNY_HIGH,
        param2=HOUGH_PERFECTNESS,
        minRadius=max(4, int(side * min_fraction)),
        maxRadius=int(side * MAX_RADIUS_FRACTION),
    )
    return [] if found is None else [(float(x), float(y), float(r)) for x, y, r in found[0]]


def _visible_fraction(x: float, y: float, r: float, shape: tuple[int, ...]) -> float:
    """Share of the disk's area inside the image (by sampling a grid over the disk)."""
    t = np.linspace(-1, 1, 21)
    gx, gy = np.meshgrid(t, t)
    inside_disk = gx**2 + gy**2 <= 1
    px, py = x + r * gx[inside_disk], y + r * gy[inside_disk]
    h, w = shape[:2]
    return float(np.mean((px >= 0) & (px < w) & (py >= 0) & (py < h)))


def _glare_fraction(image: np.ndarray, x: float, y: float, r: float) -> float:
    """Share of the disk's pixels blown out in every channel."""
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.circle(mask, (round(x), round(y)), max(1, round(r * 0.9)), 255, -1)
    pixels = image[mask > 0]
    return float(np.mean(pixels.min(axis=1) >= GLARE_LEVEL)) if len(pixels) else 0.0


def _gradients(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    blurred = cv2.GaussianBlur(gray, (0, 0), 1.0).astype(np.float32)
    return cv2.Sobel(blurred, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(
        blurred, cv2.CV_32F, 0, 1, ksize=3
    )


def _rim_strength(gx: np.ndarray, gy: np.ndarray, circles: np.ndarray) -> np.ndarray:
    """Mean radial gradient magnitude along each K×(x, y, r) circle: a coin's rim is an edge all round."""
    angles = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    cos, sin = np.cos(angles), np.sin(angles)
    x, y, r = (circles[:, i : i + 1] for i in range(3))
    px = np.clip(np.round(x + r * cos).astype(int), 0, gx.shape[1] - 1)
    py = np.clip(np.round(y + r * sin).astype(int), 0, gx.shape[0] - 1)
    # Only the radial part counts: die details crossing the circle have tangential gradients.
    return np.abs(gx[py, px] * cos + gy[py, px] * sin).mean(axis=1)


def _refine(
    gx: np.ndarray, gy: np.ndarray, circle: tuple[float, float, float]
) -> tuple[float, float, float, float]:
    """Move and resize a proposed circle onto the strongest nearby rim; returns x, y, r, strength.

    Hough centres drift towards a neighbour when coins touch or cast shadows; a local search
    on the radial gradient puts the circle back on the coin's own edge.
    """
    x, y, r = circle
    best = np.array([[x, y, r]])
    for span, steps in ((0.2, 9), (0.05, 5)):
        d = np.linspace(-span, span, steps) * r
        dx, dy, dr = np.meshgrid(d, d, d * 0.6, indexing="ij")
        grid = best + np.stack([dx.ravel(), dy.ravel(), dr.ravel()], axis=1)
        strength = _rim_strength(gx, gy, grid)
        best = grid[int(np.argmax(strength))][None]
    return float(best[0, 0]), float(best[0, 1]), float(best[0, 2]), float(strength.max())


def _drop_nested(circles: list[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
    """Remove circles inside bigger ones; a big circle around several coins goes instead."""
    circles = sorted(circles, key=lambda c: -c[2])
    dropped: set[int] = set()
    for i, (x, y, r) in enumerate(circles):
        if i in dropped:
            continue
        inside = [
            j
            for j in range(i + 1, len(circles))
            if j not in dropped and math.dist((x, y), circles[j][:2]) + circles[j][2] <= 1.1 * r
        ]
        # Two or more sizeable, separate circles inside: this one merely encloses a group.
        sizeable = [j for j in inside if circles[j][2] >= 0.35 * r]
        separate = any(
            math.dist(circles[a][:2], circles[b][:2]) >= 0.9 * (circles[a][2] + circles[b][2])
            for a in sizeable
            for b in sizeable
            if a < b
        )
        if separate:
            dropped.add(i)
        else:
            dropped.update(inside)
    return [c for i, c in enumerate(circles) if i not in dropped]


def _drop_overlapping(
    circles: list[tuple[float, float, float]], strength: list[float]
) -> list[tuple[float, float, float]]:
    """Of circles overlapping more than MAX_OVERLAP, keep the one with the strongest rim."""
    order = sorted(range(len(circles)), key=lambda i: -strength[i])
    kept: list[int] = []
    for i in order:
        x, y, r = circles[i]
        if all(
            math.dist((x, y), circles[k][:2]) >= MAX_OVERLAP * (r + circles[k][2]) for k in kept
        ):
            kept.append(i)
    return [circles[i] for i in sorted(kept)]


def _hough_coins(
    small: np.ndarray, min_fraction: float = MIN_RADIUS_FRACTION
) -> list[tuple[float, float, float]]:
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    gx, gy = _gradients(gray)
    refined = [_refine(gx, gy, c) for c in _hough(gray, min_fraction)]
    circles = [
        (x, y, r)
        for x, y, r, _ in refined
        if _visible_fraction(x, y, r, small.shape) >= MIN_VISIBLE_FRACTION
        and _glare_fraction(small, x, y, r) <= MAX_GLARE_FRACTION
    ]
    circles = _drop_nested(circles)
    strength = list(_rim_strength(gx, gy, np.array(circles).reshape(-1, 3)))
    return _drop_overlapping(circles, strength)


def _any_group(blobs: list[tuple[float, float, float, float]], small: np.ndarray) -> bool:
    """Whether a plain-backdrop blob is a heap of touching coins rather than one coin.

    Separate circles covering a good part of the blob mean a heap; a single coin's round die
    details (a border of dots, a shield) are nested or small and cover little of it.
    """
    if all(area >= SINGLE_COIN_FILL * math.pi * r**2 for _, _, r, area in blobs):
        return False  # the Hough circles inside are die details (a figure, a wreath)
    circles = _hough_coins(small, MIN_RADIUS_FRACTION / 2)  # heap coins can be small
    for x, y, r, area in blobs:
        inside = [c for c in circles if math.dist((x, y), c[:2]) < r and c[2] < 0.8 * r]
        if len(inside) >= 2 and sum(math.pi * c[2] ** 2 for c in inside) > GROUP_COVER * area:
            return True
    return False


# -- public API -------------------------------------------------------------------------------


def _reading_order(coins: list[Coin]) -> list[Coin]:
    """Top to bottom in rows about one coin high, then left to right: stable, human order."""
    if not coins:
        return coins
    row_height = float(np.median([c.r for c in coins])) * 2
    return sorted(coins, key=lambda c: (int(c.y // row_height), c.x))


def detect_coins(image: np.ndarray) -> list[Coin]:
    """Every whole coin in the photo, in reading order (empty when there is none)."""
    colour = _colour(image)
    small, factor = _downscale(colour)
    blobs = _plain_blobs(small)
    if blobs is not None and 1 <= len(blobs) <= 2 and not _any_group(blobs, small):
        coins = [
            _coin(x * factor, y * factor, r * factor, colour.shape, "plain") for x, y, r, _ in blobs
        ]
    else:
        circles = _hough_coins(small)
        median_r = float(np.median([c[2] for c in circles])) if circles else 0.0
        if factor > 1 and median_r < SMALL_COIN_PX:
            # Small or no coins at working size: look again with more pixels per coin.
            side = WORK_SIDE_PX * SMALL_COIN_PX / max(median_r, SMALL_COIN_PX / 2)
            small, factor = _downscale(colour, min(MAX_WORK_SIDE_PX, round(side)))
            # Half the usual smallest radius: this pass exists for coins small in the frame.
            circles = _hough_coins(small, MIN_RADIUS_FRACTION / 2)
        coins = [
            _coin(x * factor, y * factor, r * factor, colour.shape, "hough") for x, y, r in circles
        ]
    return _reading_order(coins)


def detect_single(image: np.ndarray) -> Coin:
    """The one coin of a studio or catalog image: the largest found.

    Raises:
        NoCoinFound: nothing in the image looks like a coin.
    """
    coins = detect_coins(image)
    if not coins:
        raise NoCoinFound("no coin found in the image")
    return max(coins, key=lambda c: c.r)


def split_plate(
    image: np.ndarray, order: tuple[str, str] = ("obverse", "reverse")
) -> list[tuple[str, Coin]] | None:
    """An auction plate's two coins as (side, coin), left first; None if it is not a plate.

    A plate is a picture at least PLATE_ASPECT times wider than tall whose two halves each hold
    one coin. Left is obverse by convention; pass order=("reverse", "obverse") when the
    catalog's metadata says otherwise.
    """
    h, w = image.shape[:2]
    if w < PLATE_ASPECT * h:
        return None
    coins = detect_coins(image)
    left = [c for c in coins if c.x < w / 2]
    right = [c for c in coins if c.x >= w / 2]
    if len(left) == 1 and len(right) == 1:
        return [(order[0], left[0]), (order[1], right[0])]
    big_enough = MIN_PLATE_COIN_FRACTION * min(h, w // 2)
    if sum(c.r >= big_enough for c in coins) > 2:
        return None  # a wide photo of several coins, not a plate
    # Halves photographed apart and joined (two backdrops), or a flan Hough missed: each half
    # alone is a studio shot. Its coin must fill a fair part of the half to count.
    halves = []
    for side, x0 in zip(order, (0, w // 2), strict=True):
        found = detect_coins(image[:, x0 : x0 + w // 2])
        big = [c for c in found if c.r >= big_enough]
        if not big:
            return None
        c = max(big, key=lambda c: c.r)
        halves.append((side, _coin(c.x + x0, c.y, c.r, image.shape, c.method)))
    return halves


def crop(image: np.ndarray, coin: Coin, size: int | None = None) -> np.ndarray:
    """A tight square crop around the coin (border-replicated where it leaves the photo).

    With `size`, the crop is resized to size×size with area averaging when shrinking.
    """
    colour = _colour(image)
    half = coin.side / 2
    x0, y0 = round(coin.x - half), round(coin.y - half)
    side = max(1, round(coin.side))
    h, w = colour.shape[:2]
    pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
    if pad:
        colour = cv2.copyMakeBorder(colour, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    square = colour[y0 + pad : y0 + pad + side, x0 + pad : x0 + pad + side]
    if size is None or size == side:
        return np.ascontiguousarray(square)
    interpolation = cv2.INTER_AREA if size < side else cv2.INTER_CUBIC
    return cv2.resize(square, (size, size), interpolation=interpolation)


def draw_overlay(image: np.ndarray, coins: list[Coin]) -> np.ndarray:
    """The photo with each found coin circled and numbered in reading order."""
    out = _colour(image).copy()
    thickness = max(2, round(max(out.shape[:2]) / 500))
    for n, c in enumerate(coins, 1):
        centre = (round(c.x), round(c.y))
        cv2.circle(out, centre, round(c.r), (0, 255, 0), thickness)
        cv2.rectangle(out, c.box[:2], c.box[2:], (255, 200, 0), max(1, thickness // 2))
        cv2.putText(
            out, str(n), centre, cv2.FONT_HERSHEY_SIMPLEX, c.r / 40, (255, 0, 255), thickness
        )
    return out
