"""The turntable in the image: rotation centre, sense of rotation, zero offset, pixels per mm.

An ArUco marker lies on the platter off its axis, its top edge along the platter's zero mark.
The turntable driver turns it to N angles; at each the marker's four corners are found. Every
corner of every frame obeys one rigid model, p(i, k) = c + R(s·θk) qi (c the centre, s = ±1 the
sense, qi the corner at driver 0° relative to c, R turning counter-clockwise on screen), which is
linear in c and the qi for a given s: both senses are solved by least squares and the better
one kept. The zero offset is the image angle of the marker's x axis at driver 0°; the scale is
the marker's mean side in pixels over its printed size. With a camera calibration the corners
are undistorted first and the centre is put back through the lens, so it is a raw-image pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from capture.calibration import frames
from capture.calibration.camera import distort_px, undistort_px
from capture.calibration.models import CameraResult, TurntableResult
from capture.calibration.staging import Placement, Stager
from capture.calibration.store import CalibrationError, StoredCalibration
from rig.config import RigConfig
from rig.devices import Rig

DICTIONARY = "DICT_4X4_50"


def turn(angle_deg: float) -> np.ndarray:
    """2×2 matrix turning (x right, y down) vectors counter-clockwise on screen."""
    a = math.radians(angle_deg)
    return np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])


def detect_marker(image: np.ndarray, marker_id: int) -> np.ndarray | None:
    """The marker's corners (4, 2) in pixels (top-left first, clockwise), or None."""
    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, DICTIONARY))
    parameters = cv2.aruco.DetectorParameters()
    parameters.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    parameters.cornerRefinementWinSize = 4
    parameters.cornerRefinementMinAccuracy = 0.001
    detector = cv2.aruco.ArucoDetector(dictionary, parameters)
    corners, ids, _ = detector.detectMarkers(frames.to_gray8(image))
    if ids is None:
        return None
    for found, found_id in zip(corners, ids.ravel(), strict=True):
        if int(found_id) == marker_id:
            return refine_corners(image, np.asarray(found, np.float64).reshape(4, 2))
    return None


def refine_corners(image: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Corners (4, 2) re-found as the crossings of lines fitted to the marker's four edges.

    Corner refiners look for saddle points; the marker's outer corners are L-shapes, which
    pulls them ~0.3 px inwards and makes the marker look 0.7 % small. Edges are located where
    each profile across them crosses half-way from black to paper in linear light (the
    nominal gamma undone), which a symmetric blur leaves in place.
    """
    light = np.power(frames.to_gray(image), np.float32(1 / frames.NOMINAL_GAMMA))
    centre = corners.mean(axis=0)
    offsets = np.arange(-4.0, 4.01, 0.25)
    lines = []
    for i in range(4):
        a, b = corners[i], corners[(i + 1) % 4]
        along = (b - a) / np.linalg.norm(b - a)
        normal = np.array([along[1], -along[0]])
        if (0.5 * (a + b) - centre) @ normal < 0:
            normal = -normal  # pointing out of the marker, from black to paper
        t = np.linspace(0.15, 0.85, max(8, int(np.linalg.norm(b - a) / 2)))
        points = a + t[:, None] * (b - a)
        xs = (points[:, 0, None] + offsets * normal[0]).astype(np.float32)
        ys = (points[:, 1, None] + offsets * normal[1]).astype(np.float32)
        profiles = cv2.remap(light, xs, ys, cv2.INTER_LINEAR)
        edge = []
        for point, profile in zip(points, profiles, strict=True):
            half = 0.5 * (profile[:3].mean() + profile[-3:].mean())
            above = np.nonzero(profile > half)[0]
            if len(above) == 0 or above[0] == 0:
                continue
            j = above[0]  # first sample on the paper side
            v0, v1 = profile[j - 1], profile[j]
            shift = offsets[j - 1] + 0.25 * (half - v0) / max(v1 - v0, 1e-9)
            edge.append(point + shift * normal)
        if len(edge) < 4:
            return corners  # an edge too unclear to fit: keep the detector's corners
        vx, vy, x0, y0 = cv2.fitLine(np.array(edge, np.float32), cv2.DIST_L2, 0, 0.01, 0.01).ravel()
        lines.append((np.array([x0, y0], np.float64), np.array([vx, vy], np.float64)))
    refined = np.empty_like(corners)
    for i in range(4):
        (p, u), (q, v) = lines[i - 1], lines[i]  # corner i ends edge i-1 and starts edge i
        s, _ = np.linalg.solve(np.column_stack([u, -v]), q - p)
        refined[i] = p + s * u
    return refined


@dataclass(frozen=True)
class RotationFit:
    """The rigid rotation model of the corner tracks."""

    centre: np.ndarray  # (2,) pixels, in the coordinates the corners were given in
    sign: int
    corners_at_zero: np.ndarray  # (4, 2) relative to the centre, at driver 0°
    residual_px: float


def fit_rotation(angles_deg: np.ndarray, corners: np.ndarray) -> RotationFit:
    """Fit c, s and qi to corners (K, 4, 2) seen at driver angles (K,).

    Raises:
        CalibrationError: fewer than three angles, or angles spanning too little of a turn.
    """
    angles = np.asarray(angles_deg, np.float64)
    if len(angles) < 3:
        raise CalibrationError(f"the marker was found at {len(angles)} angle(s); need 3 or more")
    spread = np.ptp(np.mod(angles - angles[0] + 180.0, 360.0))
    if spread < 60.0:
        raise CalibrationError(f"the angles span only {spread:.0f}°; spread them over 60° or more")
    best: RotationFit | None = None
    n = corners.shape[1]
    for sign in (1, -1):
        rows = []
        rhs = []
        for k, angle in enumerate(angles):
            rot = turn(sign * angle)
            for i in range(n):
                for axis in range(2):
                    row = np.zeros(2 + 2 * n)
                    row[axis] = 1.0
                    row[2 + 2 * i : 4 + 2 * i] = rot[axis]
                    rows.append(row)
                    rhs.append(corners[k, i, axis])
        solution, *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
        residual = np.array(rows) @ solution - np.array(rhs)
        # per-point RMS distance: x and y residuals of a point together
        rms = float(np.sqrt(np.mean(residual**2) * 2))
        fit = RotationFit(solution[:2], sign, solution[2:].reshape(n, 2), rms)
        if best is None or fit.residual_px < best.residual_px:
            best = fit
    assert best is not None
    return best


def zero_offset_deg(corners_at_zero: np.ndarray) -> float:
    """Image angle (CCW from +x, 0..360) of the marker's x axis, from all four edges."""
    q = corners_at_zero
    x_edges = (q[1] - q[0]) + (q[2] - q[3])
    y_edges = (q[3] - q[0]) + (q[2] - q[1])
    direction = x_edges + turn(90.0) @ y_edges  # the y axis turned onto the x axis
    return float(math.degrees(math.atan2(-direction[1], direction[0])) % 360.0)


def mean_side_px(corners: np.ndarray) -> float:
    """The marker's mean side length in pixels over all frames (K, 4, 2)."""
    sides = np.linalg.norm(corners - np.roll(corners, -1, axis=1), axis=2)
    return float(sides.mean())


@dataclass
class TurntableRun:
    """What `calibrate_turntable` captured and fitted."""

    result: TurntableResult
    frames: int
    overlay: np.ndarray
    warnings: list[str]


def calibrate_turntable(
    rig: Rig,
    config: RigConfig,
    stage: Stager,
    *,
    angles: int = 12,
    marker_id: int = 7,
    marker_mm: float = 8.0,
    position_mm: tuple[float, float] = (6.0, -3.5),
    camera: StoredCalibration | None = None,
) -> TurntableRun:
    """Turn the marker through `angles` positions with the driver, fit the rotation.

    Raises:
        CalibrationError: the marker is not found often enough to fit.
        RigError: a device failed.
    """
    if angles < 3:
        raise CalibrationError(f"--angles must be 3 or more, got {angles}")
    with frames.calibrating(rig, config, stage):
        rig.lightbox.set_levels(frames.even_light(config))
        stage(
            Placement("marker", marker_id=marker_id, marker_mm=marker_mm, position_mm=position_mm)
        )
        seen_angles: list[float] = []
        seen: list[np.ndarray] = []
        warnings: list[str] = []
        last = None
        exposure: float | None = None
        for k in range(angles):
            reported = rig.turntable.move_to_deg(360.0 * k / angles)
            if exposure is None:
                exposure, frame = frames.auto_expose(rig, config, percentile=99.0, target=0.8)
            else:
                frame = rig.camera.grab()
            last = frame.image
            corners = detect_marker(frame.image, marker_id)
            if corners is None:
                warnings.append(f"marker {marker_id} not found at {reported:g}°")
                continue
            seen_angles.append(float(reported))
            seen.append(corners)
    if last is None or not seen:
        raise CalibrationError(f"marker {marker_id} was not found at any angle")
    raw = np.stack(seen)
    result = fit_turntable(
        np.array(seen_angles),
        raw,
        size=(int(last.shape[1]), int(last.shape[0])),
        marker_id=marker_id,
        marker_mm=marker_mm,
        camera=camera,
    )
    return TurntableRun(result, angles, draw_overlay(last, raw, result), warnings)


def fit_turntable(
    angles_deg: np.ndarray,
    corners: np.ndarray,
    *,
    size: tuple[int, int],
    marker_id: int,
    marker_mm: float,
    camera: StoredCalibration | None,
) -> TurntableResult:
    """Turntable result from marker corners (K, 4, 2) in raw pixels at driver angles (K,)."""
    lens: CameraResult | None = None
    if camera is not None and camera.record.result.kind == "camera":
        lens = camera.record.result
    points = corners
    if lens is not None:
        matrix, distortion = np.array(lens.camera_matrix), np.array(lens.distortion)
        points = undistort_px(corners.reshape(-1, 2), matrix, distortion).reshape(corners.shape)
    fit = fit_rotation(angles_deg, points)
    centre = fit.centre
    if lens is not None:
        centre = distort_px(centre[None], matrix, distortion)[0]
    return TurntableResult(
        width=size[0],
        height=size[1],
        centre_px=(float(centre[0]), float(centre[1])),
        rotation_sign=1 if fit.sign > 0 else -1,
        zero_offset_deg=zero_offset_deg(fit.corners_at_zero),
        px_per_mm=mean_side_px(points) / marker_mm,
        residual_px=fit.residual_px,
        angles_deg=[float(a) for a in angles_deg],
        marker_id=marker_id,
        marker_mm=marker_mm,
        camera_calibration=camera.name if lens is not None and camera is not None else None,
    )


def draw_overlay(image: np.ndarray, corners: np.ndarray, result: TurntableResult) -> np.ndarray:
    """BGR picture: the last frame, every corner seen (green), the centre and the zero direction."""
    canvas = cv2.cvtColor(frames.to_gray8(image), cv2.COLOR_GRAY2BGR)
    for corner in corners.reshape(-1, 2):
        cv2.circle(canvas, (round(corner[0]), round(corner[1])), 2, (0, 200, 0), -1, cv2.LINE_AA)
    cx, cy = result.centre_px
    centre = (round(cx), round(cy))
    radius = float(np.median(np.linalg.norm(corners.reshape(-1, 2) - [cx, cy], axis=1)))
    cv2.circle(canvas, centre, round(radius), (0, 160, 255), 1, cv2.LINE_AA)
    cv2.drawMarker(canvas, centre, (0, 0, 255), cv2.MARKER_CROSS, 16, 1)
    a = math.radians(result.zero_offset_deg)
    tip = (round(cx + 60 * math.cos(a)), round(cy - 60 * math.sin(a)))
    cv2.arrowedLine(canvas, centre, tip, (255, 128, 0), 2, cv2.LINE_AA, tipLength=0.2)
    sense = "CCW" if result.rotation_sign > 0 else "CW"
    text = f"centre ({cx:.2f}, {cy:.2f}) px, {sense}, zero {result.zero_offset_deg:.2f} deg"
    cv2.putText(canvas, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 255, 255), 1)
    return canvas
