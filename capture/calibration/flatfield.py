"""Flat fields and white balance from a uniform grey card, one per light pattern.

Cameras encode light with a gamma curve, and a flat field divides light, so frames are made
linear first. The exponent is measured, not assumed: the card is shot at one exposure and at
half of it, and value = (k·exposure)^gamma gives gamma = log2(ratio of the two levels). Several
frames per pattern are averaged (noise), binned 4×4 and smoothed (a flat field is the slow
fall-off of lens and lights, not the card's grain), and normalised to 1 in the centre. White
balance gains make the card's centre neutral with green at 1. Correcting a frame: linearise,
divide by the flat, multiply by the gains, re-encode with the same gamma, same dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from capture.calibration import frames
from capture.calibration.models import FlatFieldResult, PatternFlat
from capture.calibration.staging import Placement, Stager
from capture.calibration.store import CalibrationError, StoredCalibration
from rig.config import RigConfig
from rig.devices import Rig

BIN = 4  # stored flats are binned: lighting fall-off has no detail at this scale
BLOCK_PX = 16  # uniformity is measured on block means, as imaging standards do


def as_channels(image: np.ndarray) -> np.ndarray:
    """Float (H, W, C) view of an image in 0..1 of full scale (C = 1 for mono)."""
    scaled = image.astype(np.float32) / np.float32(frames.full_scale(image))
    return scaled if scaled.ndim == 3 else scaled[..., None]


def centre_mean(image: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Per-channel mean over a central square covering `fraction` of the width."""
    h, w = image.shape[:2]
    half = max(2, int(w * fraction / 2))
    return image[h // 2 - half : h // 2 + half, w // 2 - half : w // 2 + half].mean(axis=(0, 1))


def measure_gamma(bright: np.ndarray, dim: np.ndarray) -> float:
    """The encoding exponent from two frames at exposures in the ratio 2:1.

    Raises:
        CalibrationError: levels too low, clipped, or not ordered.
    """
    a = float(centre_mean(as_channels(bright), 0.3).mean())
    b = float(centre_mean(as_channels(dim), 0.3).mean())
    if not (0.02 < b < a < 0.98):
        raise CalibrationError(
            f"cannot measure the camera's gamma: card levels {a:.3f} and {b:.3f} of full scale"
        )
    return math.log(a / b) / math.log(2.0)


def linear(image: np.ndarray, gamma: float) -> np.ndarray:
    """Linear light (H, W, C) float32 from an encoded frame."""
    return np.power(as_channels(image), np.float32(1.0 / gamma))


def nonuniformity_pct(light: np.ndarray) -> float:
    """Peak-to-peak of 16×16 block means of the channel mean, as a percentage of their mean."""
    grey = light.mean(axis=2)
    h, w = (grey.shape[0] // BLOCK_PX) * BLOCK_PX, (grey.shape[1] // BLOCK_PX) * BLOCK_PX
    blocks = grey[:h, :w].reshape(h // BLOCK_PX, BLOCK_PX, w // BLOCK_PX, BLOCK_PX)
    means = blocks.mean(axis=(1, 3))
    return float(100.0 * (means.max() - means.min()) / means.mean())


def fit_flat(linear_frames: list[np.ndarray]) -> tuple[np.ndarray, list[float], float]:
    """Binned, smoothed flat (H/BIN, W/BIN, C) normalised to 1 in the centre, gains, level."""
    mean = np.mean(linear_frames, axis=0).astype(np.float32)
    h, w, c = mean.shape
    binned = cv2.resize(mean, (w // BIN, h // BIN), interpolation=cv2.INTER_AREA)
    binned = binned.reshape(h // BIN, w // BIN, c)
    smooth = cv2.GaussianBlur(binned, (0, 0), sigmaX=max(1.0, w / BIN / 64))
    smooth = smooth.reshape(h // BIN, w // BIN, c)
    centre = centre_mean(smooth)
    flat = smooth / centre
    reference = centre[1] if c == 3 else centre[0]  # green carries luminance
    gains = [float(reference / v) for v in centre]
    return flat.astype(np.float32), gains, float(centre.mean())


class FlatFieldCorrector:
    """Applies a flat-field calibration to frames of the patterns it holds."""

    def __init__(self, stored: StoredCalibration) -> None:
        result = stored.record.result
        if not isinstance(result, FlatFieldResult):
            raise CalibrationError(
                f"{stored.name} is a {result.kind} calibration, not a flat field"
            )
        self.stored = stored
        self.result = result
        self._full: dict[str, np.ndarray] = {}

    def reason_not_applied(self, image: np.ndarray, pattern: str) -> str | None:
        """Why a frame cannot be corrected (unknown pattern, other size), or None if it can."""
        if pattern not in self.result.patterns:
            return f"no flat field for light pattern {pattern!r} in {self.stored.name}"
        h, w = image.shape[:2]
        channels = 1 if image.ndim == 2 else image.shape[2]
        r = self.result
        if (w, h, channels) != (r.width, r.height, r.channels):
            return f"frame is {w}x{h}x{channels}, the flat field {r.width}x{r.height}x{r.channels}"
        return None

    def correct(self, image: np.ndarray, pattern: str) -> np.ndarray:
        """The frame flat-fielded and white-balanced, same shape and dtype.

        Raises:
            CalibrationError: the frame cannot be corrected (see reason_not_applied).
        """
        reason = self.reason_not_applied(image, pattern)
        if reason is not None:
            raise CalibrationError(reason)
        gamma = self.result.gamma
        light = linear(image, gamma) / self._flat(pattern)
        light *= np.array(self.result.patterns[pattern].white_balance, np.float32)
        encoded = np.power(np.clip(light, 0.0, 1.0), np.float32(gamma))
        top = frames.full_scale(image)
        out = np.round(encoded * np.float32(top)).astype(image.dtype)
        return out if image.ndim == 3 else out[..., 0]

    def _flat(self, pattern: str) -> np.ndarray:
        if pattern not in self._full:
            small = self.stored.array(self.result.patterns[pattern].array)
            full = cv2.resize(
                small, (self.result.width, self.result.height), interpolation=cv2.INTER_LINEAR
            )
            self._full[pattern] = full.reshape(self.result.height, self.result.width, -1)
        return self._full[pattern]


@dataclass
class FlatFieldRun:
    """What `calibrate_flatfield` captured and fitted; arrays keyed by their file names."""

    result: FlatFieldResult
    arrays: dict[str, np.ndarray]
    frames: int
    overlay: np.ndarray
    warnings: list[str]


def calibrate_flatfield(
    rig: Rig,
    config: RigConfig,
    stage: Stager,
    *,
    stem: str,
    patterns: list[str] | None = None,
    frames_per_pattern: int = 4,
) -> FlatFieldRun:
    """Shoot the grey card under each pattern, measure gamma once, fit flats and gains.

    `stem` names the array files (`STEM.PATTERN.npy`) as the store will write them.

    Raises:
        CalibrationError: an unknown pattern, or the card cannot be exposed well.
        RigError: a device failed.
    """
    known = rig.lightbox.patterns()
    names = patterns or sorted(known)
    unknown = [p for p in names if p not in known]
    if unknown or not names:
        raise CalibrationError(f"unknown light pattern(s) {unknown}; patterns are {sorted(known)}")
    gamma: float | None = None
    flats: dict[str, PatternFlat] = {}
    arrays: dict[str, np.ndarray] = {}
    taken = 0
    shape: tuple[int, ...] = ()
    before_after: list[np.ndarray] = []
    with frames.calibrating(rig, config, stage):
        stage(Placement("card"))
        for name in names:
            rig.lightbox.set_pattern(name)
            # the card's brightest part well below clipping: a clipped flat is a wrong flat
            exposure, first = frames.auto_expose(rig, config, percentile=99.9, target=0.75)
            taken += 1
            if gamma is None:
                rig.camera.configure(exposure_us=exposure / 2)
                dim = rig.camera.grab()
                rig.camera.configure(exposure_us=exposure)
                taken += 1
                gamma = measure_gamma(first.image, dim.image)
            more = [rig.camera.grab().image for _ in range(frames_per_pattern)]
            taken += frames_per_pattern
            # the last frame is kept out of the fit, to judge the correction on fresh noise
            shots, check = [first.image, *more[:-1]], more[-1]
            shape = check.shape
            lights = [linear(image, gamma) for image in shots]
            flat, gains, level = fit_flat(lights)
            arrays[f"{stem}.{name}.npy"] = flat
            corrected = _apply(linear(check, gamma), flat, gains)
            flats[name] = PatternFlat(
                array=f"{stem}.{name}.npy",
                white_balance=gains,
                exposure_us=exposure,
                level=level,
                nonuniformity_before_pct=nonuniformity_pct(lights[0]),
                nonuniformity_after_pct=nonuniformity_pct(corrected),
            )
            before_after = before_after or [lights[0], corrected]
    assert gamma is not None
    result = FlatFieldResult(
        width=int(shape[1]),
        height=int(shape[0]),
        channels=1 if len(shape) == 2 else int(shape[2]),
        gamma=gamma,
        patterns=flats,
    )
    warnings = [
        f"pattern {n}: {p.nonuniformity_after_pct:.2f}% non-uniformity left after correction"
        for n, p in flats.items()
        if p.nonuniformity_after_pct > 2.0
    ]
    return FlatFieldRun(result, arrays, taken, draw_overlay(*before_after), warnings)


def _apply(light: np.ndarray, flat: np.ndarray, gains: list[float]) -> np.ndarray:
    h, w = light.shape[:2]
    full = cv2.resize(flat, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1)
    return light / full * np.array(gains, np.float32)


def draw_overlay(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """BGR picture: the card before and after correction, contrast stretched ±5 %."""
    panels = []
    for light, label in ((before, "before"), (after, "after")):
        grey = light.mean(axis=2)
        centre = float(centre_mean(grey[..., None])[0])
        stretched = np.clip(128 + (grey / centre - 1.0) * 128 / 0.05, 0, 255).astype(np.uint8)
        panel = cv2.cvtColor(stretched, cv2.COLOR_GRAY2BGR)
        text = f"{label}: {nonuniformity_pct(light):.2f}% p-p (grey = +-5%)"
        cv2.putText(panel, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 255), 1)
        panels.append(panel)
    return np.hstack(panels)
