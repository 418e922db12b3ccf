"""Cut a found coin out of its photo: the square crop a model sees, and the coin's outline.

training.coinfind finds the coin and segments it; this module turns that into what training,
evaluation and search use: a size×size crop around the circle (optionally turned, and masked
outside the coin's own outline), for all frames of a pose at once, and the outline's radial
profile (training.outline) from a wider crop of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from training.coinfind import (
    BACKGROUND_RGB,
    MASK_WORK_PX,
    Circle,
    coin_mask,
    coin_outline,
    outline_reach,
    square_crop,
)
from training.outline import radial_profile, unknown_profile

# Margin of the crop an outline profile is segmented in (training.outline): irregular flans
# reach up to ~3 % beyond their fitted circle, and the profile needs all of the edge.
OUTLINE_MARGIN = 0.2


def crop_coin(
    image: np.ndarray,
    circle: Circle,
    size: int,
    *,
    margin: float = 0.04,
    rotate_deg: float = 0.0,
    mask_background: bool = False,
) -> np.ndarray:
    """A size×size crop centred on the coin, optionally rotated by rotate_deg (counter-clockwise).

    Parts of the square outside the photo are filled with the border colour, so an off-centre coin
    near the edge still ends up centred on a plain background. With mask_background, everything
    outside the coin's own outline (the segmented flan, not the fitted circle) becomes
    BACKGROUND_RGB: see coin_outline.
    """
    return crop_pose(
        [image], circle, size, margin=margin, rotate_deg=rotate_deg, mask_background=mask_background
    )[0]


@dataclass(frozen=True)
class PoseCut:
    """Crops of one pose's frames and the coin's outline profile (training.outline)."""

    crops: list[np.ndarray]
    outline: np.ndarray  # OUTLINE_BINS float32, all NaN where the outline cannot be trusted


def crop_pose(
    images: Sequence[np.ndarray],
    circle: Circle,
    size: int,
    *,
    margin: float = 0.04,
    rotate_deg: float = 0.0,
    mask_background: bool = False,
) -> list[np.ndarray]:
    """crop_coin for aligned frames of one pose: one circle and, if masking, one outline for all.

    The outline comes from all frames together (coin_outline), so a raking light's dark side,
    which matches the turntable, is not cut out of the coin in that light's frame.
    """
    if not mask_background:
        return [square_crop(i, circle, size, margin, rotate_deg) for i in images]
    return _masked_crops(images, circle, size, margin, rotate_deg)


def cut_pose(
    images: Sequence[np.ndarray],
    circle: Circle,
    size: int,
    *,
    margin: float = 0.04,
    rotate_deg: float = 0.0,
    mask_background: bool = False,
) -> PoseCut:
    """crop_pose's crops together with the radial profile of the coin's outline.

    The profile is segmented in a crop of its own with OUTLINE_MARGIN around the circle: a
    fitted circle does not enclose every bulge of an irregular flan, and within the training
    crop's narrow margin the outline would run into the crop's reach there.
    """
    wide = [square_crop(i, circle, MASK_WORK_PX, OUTLINE_MARGIN, rotate_deg) for i in images]
    wide_reach = outline_reach(OUTLINE_MARGIN)
    flan, segmented = coin_mask(wide, wide_reach)
    outline = radial_profile(flan, wide_reach * MASK_WORK_PX / 2) if segmented else None
    if outline is None:
        outline = unknown_profile()
    crops = crop_pose(
        images,
        circle,
        size,
        margin=margin,
        rotate_deg=rotate_deg,
        mask_background=mask_background,
    )
    return PoseCut(crops, outline)


def _masked_crops(
    images: Sequence[np.ndarray], circle: Circle, size: int, margin: float, rotate_deg: float
) -> list[np.ndarray]:
    """crop_pose's masked crops: everything outside the pose's one coin outline filled."""
    # Segment at a working size of at least MASK_WORK_PX (the morphology needs a few pixels
    # per flan irregularity), then area-average down so the outline stays anti-aliased.
    work = max(size, MASK_WORK_PX)
    big = [square_crop(i, circle, work, margin, rotate_deg) for i in images]
    # The fitted circle spans 1 / (1 + margin) of the crop; allow half the margin beyond it.
    coin = coin_outline(big, radius_fraction=outline_reach(margin))
    out = []
    for crop in big:
        masked = np.empty_like(crop)
        masked[:] = BACKGROUND_RGB
        np.copyto(masked, crop, where=coin[..., None])
        if work != size:
            masked = cv2.resize(masked, (size, size), interpolation=cv2.INTER_AREA)
        out.append(masked)
    return out
