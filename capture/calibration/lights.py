"""Light directions from a chrome sphere: each channel lit alone, its highlight gives its direction.

The sphere's outline is found first (all channels on): subpixel edge points along rays from a
rough centre. With a camera calibration the edge points become viewing rays, and the outline is
a cone around the ray to the sphere's centre: r·w = 1 for every edge ray r is linear in w, whose
direction is the centre's and whose length gives the cone's half-angle, hence the distance from
the sphere's known diameter. Each highlight pixel's viewing ray is then intersected with the
sphere and mirrored about the normal; the intensity-weighted mean mirror direction is the
light's. Without a camera calibration the view is taken as orthographic (a circle fit and a
straight-down view), which is off by the angle the sphere subtends (~1-2° at 250 mm).
Directions are reported as the lightbox config gives them: azimuth 0° from image +x, 90° from
the image top, elevation 0° grazing, 90° straight down (the camera at tilt 0°).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from capture.calibration import frames
from capture.calibration.camera import undistort_px
from capture.calibration.models import CameraResult, ChannelResult, LightsResult
from capture.calibration.staging import Placement, Stager
from capture.calibration.store import CalibrationError, StoredCalibration
from rig.config import RigConfig
from rig.devices import Rig

EDGE_RAYS = 180


@dataclass(frozen=True)
class Circle:
    """A circle in image pixels."""

    x: float
    y: float
    r: float


def rough_circle(gray: np.ndarray) -> Circle:
    """The largest bright blob's enclosing circle (Otsu threshold).

    Raises:
        CalibrationError: nothing round enough to be the sphere.
    """
    image = cv2.GaussianBlur(np.clip(gray * 255, 0, 255).astype(np.uint8), (5, 5), 0)
    _, mask = cv2.threshold(image, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8), iterations=2)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        raise CalibrationError("no sphere found: the image has no bright blob")
    contour = max(contours, key=cv2.contourArea)
    (x, y), r = cv2.minEnclosingCircle(contour)
    if r < 8 or cv2.contourArea(contour) < 0.6 * math.pi * r * r:
        raise CalibrationError("no sphere found: the largest blob is not round")
    return Circle(float(x), float(y), float(r))


def edge_points(gray: np.ndarray, rough: Circle) -> np.ndarray:
    """Subpixel outline points (N, 2): the outermost half-level crossing along each ray."""
    step = 0.25
    radii = np.arange(0.7 * rough.r, 1.3 * rough.r, step)
    angles = np.linspace(0, 2 * math.pi, EDGE_RAYS, endpoint=False)
    xs = (rough.x + np.cos(angles)[:, None] * radii[None]).astype(np.float32)
    ys = (rough.y + np.sin(angles)[:, None] * radii[None]).astype(np.float32)
    profiles = cv2.remap(gray.astype(np.float32), xs, ys, cv2.INTER_LINEAR)
    inside = np.median(profiles[:, radii < 0.85 * rough.r])
    outside = np.median(profiles[:, radii > 1.15 * rough.r])
    if inside < 1.15 * outside + 0.02:
        # a lens's fall-off alone makes a bright round middle; a sphere stands out clearly
        raise CalibrationError("no sphere found: nothing stands out from the background")
    half = 0.5 * (inside + outside)
    points = []
    for a, profile in zip(angles, profiles, strict=True):
        above = np.nonzero(profile > half)[0]
        if len(above) == 0 or above[-1] + 1 >= len(profile):
            continue
        j = above[-1]  # last sample inside the sphere along this ray
        v0, v1 = profile[j], profile[j + 1]
        r = radii[j] + step * (v0 - half) / max(v0 - v1, 1e-9)
        points.append((rough.x + r * math.cos(a), rough.y + r * math.sin(a)))
    if len(points) < EDGE_RAYS // 2:
        raise CalibrationError("the sphere's outline is unclear (too few edge points)")
    return np.array(points)


def fit_circle(points: np.ndarray) -> Circle:
    """Least-squares circle (Kåsa) with one pass of outlier rejection."""

    def solve(p: np.ndarray) -> Circle:
        a = np.column_stack([2 * p[:, 0], 2 * p[:, 1], np.ones(len(p))])
        b = (p**2).sum(axis=1)
        (x, y, c), *_ = np.linalg.lstsq(a, b, rcond=None)
        return Circle(float(x), float(y), float(math.sqrt(c + x * x + y * y)))

    circle = solve(points)
    distance = np.abs(np.hypot(points[:, 0] - circle.x, points[:, 1] - circle.y) - circle.r)
    keep = distance < max(3 * float(np.median(distance)) * 1.4826, 0.2)
    return solve(points[keep]) if keep.sum() >= 10 else circle


class SphereModel:
    """The sphere in front of the camera: viewing rays, surface points, mirror directions."""

    def __init__(self, edges: np.ndarray, diameter_mm: float, camera: CameraResult | None) -> None:
        self.camera = camera
        self.circle = fit_circle(edges)  # raw pixels: where to look for highlights
        if camera is None:
            self.centre = np.zeros(3)
            self.radius = 1.0
            return
        rays = self.rays(edges)
        w, *_ = np.linalg.lstsq(rays, np.ones(len(rays)), rcond=None)
        cos_half = 1.0 / float(np.linalg.norm(w))
        distance = diameter_mm / 2 / math.sqrt(max(1e-12, 1 - cos_half**2))
        self.centre = distance * w / np.linalg.norm(w)
        self.radius = diameter_mm / 2

    def _undistorted(self, points: np.ndarray) -> np.ndarray:
        assert self.camera is not None
        matrix = np.array(self.camera.camera_matrix)
        return undistort_px(points, matrix, np.array(self.camera.distortion))

    def rays(self, pixels: np.ndarray) -> np.ndarray:
        """Unit viewing rays (N, 3) in camera axes (x right, y down, z forward)."""
        if self.camera is None:
            return np.tile([0.0, 0.0, 1.0], (len(pixels), 1))
        matrix = np.array(self.camera.camera_matrix)
        flat = self._undistorted(pixels)
        rays = np.column_stack([flat, np.ones(len(flat))]) @ np.linalg.inv(matrix).T
        return rays / np.linalg.norm(rays, axis=1, keepdims=True)

    def mirror(self, pixels: np.ndarray) -> np.ndarray:
        """Unit directions (N, 3, camera axes) that each pixel's ray takes after the sphere."""
        rays = self.rays(pixels)
        if self.camera is None:
            dx = (pixels[:, 0] - self.circle.x) / self.circle.r
            dy = (pixels[:, 1] - self.circle.y) / self.circle.r
            dz = -np.sqrt(np.clip(1 - dx * dx - dy * dy, 0.0, 1.0))
            normals = np.column_stack([dx, dy, dz])
        else:
            b = rays @ self.centre
            disc = b * b - (self.centre @ self.centre - self.radius**2)
            t = b - np.sqrt(np.clip(disc, 0.0, None))
            normals = (t[:, None] * rays - self.centre) / self.radius
        return rays - 2 * np.sum(rays * normals, axis=1, keepdims=True) * normals


def light_direction(image: np.ndarray, model: SphereModel) -> tuple[np.ndarray, np.ndarray]:
    """Unit light vector (lightbox axes: x right, y down, z up) and the highlight's pixel.

    Raises:
        CalibrationError: no highlight on the sphere.
    """
    gray = frames.to_gray(image)
    c = model.circle
    ys, xs = np.mgrid[0 : gray.shape[0], 0 : gray.shape[1]]
    on_ball = np.hypot(xs - c.x, ys - c.y) < 0.97 * c.r
    values = np.where(on_ball, gray, 0.0)
    peak = float(values.max())
    background = float(np.median(gray[on_ball]))
    if peak - background < 0.1:
        raise CalibrationError("no highlight on the sphere (is the channel lit and visible?)")
    threshold = background + 0.3 * (peak - background)
    mask = (values > threshold).astype(np.uint8)
    _, labels = cv2.connectedComponents(mask)
    py, px = np.unravel_index(int(np.argmax(values)), values.shape)
    blob = labels == labels[py, px]
    weights = (values - threshold)[blob]
    pixels = np.column_stack([xs[blob], ys[blob]]).astype(np.float64)
    mirror = model.mirror(pixels)
    mean = (weights[:, None] * mirror).sum(axis=0)
    mean /= np.linalg.norm(mean)
    centroid = (weights[:, None] * pixels).sum(axis=0) / weights.sum()
    # camera z looks away from the camera; the lightbox's z points up at it
    return np.array([mean[0], mean[1], -mean[2]]), centroid


def to_angles(vector: np.ndarray) -> tuple[float, float]:
    """(azimuth, elevation) in degrees of a unit light vector in lightbox axes."""
    azimuth = math.degrees(math.atan2(-vector[1], vector[0])) % 360.0
    elevation = math.degrees(math.asin(float(np.clip(vector[2], -1.0, 1.0))))
    return azimuth, elevation


def from_angles(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Unit light vector of an (azimuth, elevation) pair (the config's convention)."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return np.array([math.cos(el) * math.cos(az), -math.cos(el) * math.sin(az), math.sin(el)])


@dataclass
class LightsRun:
    """What `calibrate_lights` captured and fitted."""

    result: LightsResult
    frames: int
    overlay: np.ndarray
    warnings: list[str]


def calibrate_lights(
    rig: Rig,
    config: RigConfig,
    stage: Stager,
    *,
    tolerance_deg: float = 2.0,
    sphere_mm: float = 16.0,
    position_mm: tuple[float, float] = (1.0, 0.5),
    camera: StoredCalibration | None = None,
) -> LightsRun:
    """Photograph the sphere under each directional channel alone and measure its direction.

    Raises:
        CalibrationError: no sphere, or a channel without a highlight.
        RigError: a device failed.
    """
    names = frames.directional_channels(config)
    if not names:
        raise CalibrationError("the lightbox has no directional channel to calibrate")
    lens = camera.record.result if camera is not None else None
    lens = lens if isinstance(lens, CameraResult) else None
    with frames.calibrating(rig, config, stage):
        stage(Placement("sphere", sphere_mm=sphere_mm, position_mm=position_mm))
        rig.lightbox.set_levels(dict.fromkeys((c.name for c in config.lightbox.channels), 1.0))
        _, outline = frames.auto_expose(rig, config, percentile=90.0, target=0.6)
        gray = frames.to_gray(outline.image)
        model = SphereModel(edge_points(gray, rough_circle(gray)), sphere_mm, lens)
        channels: list[ChannelResult] = []
        warnings: list[str] = []
        taken = 1
        ball = _ball_mask(gray.shape, model.circle)
        highlights: list[tuple[str, np.ndarray, bool]] = []
        for name in names:
            rig.lightbox.set_levels({name: 1.0})
            # the highlight must not clip: a clipped peak is flat and its centre ill-defined
            _, frame = frames.auto_expose(rig, config, percentile=100.0, target=0.8, mask=ball)
            taken += 1
            channel = _measure(frame.image, model, config, name, tolerance_deg, warnings)
            channels.append(channel)
            highlights.append((name, np.array(channel.highlight_px), channel.within_tolerance))
    result = LightsResult(
        channels=channels,
        tolerance_deg=tolerance_deg,
        sphere_centre_px=(model.circle.x, model.circle.y),
        sphere_radius_px=model.circle.r,
        sphere_diameter_mm=sphere_mm,
        camera_calibration=camera.name if lens is not None and camera is not None else None,
    )
    return LightsRun(result, taken, draw_overlay(outline.image, model.circle, highlights), warnings)


def _measure(
    image: np.ndarray,
    model: SphereModel,
    config: RigConfig,
    name: str,
    tolerance_deg: float,
    warnings: list[str],
) -> ChannelResult:
    """One channel's measured direction against its configured one (a warning if too far)."""
    vector, pixel = light_direction(image, model)
    azimuth, elevation = to_angles(vector)
    channel = config.lightbox.channel(name)
    assert channel.azimuth_deg is not None and channel.elevation_deg is not None
    expected = from_angles(channel.azimuth_deg, channel.elevation_deg)
    error = math.degrees(math.acos(float(np.clip(vector @ expected, -1.0, 1.0))))
    if error > tolerance_deg:
        warnings.append(
            f"light {name}: measured azimuth {azimuth:.1f}°, elevation {elevation:.1f}° is "
            f"{error:.1f}° from the configured {channel.azimuth_deg:g}°/"
            f"{channel.elevation_deg:g}° (tolerance {tolerance_deg:g}°)"
        )
    return ChannelResult(
        name=name,
        azimuth_deg=azimuth,
        elevation_deg=elevation,
        configured_azimuth_deg=channel.azimuth_deg,
        configured_elevation_deg=channel.elevation_deg,
        error_deg=error,
        within_tolerance=error <= tolerance_deg,
        highlight_px=(float(pixel[0]), float(pixel[1])),
    )


def _ball_mask(shape: tuple[int, ...], circle: Circle) -> np.ndarray:
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.asarray(np.hypot(xs - circle.x, ys - circle.y) < 0.97 * circle.r)


def draw_overlay(
    image: np.ndarray, circle: Circle, highlights: list[tuple[str, np.ndarray, bool]]
) -> np.ndarray:
    """BGR picture: the sphere's fitted outline and each channel's highlight, named."""
    canvas = cv2.cvtColor(frames.to_gray8(image), cv2.COLOR_GRAY2BGR)
    centre = (round(circle.x), round(circle.y))
    cv2.circle(canvas, centre, round(circle.r), (0, 160, 255), 1, cv2.LINE_AA)
    cv2.drawMarker(canvas, centre, (0, 0, 255), cv2.MARKER_CROSS, 12, 1)
    for name, pixel, ok in highlights:
        colour = (0, 200, 0) if ok else (0, 0, 255)
        point = (round(pixel[0]), round(pixel[1]))
        cv2.circle(canvas, point, 5, colour, 1, cv2.LINE_AA)
        cv2.putText(
            canvas, name, (point[0] + 7, point[1] - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1
        )
    return canvas
