"""Find the coin in a photo and crop a square around it, robust to background and placement.

The rig puts one coin on a plain turntable, but not always centred, and the background may be
darker (black velvet) or lighter (white paper) than the coin. So the background colour is
estimated from the image border, the foreground is what differs from it (Otsu on the colour
distance, which works for dark-on-light and light-on-dark alike), and the coin is the largest
round blob; a blob that fills too little of its enclosing circle (the coin merged with a
neighbour or a shadow) is split into inscribed circles. Hough circles are the fallback when
segmentation finds nothing round (a coin that touches the border, strong glare); the centre
square is the last resort. (Photos of many coins at once: training.detect.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from training.segmenter import coin_probability, segmenter_in_use

# Segmentation runs on a copy no larger than this: plenty for a circle, and fast on 20 MP frames.
WORK_SIDE_PX = 512
# A blob this round or rounder (4πA/P², 1 = circle) is a coin; flan outlines are irregular.
MIN_CIRCULARITY = 0.55
# A single coin fills most of its enclosing circle (a worn or clipped flan still ~0.8); two
# touching coins fill about half of theirs.
MIN_FILL = 0.7
# A blob whose convex hull fills this much of its enclosing circle is one coin, however ragged its
# outline (two touching coins' hull fills at most ~0.67 of theirs); 3 of 320 catalog images of the
# twin were split into tiny inscribed circles without this.
MIN_HULL_FILL = 0.85
# Blobs smaller than this fraction of the image are dust, scratches or noise.
MIN_AREA_FRACTION = 0.002
# What replaces the background when crops are masked: ImageNet's mean colour, which the input
# normalisation maps to zero. Catalog photos sit on white, grey or black card and rig captures on
# the turntable's dark grey; a fixed fill removes that difference (a cue no coin carries) while
# the flan outline, which does identify a coin, stays.
BACKGROUND_RGB = (124, 116, 104)
# Masks are segmented on crops at least this large (then resized to the requested size).
MASK_WORK_PX = 192


@dataclass(frozen=True)
class Circle:
    """A coin's position in image pixels and which method found it."""

    x: float
    y: float
    r: float
    method: str


def _frame(image: np.ndarray) -> np.ndarray:
    """The pixels of a thin frame around the image (a 25th of its side), one per row."""
    h, w = image.shape[:2]
    b = max(1, min(h, w) // 25)
    channels = image.shape[2] if image.ndim == 3 else 1
    return np.concatenate(
        [
            image[:b].reshape(-1, channels),
            image[-b:].reshape(-1, channels),
            image[:, :b].reshape(-1, channels),
            image[:, -b:].reshape(-1, channels),
        ]
    )


def _border_colour(image: np.ndarray) -> np.ndarray:
    """Median colour of a thin frame around the image: the background, whatever its shade."""
    return np.median(_frame(image), axis=0).astype(np.float32)


# Least colour distance from the background that marks a coin's outline inside a crop: above
# JPEG and sensor noise on a plain backdrop, below a pale coin's rim on white card.
MIN_OUTLINE_DISTANCE = 8.0
# How much darkening along the backdrop's own colour (a shadow) counts: see
# shadow_weighted_distance.
SHADOW_WEIGHT = 0.5


def backdrop_components(pixels: np.ndarray, backdrop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's difference from the backdrop colour: (signed change along it, squared rest).

    Along the backdrop's colour is brighter (+) or darker (-) backdrop, such as a shadow; the
    rest is a change of hue. A black backdrop has no direction: everything counts as hue.
    """
    difference = pixels - backdrop
    norm2 = float(backdrop @ backdrop)
    if norm2 < 1.0:
        return np.zeros(pixels.shape[:-1], np.float32), (difference**2).sum(axis=-1)
    along = (difference @ backdrop) / math.sqrt(norm2)
    return along, np.maximum((difference**2).sum(axis=-1) - along**2, 0)


def shadow_weighted_distance(pixels: np.ndarray, backdrop: np.ndarray) -> np.ndarray:
    """Colour distance of each pixel from the backdrop, darkening along the backdrop's colour halved.

    A shadow is the backdrop's own colour, darker. Counted in full, a raking light's shadow on a
    dark backdrop sits right at Otsu's threshold, and a mere JPEG round trip tipped it into the
    coin's blob (circles 15 % too big, off-centre). Halving that one component keeps shadows
    below the threshold while any change of hue, and any brightening, still counts in full.
    """
    along, across2 = backdrop_components(pixels, backdrop)
    along = np.where(along < 0, SHADOW_WEIGHT * along, along)
    return np.sqrt(across2 + along**2)


def _pose_distance(images: Sequence[np.ndarray]) -> np.ndarray:
    """One distance-from-backdrop map for aligned frames of a coin lying still (float32).

    Brightening and change of hue count from whichever frame shows them most; darkening only
    as far as every frame shows it. A raking light leaves the coin's far side as dark as the
    turntable and casts a shadow beside it; both are transient (another light lights that side,
    and finds plain backdrop where the shadow was), while a dark coin on pale card is darker in
    every frame. One frame: the plain colour distance.
    """
    parts = []
    for image in images:
        blurred = cv2.GaussianBlur(image, (5, 5), 0).astype(np.float32)
        parts.append(backdrop_components(blurred, _border_colour(image)))
    along = np.stack([a for a, _ in parts])
    brighter = np.maximum(along.max(axis=0), 0)
    darker = np.maximum(-along, 0).min(axis=0)
    hue2 = np.max([h for _, h in parts], axis=0)
    return np.sqrt(hue2 + brighter**2 + darker**2).astype(np.float32)


def _threshold_distance(distance: np.ndarray, *, outline: bool = False) -> np.ndarray:
    """Binary mask of a distance-from-backdrop map: Otsu's threshold, then morphology.

    With `outline` (segmenting a coin already centred in its crop), the threshold drops to just
    above the backdrop's own noise where that is lower than Otsu's: Otsu splits a pale coin on
    white card inside the coin, between its shaded and its highlit parts, and bites them away.
    """
    span = float(distance.max() - distance.min()) or 1.0
    distance_u8 = ((distance - distance.min()) * (255 / span)).astype(np.uint8)
    otsu, mask = cv2.threshold(distance_u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if outline:
        # The crop's corners lie outside the coin's circle: pure backdrop, unlike the frame's
        # middles, which the coin touches.
        h, w = distance.shape
        yy, xx = np.mgrid[:h, :w]
        corners = (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2 > (0.55 * min(h, w)) ** 2
        noise = float(np.percentile(distance[corners], 99))
        low = max(MIN_OUTLINE_DISTANCE, 1.5 * noise)
        threshold = min(distance.min() + otsu * span / 255, low)
        mask = np.where(distance > threshold, 255, 0).astype(np.uint8)
    # Closing bridges dark die details inside a bright coin; opening removes speckle and noise.
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel, iterations=2)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    if outline:
        # the blur spread the coin about a pixel into the backdrop: no halo of card around it
        mask = cv2.erode(mask, np.ones((3, 3), np.uint8))
    return mask


def _split_touching(contour: np.ndarray, shape: tuple[int, int], min_r: float) -> list[Circle]:
    """Greedy inscribed circles of a blob: touching coins, one circle each, largest first.

    The distance to the background peaks at each coin's centre with the coin's radius as value,
    so taking the highest peak and blanking its disc, repeatedly, separates coins that touch.
    """
    mask = np.zeros(shape, np.uint8)
    cv2.drawContours(mask, [contour], -1, 255, cv2.FILLED)
    distance = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    circles: list[Circle] = []
    while True:
        _, r, _, (x, y) = cv2.minMaxLoc(distance)
        # A mask without background has no finite distance (OpenCV gives FLT_MAX): no coin.
        if r < min_r or r > max(shape):
            return circles
        circles.append(Circle(float(x), float(y), float(r), "split"))
        cv2.circle(distance, (x, y), int(r * 1.1) + 1, 0, cv2.FILLED)


def _round_blobs(mask: np.ndarray) -> list[tuple[float, Circle]]:
    """Coin-like parts of the mask as (area, circle): round blobs, and touching coins split."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    min_area = MIN_AREA_FRACTION * mask.shape[0] * mask.shape[1]
    min_r = math.sqrt(min_area / math.pi)
    blobs: list[tuple[float, Circle]] = []
    for contour in contours:
        area = cv2.contourArea(contour)
        if area < min_area:
            continue
        (x, y), r = cv2.minEnclosingCircle(contour)
        hull_area = cv2.contourArea(cv2.convexHull(contour))
        if area < MIN_FILL * math.pi * r * r and hull_area >= MIN_HULL_FILL * math.pi * r * r:
            # One coin whose rim merged with the background in places (a bright coin on white
            # catalog card): ragged, but its convex hull is still the disc. Touching coins are not.
            blobs.append((hull_area, Circle(float(x), float(y), float(r), "contour")))
            continue
        if area < MIN_FILL * math.pi * r * r:
            # Far from filling its enclosing circle: several coins touching, or not a coin.
            blobs += [
                (math.pi * c.r**2, c) for c in _split_touching(contour, mask.shape[:2], min_r)
            ]
            continue
        # The convex hull's perimeter ignores nicks in the flan edge that make a coin look ragged.
        hull = cv2.convexHull(contour)
        circularity = 4 * math.pi * cv2.contourArea(hull) / cv2.arcLength(hull, True) ** 2
        if circularity >= MIN_CIRCULARITY:
            blobs.append((area, Circle(float(x), float(y), float(r), "contour")))
    return blobs


def _hough(gray: np.ndarray) -> Circle | None:
    """The strongest Hough circle, or None."""
    side = min(gray.shape)
    circles = cv2.HoughCircles(
        cv2.medianBlur(gray, 5),
        cv2.HOUGH_GRADIENT,
        dp=1.5,
        minDist=side / 4,
        param1=120,
        param2=40,
        minRadius=side // 10,
        maxRadius=side // 2,
    )
    if circles is None:
        return None
    x, y, r = circles[0][0]
    return Circle(float(x), float(y), float(r), "hough")


def _downscale(image: np.ndarray) -> tuple[np.ndarray, float]:
    """A copy whose longer side is at most WORK_SIDE_PX, and the factor back to full size."""
    scale = min(1.0, WORK_SIDE_PX / max(image.shape[:2]))
    if scale == 1.0:
        return image, 1.0
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return small, 1.0 / scale


def _as_colour(image: np.ndarray) -> np.ndarray:
    """Three channels, whatever came in (grey or with alpha)."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return image[..., :3]


def _upscale(circle: Circle, factor: float) -> Circle:
    """The same circle in full-size pixel coordinates."""
    return Circle(circle.x * factor, circle.y * factor, circle.r * factor, circle.method)


def _pick_blob(
    blobs: list[tuple[float, Circle]], near_px: tuple[float, float] | None, factor: float
) -> Circle:
    """The coin among round blobs: the largest, or the one nearest the turntable centre."""
    if near_px is None:
        _, best = max(blobs, key=lambda b: b[0])
    else:
        px, py = near_px[0] / factor, near_px[1] / factor
        # distance from the turntable centre to the blob's rim (0 inside it), then size
        _, best = min(
            blobs,
            key=lambda b: (max(0.0, math.hypot(b[1].x - px, b[1].y - py) - b[1].r), -b[0]),
        )
    return _upscale(best, factor)


def find_coin(image: np.ndarray, *, near_px: tuple[float, float] | None = None) -> Circle:
    """The one coin in a rig photo: largest round blob, else a Hough circle, else the centre.

    With `near_px` (the calibrated turntable centre), the coin is the round blob nearest that
    point (the one lying on the turntable, not the largest thing in view, such as a tool or a
    second coin at the frame's edge), and the last resort is a circle there, not mid-image.
    """
    small, factor = _downscale(_as_colour(image))
    blobs = _round_blobs(_threshold_distance(_pose_distance([small])))
    if blobs:
        return refit_to_outline(image, _pick_blob(blobs, near_px, factor))
    hough = _hough(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
    if hough is not None:
        return refit_to_outline(image, _upscale(hough, factor))
    h, w = image.shape[:2]
    if near_px is not None:
        return Circle(near_px[0], near_px[1], min(h, w) / 4, "turntable")
    return Circle(w / 2, h / 2, min(h, w) / 2, "centre")


def find_coin_in_pose(
    images: Sequence[np.ndarray], *, near_px: tuple[float, float] | None = None
) -> Circle | None:
    """The coin in several frames of one pose (same placement, other lights), or None.

    Segmented once on the frames' combined distance map (see _pose_distance), so a raking
    light's dark side and shadow cannot shrink, inflate or shift the circle. None when the
    frames differ in size or nothing round stands out: then find each frame's coin alone.
    """
    if not images or len({i.shape[:2] for i in images}) > 1:
        return None
    small = [_downscale(_as_colour(i)) for i in images]
    factor = small[0][1]
    blobs = _round_blobs(_threshold_distance(_pose_distance([s for s, _ in small])))
    return _pick_blob(blobs, near_px, factor) if blobs else None


def outline_reach(margin: float) -> float:
    """How far an outline may reach, as a fraction of a crop's half side: half the margin out."""
    return (1 + margin / 2) / (1 + margin)


# A single photo's circle is refitted to the coin's outline when that outline's enclosing circle
# is this much smaller than the circle (a shadow or a neighbour inflated it) or this far off
# centre, as fractions of the radius; smaller differences are the flan's own irregularity.
REFIT_RADIUS_SHRINK = 0.08
REFIT_CENTRE_SHIFT = 0.06


def refit_to_outline(image: np.ndarray, circle: Circle, margin: float = 0.04) -> Circle:
    """The circle enclosing the coin's own outline in a single photo, where it differs enough.

    A blob's circle can take in the shadow a low light casts beside a dark coin (a fifth too
    large, off-centre); the outline (coin_outline, with the learned segmenter) does not. Small
    differences are the flan's own irregularity, and the circle stays.
    """
    if segmenter_in_use() in ("off", "absent"):
        return circle  # a colour outline alone bites raking-lit coins: it would shrink circles
    work = MASK_WORK_PX
    coin = coin_outline([square_crop(image, circle, work, margin, 0.0)], outline_reach(margin))
    contours, _ = cv2.findContours(
        coin.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    if not contours:
        return circle
    (u, v), r_crop = cv2.minEnclosingCircle(max(contours, key=cv2.contourArea))
    scale = work / (2 * circle.r * (1 + margin))
    radius = r_crop / scale
    dx, dy = (u - work / 2) / scale, (v - work / 2) / scale
    if (
        radius > (1 - REFIT_RADIUS_SHRINK) * circle.r
        and math.hypot(dx, dy) < REFIT_CENTRE_SHIFT * circle.r
    ):
        return circle
    return Circle(circle.x + dx, circle.y + dy, radius, circle.method + "+outline")


def square_crop(
    image: np.ndarray, circle: Circle, size: int, margin: float, rotate_deg: float
) -> np.ndarray:
    """The unmasked size×size crop of crop_coin."""
    colour = _as_colour(image)
    fill = tuple(float(c) for c in _border_colour(colour))
    scale = size / (2 * circle.r * (1 + margin))
    if scale < 1:
        # warpAffine samples points, which aliases when shrinking; area-average down first.
        colour = cv2.resize(colour, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        circle = Circle(circle.x * scale, circle.y * scale, circle.r * scale, circle.method)
        scale = 1.0
    # One affine warp does rotate + translate (+ upscale), so pixels are resampled only once more.
    matrix = cv2.getRotationMatrix2D((circle.x, circle.y), rotate_deg, scale)
    matrix[0, 2] += size / 2 - circle.x
    matrix[1, 2] += size / 2 - circle.y
    return cv2.warpAffine(
        np.ascontiguousarray(colour),
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=fill,
    )


# Least share of the fitted disc a segmented coin outline may cover before the disc stands in.
MIN_OUTLINE_FILL = 0.6
# Least share of a single photo's crop the learned outline must cover to be trusted: a found
# coin covers about 0.7 of it, still 0.45 when a shadow inflated the fitted circle by a fifth.
MIN_LEARNED_FILL = 0.35
# Below this probability the segmenter overrules colour: that pixel is backdrop (a shadow).
VETO_PROBABILITY = 0.1


def _single_photo_mask(crop: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """A single photo's coin mask (uint8 0/255): the learned outline, checked against colour.

    The segmenter adds the far rim a raking light leaves as dark as the backdrop, and it vetoes
    what colour mistakes for coin where it is sure there is none: the shadow a low light casts
    beside a dark coin (on a dark turntable it differs from the backdrop as much as the coin
    does). Where it finds no plausible coin at all (a photo far from anything it learned from),
    or without its weights, the colour outline stands alone.
    """
    probability = coin_probability(crop)
    if probability is None:
        return colour
    learned = probability > 0.5
    if learned.mean() < MIN_LEARNED_FILL:
        return colour
    return np.where(learned | ((colour > 0) & (probability > VETO_PROBABILITY)), 255, 0).astype(
        np.uint8
    )


def coin_outline(crops: Sequence[np.ndarray], radius_fraction: float = 1.0) -> np.ndarray:
    """Boolean mask of the coin in centred crops of one pose (one crop: a single photo).

    The coin is the foreground blob (colour distance to the border, see _pose_distance) under
    the crop's centre, else the largest one, with holes filled: a dark die detail inside a bright
    flan stays coin. A single photo has no other light to show the side a raking light leaves
    as dark as the backdrop, so there the learned segmenter's outline (training.segmenter, which
    reads relief, rim and cast shadow) completes and checks the colour outline (see
    _single_photo_mask). Nothing beyond radius_fraction of the half side counts (shadows and
    the crop's edge). If segmentation finds nothing plausible (under MIN_OUTLINE_FILL of the disc the
    crop was cut for), that disc stands in, so a hard photo still gets a clean background and
    keeps its coin.
    """
    return coin_mask(crops, radius_fraction)[0]


def coin_mask(crops: Sequence[np.ndarray], radius_fraction: float) -> tuple[np.ndarray, bool]:
    """coin_outline's mask, and False where it is the fitted disc standing in for it."""
    h, w = crops[0].shape[:2]
    mask = _threshold_distance(_pose_distance(crops), outline=True)
    if len(crops) == 1:
        mask = _single_photo_mask(crops[0], mask)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    coin = np.zeros((h, w), np.uint8)
    if count > 1:
        centre_label = int(labels[h // 2, w // 2])
        if centre_label == 0:
            centre_label = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        contours, _ = cv2.findContours(
            (labels == centre_label).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        cv2.drawContours(coin, contours, -1, 1, cv2.FILLED)
    disc = np.zeros((h, w), np.uint8)
    cv2.circle(disc, (w // 2, h // 2), round(radius_fraction * min(h, w) / 2), 1, cv2.FILLED)
    coin &= disc
    # A coin's own outline fills most of the circle fitted to it (0.87-0.96 on irregular twin
    # flans); far less means the segmentation lost the coin (a near-white coin on white card),
    # and masking by it would cut the coin itself away: the fitted disc is the safer outline.
    if coin.sum() < MIN_OUTLINE_FILL * disc.sum():
        return disc.astype(bool), False
    return coin.astype(bool), True
