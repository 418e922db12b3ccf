"""The flan's outline as an identity cue: radial profiles and their rotation-free distance.

Two coins struck from the same dies share every design detail; what tells them apart is what
happened to each blank: its irregular outline, edge bites, scratches and toning. The outline
is the most robust of these to light, colour and compression (a grey JPEG keeps it), and
numismatists match specimens by it; Huber-Mörk et al., "Identification of ancient coins based
on fusion of shape and local features" (Machine Vision and Applications 22, 2011), fuse exactly
such a shape distance with appearance. Here the profile is the coin mask's radius r(θ) around
its centroid, in OUTLINE_BINS angles, divided by its mean and less 1: it does not depend on the
photo's scale or where the coin lies in it, and turning the coin only shifts it, so two
profiles are compared at their best circular shift (one FFT correlation).

A profile that cannot be trusted (no coin segmented, the outline running into the crop's limit,
where a shadow joined it or the crop cut it) is all NaN, and distances to it are NaN: callers
then rank by appearance alone (training.fusion).
"""

from __future__ import annotations

import cv2
import numpy as np

OUTLINE_BINS = 128
# An outline that lies on its crop's reach limit over more than this share of its angles was
# cut there (a shadow joined the coin, or the coin runs past the crop): its shape is the crop's.
MAX_AT_LIMIT = 0.12
# How close to the reach limit a radius must be to count as lying on it, in pixels.
LIMIT_SLACK_PX = 1.5
# Profile pairs correlated at once (each holds OUTLINE_BINS complex and real numbers).
PAIRS_AT_ONCE = 1 << 15


def unknown_profile() -> np.ndarray:
    """The profile of an outline that cannot be trusted: every bin NaN."""
    return np.full(OUTLINE_BINS, np.nan, np.float32)


def radial_profile(mask: np.ndarray, reach_px: float | None = None) -> np.ndarray:
    """The coin mask's relative radius per angle (OUTLINE_BINS float32), NaN if untrustworthy.

    reach_px: the radius (from the mask's centre) beyond which the mask was cut off; outlines
    lying on it over more than MAX_AT_LIMIT of their angles are not the coin's own.
    """
    binary = np.ascontiguousarray(mask, dtype=np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    moments = cv2.moments(binary, binaryImage=True)
    if not contours or moments["m00"] <= 0:
        return unknown_profile()
    points = max(contours, key=cv2.contourArea)[:, 0, :].astype(np.float64)
    cx, cy = moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]
    dx, dy = points[:, 0] - cx, points[:, 1] - cy
    radius = np.hypot(dx, dy)
    bins = np.floor((np.arctan2(dy, dx) + np.pi) / (2 * np.pi) * OUTLINE_BINS).astype(int)
    bins %= OUTLINE_BINS
    # the outermost contour point per angle: the flan's edge, not a notch's inner side
    profile = np.full(OUTLINE_BINS, -np.inf)
    np.maximum.at(profile, bins, radius)
    filled = np.isfinite(profile)
    if filled.sum() < OUTLINE_BINS // 2:
        return unknown_profile()  # a sliver, not a coin
    angles = np.arange(OUTLINE_BINS)
    profile = np.interp(angles, angles[filled], profile[filled], period=OUTLINE_BINS)
    if reach_px is not None:
        h, w = binary.shape
        limit = reach_px - np.hypot(cx - w / 2, cy - h / 2)  # the reach seen from the centroid
        if np.mean(profile >= limit - LIMIT_SLACK_PX) > MAX_AT_LIMIT:
            return unknown_profile()
    return (profile / profile.mean() - 1).astype(np.float32)


def outline_distances(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """RMS difference of profiles at their best rotation, Q×G float32 (NaN where one is unknown).

    In units of the coin's mean radius: 0.01 is a flan whose outline differs from the other's by
    1 % of its radius on average, however the two lie turned.
    """
    q = np.asarray(queries, np.float64).reshape(-1, OUTLINE_BINS)
    g = np.asarray(gallery, np.float64).reshape(-1, OUTLINE_BINS)
    out = np.full((len(q), len(g)), np.nan, np.float32)
    q_ok, g_ok = np.isfinite(q).all(1), np.isfinite(g).all(1)
    if not q_ok.any() or not g_ok.any():
        return out
    qv, gv = q[q_ok], g[g_ok]
    fq, fg = np.fft.rfft(qv, axis=1), np.conj(np.fft.rfft(gv, axis=1))
    g_energy = (gv**2).sum(1)
    distance = np.empty((len(qv), len(gv)), np.float32)
    step = max(1, PAIRS_AT_ONCE // len(gv))  # bounds the Q×G×bins correlation in memory
    for start in range(0, len(qv), step):
        rows = slice(start, start + step)
        # circular cross-correlation of every pair, best over all shifts
        corr = np.fft.irfft(fq[rows, None, :] * fg[None, :, :], n=OUTLINE_BINS, axis=2)
        squared = (qv[rows] ** 2).sum(1)[:, None] + g_energy[None, :] - 2 * corr.max(axis=2)
        distance[rows] = np.sqrt(np.maximum(squared, 0) / OUTLINE_BINS)
    out[np.ix_(q_ok, g_ok)] = distance
    return out
