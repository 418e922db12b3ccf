"""The twin's pinhole camera and where calibration targets lie on the turntable.

The coin renderer (shading.py) maps the turntable plane into the image with a scale and the
tilt homography; calibration needs more than that to be worth fitting, so targets are ray-cast
through a full pinhole camera that agrees with the coin renderer's geometry (focal length =
working distance × pixels per millimetre, camera tilted about the image x axis, optical axis
through the image centre) and adds a lens: radial distortion and, optionally, a principal-point
offset. The turntable's rotation axis is where the coin renderer puts it (`Optics.axis_offset_mm`,
from the rig config's `simulation.turntable_axis_offset_mm`): one setting for coins and targets,
so the centre a turntable calibration finds is the centre coin frames turn about. The platter's
zero mark is turned against the image, so every fit has something to find. The `truth_*`
functions give what a perfect fit would report.

Conventions (shading.py): image x right, y down; plane coordinates in millimetres from the
optical axis, x right, y down, z up towards the camera; a positive turntable angle turns things
counter-clockwise in the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from rig.sim.shading import WORKING_DISTANCE_MM, Optics
from rig.sim.target_scene import ArucoMarker, CharucoBoard, ChromeSphere, TwinRig

# ---------------------------------------------------------------- the pinhole camera


@dataclass(frozen=True)
class Pinhole:
    """The twin's camera as a pinhole with a lens: intrinsics, distortion and its pose."""

    width: int
    height: int
    camera_matrix: np.ndarray  # 3×3
    distortion: np.ndarray  # (5,) k1 k2 p1 p2 k3
    rotation: np.ndarray  # 3×3, plane → camera (rows: camera x, y, forward)
    centre_mm: np.ndarray  # camera centre in plane coordinates

    def project(self, points_mm: np.ndarray) -> np.ndarray:
        """Image pixels (N, 2) of plane-coordinate points (N, 3), lens distortion included."""
        cam = (points_mm - self.centre_mm) @ self.rotation.T
        rvec = np.zeros(3)
        tvec = np.zeros(3)
        pixels, _ = cv2.projectPoints(cam, rvec, tvec, self.camera_matrix, self.distortion)
        return pixels.reshape(-1, 2)


def pinhole(width: int, height: int, optics: Optics, rig: TwinRig) -> Pinhole:
    """The camera that sees what shading.view_transform maps, plus the twin's lens."""
    d = WORKING_DISTANCE_MM
    focal = d * width / optics.field_of_view_mm
    cx = width / 2 - 0.5 + rig.principal_offset_px[0]
    cy = height / 2 - 0.5 + rig.principal_offset_px[1]
    matrix = np.array([[focal, 0, cx], [0, focal, cy], [0, 0, 1]], np.float64)
    # same camera placement as shading._tilt_homography: tilted about x, looking at the origin
    t = math.radians(optics.tilt_deg)
    centre = np.array([0.0, d * math.sin(t), d * math.cos(t)])
    forward = -centre / d
    x_axis = np.array([1.0, 0.0, 0.0])
    y_axis = np.cross(x_axis, forward)
    rotation = np.stack([x_axis, y_axis, forward])
    return Pinhole(width, height, matrix, np.array(rig.distortion, np.float64), rotation, centre)


def pixel_rays(camera: Pinhole, supersample: int) -> np.ndarray:
    """Unit ray directions (h·s, w·s, 3) in plane coordinates through each sub-pixel (cached)."""
    return _rays_for(
        camera.width,
        camera.height,
        supersample,
        tuple(camera.camera_matrix.ravel()),
        tuple(camera.distortion.ravel()),
        tuple(camera.rotation.ravel()),
    )


@lru_cache(maxsize=4)
def _rays_for(
    width: int,
    height: int,
    supersample: int,
    matrix: tuple[float, ...],
    distortion: tuple[float, ...],
    rotation: tuple[float, ...],
) -> np.ndarray:
    normalized = _normalized_grid(width, height, supersample, matrix, distortion)
    turn = np.array(rotation, np.float32).reshape(3, 3)
    rays = normalized @ turn  # camera → plane (the rotation is orthonormal)
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    rays.flags.writeable = False  # shared between frames
    return rays


@lru_cache(maxsize=8)
def _normalized_grid(
    width: int,
    height: int,
    supersample: int,
    matrix: tuple[float, ...],
    distortion: tuple[float, ...],
) -> np.ndarray:
    """Undistorted camera-frame directions (x, y, 1) of every sub-pixel centre (cached)."""
    s = supersample
    xs = (np.arange(width * s) + 0.5) / s - 0.5
    ys = (np.arange(height * s) + 0.5) / s - 0.5
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 1, 2)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 1e-12)
    undistorted = cv2.undistortPoints(
        grid, np.array(matrix).reshape(3, 3), np.array(distortion), criteria=criteria
    ).reshape(height * s, width * s, 2)
    ones = np.ones((*undistorted.shape[:2], 1))
    # float32 keeps ray casting fast; its error (1e-7 of 250 mm) is far below a texture pixel
    return np.concatenate([undistorted, ones], axis=-1).astype(np.float32)


# ---------------------------------------------------------------- target poses


def _platter_rotation_deg(rig: TwinRig, turntable_deg: float) -> float:
    """Image angle (CCW) of the platter's zero mark at a driver angle."""
    return rig.zero_offset_deg + rig.rotation_sense * turntable_deg


def _on_platter(
    rig: TwinRig, axis_mm: tuple[float, float], turntable_deg: float, xy_mm: tuple[float, float]
) -> np.ndarray:
    """Plane coordinates (x, y) of a point given in platter coordinates."""
    turn = _turn(_platter_rotation_deg(rig, turntable_deg))
    return np.asarray(axis_mm, np.float64) + turn @ np.asarray(xy_mm)


def _turn(angle_deg: float) -> np.ndarray:
    """2×2 matrix turning (x right, y down) vectors counter-clockwise on screen."""
    a = math.radians(angle_deg)
    return np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])


def platter_axis(optics: Optics) -> tuple[float, float]:
    """Plane coordinates (x, y) of the turntable's rotation axis: the one coins turn about too."""
    x, y = optics.axis_offset_mm
    return float(x), float(y)


def board_frame(
    board: CharucoBoard, rig: TwinRig, turntable_deg: float, *, axis_mm: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plane coordinates of the board's origin (its top-left corner) and unit axes u, v."""
    turn = _turn(_platter_rotation_deg(rig, turntable_deg))
    w = math.radians(board.wedge_deg)
    # on the wedge the board's v axis (down the board) climbs down towards the platter
    u_axis = np.array([*(turn @ np.array([1.0, 0.0])), 0.0])
    v_flat = turn @ np.array([0.0, math.cos(w)])
    v_axis = np.array([*v_flat, -math.sin(w)])
    centre_xy = _on_platter(rig, axis_mm, turntable_deg, board.position_mm)
    centre = np.array([*centre_xy, board.lift_mm])
    half_u = board.columns * board.square_mm / 2
    half_v = board.rows * board.square_mm / 2
    origin = centre - half_u * u_axis - half_v * v_axis
    return origin, u_axis, v_axis


def marker_frame(
    marker: ArucoMarker, rig: TwinRig, turntable_deg: float, *, axis_mm: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plane coordinates of the marker's top-left corner and unit axes u, v."""
    turn = _turn(_platter_rotation_deg(rig, turntable_deg))
    u_axis = np.array([*(turn @ np.array([1.0, 0.0])), 0.0])
    v_axis = np.array([*(turn @ np.array([0.0, 1.0])), 0.0])
    centre = np.array([*_on_platter(rig, axis_mm, turntable_deg, marker.position_mm), 0.0])
    origin = centre - marker.size_mm / 2 * (u_axis + v_axis)
    return origin, u_axis, v_axis


def sphere_centre(
    sphere: ChromeSphere, rig: TwinRig, turntable_deg: float, *, axis_mm: tuple[float, float]
) -> np.ndarray:
    """Plane coordinates of the sphere's centre."""
    radius = sphere.diameter_mm / 2
    return np.array([*_on_platter(rig, axis_mm, turntable_deg, sphere.position_mm), radius])


# ---------------------------------------------------------------- ground truth


def truth_intrinsics(
    width: int, height: int, optics: Optics, rig: TwinRig
) -> tuple[np.ndarray, np.ndarray]:
    """The true camera matrix and distortion coefficients of target renders."""
    camera = pinhole(width, height, optics, rig)
    return camera.camera_matrix.copy(), camera.distortion.copy()


def truth_turntable(width: int, height: int, optics: Optics, rig: TwinRig) -> dict[str, float]:
    """Where the turntable axis appears (pixels, lens included), its sense, zero and scale.

    The axis is `optics.axis_offset_mm`, as the coin renderer has it.
    """
    camera = pinhole(width, height, optics, rig)
    axis = np.array([[*platter_axis(optics), 0.0]])
    cx, cy = camera.project(axis)[0]
    return {
        "centre_x_px": float(cx),
        "centre_y_px": float(cy),
        "rotation_sign": float(rig.rotation_sense),
        "zero_offset_deg": float(rig.zero_offset_deg % 360.0),
        "px_per_mm": float(camera.camera_matrix[0, 0] / WORKING_DISTANCE_MM),
    }
