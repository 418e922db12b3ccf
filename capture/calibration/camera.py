"""Camera intrinsics and lens distortion from a ChArUco board (OpenCV aruco + calibrateCamera).

The board lies on the turntable, flat and on wedges; the turntable turns it to several angles so
its tilt points in every direction, and it sits off the axis so it sweeps the field. OpenCV 5
has no calibrateCameraCharuco: ChArUco corners are matched to board points with
`CharucoBoard.matchImagePoints` and fitted with `calibrateCamera`. k3 is held at zero: the
views of a narrow lens cannot tell it from k1 and k2, and fitting it anyway only adds noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from capture.calibration import frames
from capture.calibration.models import BoardSpec, CameraResult
from capture.calibration.staging import Placement, Stager
from capture.calibration.store import CalibrationError
from rig.config import RigConfig
from rig.devices import Rig

MIN_CORNERS = 12  # fewer corners than this constrain a view's pose too weakly to keep it
MIN_VIEWS = 6


@dataclass(frozen=True)
class BoardView:
    """One board placement: wedge angle, turntable angle and where the board sits."""

    wedge_deg: float
    turntable_deg: float
    position_mm: tuple[float, float] = (4.0, 0.0)


def default_views() -> list[BoardView]:
    """Flat, 20° and 35° wedges, each turned to six angles: 18 views."""
    return [
        BoardView(wedge, angle)
        for wedge in (0.0, 20.0, 35.0)
        for angle in (0.0, 60.0, 120.0, 180.0, 240.0, 300.0)
    ]


@dataclass
class Detection:
    """ChArUco corners found in one frame, as board points and image points."""

    object_points: np.ndarray  # (N, 3) float32, millimetres on the board
    image_points: np.ndarray  # (N, 2) float32, pixels
    ids: np.ndarray  # (N,) corner ids


def make_board(spec: BoardSpec) -> cv2.aruco.CharucoBoard:
    """The OpenCV board object for a spec.

    Raises:
        CalibrationError: an unknown dictionary name.
    """
    if not spec.dictionary.startswith("DICT_") or not hasattr(cv2.aruco, spec.dictionary):
        raise CalibrationError(f"unknown ArUco dictionary {spec.dictionary!r} (e.g. DICT_4X4_50)")
    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, spec.dictionary))
    return cv2.aruco.CharucoBoard(
        (spec.columns, spec.rows), spec.square_mm, spec.marker_mm, dictionary
    )


def detect_board(image: np.ndarray, board: cv2.aruco.CharucoBoard) -> Detection | None:
    """ChArUco corners in a frame, or None when fewer than MIN_CORNERS are found."""
    detector = cv2.aruco.CharucoDetector(board)
    corners, ids, _, _ = detector.detectBoard(frames.to_gray8(image))
    if ids is None or len(ids) < MIN_CORNERS:
        return None
    object_points, image_points = board.matchImagePoints(list(corners), ids)
    return Detection(
        object_points.reshape(-1, 3).astype(np.float32),
        image_points.reshape(-1, 2).astype(np.float32),
        ids.ravel(),
    )


@dataclass
class CameraFit:
    """A fitted camera model and the views it came from."""

    result: CameraResult
    detections: list[Detection]
    rvecs: list[np.ndarray]
    tvecs: list[np.ndarray]


def fit_camera(
    detections: list[Detection],
    size: tuple[int, int],
    spec: BoardSpec,
    *,
    max_rms_px: float,
) -> CameraFit:
    """Intrinsics and distortion from board detections; per-view RMS for the record.

    Raises:
        CalibrationError: too few usable views.
    """
    if len(detections) < MIN_VIEWS:
        raise CalibrationError(
            f"the board was found in {len(detections)} view(s); at least {MIN_VIEWS} are needed"
        )
    width, height = size
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    rms, matrix, distortion, rvecs, tvecs = cv2.calibrateCamera(
        [d.object_points for d in detections],
        [d.image_points for d in detections],
        (width, height),
        None,
        None,
        flags=cv2.CALIB_FIX_K3,
        criteria=criteria,
    )
    per_view = []
    for d, rvec, tvec in zip(detections, rvecs, tvecs, strict=True):
        projected, _ = cv2.projectPoints(d.object_points, rvec, tvec, matrix, distortion)
        residual = projected.reshape(-1, 2) - d.image_points
        per_view.append(float(np.sqrt(np.mean(np.sum(residual**2, axis=1)))))
    result = CameraResult(
        width=width,
        height=height,
        camera_matrix=np.asarray(matrix, float).tolist(),
        distortion=np.asarray(distortion, float).ravel()[:5].tolist(),
        rms_px=float(rms),
        max_rms_px=max_rms_px,
        per_view_rms_px=per_view,
        views_used=len(detections),
        corners_used=int(sum(len(d.ids) for d in detections)),
        board=spec,
    )
    return CameraFit(result, detections, list(rvecs), list(tvecs))


@dataclass
class CameraRun:
    """What `calibrate_camera` captured and fitted."""

    fit: CameraFit
    frames: int
    overlay: np.ndarray
    warnings: list[str]


def calibrate_camera(
    rig: Rig,
    config: RigConfig,
    stage: Stager,
    *,
    spec: BoardSpec | None = None,
    views: list[BoardView] | None = None,
    max_rms_px: float = 1.0,
) -> CameraRun:
    """Photograph the board in every view through the rig, detect it, fit the camera.

    The fit is returned whatever its RMS (it carries `max_rms_px`): the caller shows the figures
    and refuses to save a fit above the threshold, as `rig calibrate camera` does.

    Raises:
        CalibrationError: too few views with the board.
        RigError: a device failed.
    """
    spec = spec or BoardSpec()
    board = make_board(spec)
    views = views or default_views()
    with frames.calibrating(rig, config, stage):
        detections, images, warnings = _shoot_views(rig, config, stage, spec, board, views)
    if not images:
        raise CalibrationError("the ChArUco board was not found in any view")
    size = (int(images[0].shape[1]), int(images[0].shape[0]))
    fit = fit_camera(detections, size, spec, max_rms_px=max_rms_px)
    worst = int(np.argmax(fit.result.per_view_rms_px))
    overlay = draw_overlay(images[worst], fit, worst)
    return CameraRun(fit, len(views), overlay, warnings)


def _shoot_views(
    rig: Rig,
    config: RigConfig,
    stage: Stager,
    spec: BoardSpec,
    board: cv2.aruco.CharucoBoard,
    views: list[BoardView],
) -> tuple[list[Detection], list[np.ndarray], list[str]]:
    """Place, turn and photograph the board for every view; keep the frames it is found in."""
    rig.lightbox.set_levels(frames.even_light(config))
    detections: list[Detection] = []
    warnings: list[str] = []
    images: list[np.ndarray] = []
    placed: tuple[float, tuple[float, float]] | None = None
    exposure: float | None = None
    for view in views:
        if placed != (view.wedge_deg, view.position_mm):
            # the operator sets the wedge; the turntable, not the operator, turns the board
            rig.turntable.move_to_deg(0.0)
            stage(
                Placement(
                    "charuco", board=spec, wedge_deg=view.wedge_deg, position_mm=view.position_mm
                )
            )
            placed = (view.wedge_deg, view.position_mm)
        rig.turntable.move_to_deg(view.turntable_deg)
        if exposure is None:
            exposure, frame = frames.auto_expose(rig, config, percentile=99.0, target=0.8)
        else:
            frame = rig.camera.grab()
        detection = detect_board(frame.image, board)
        if detection is None:
            warnings.append(
                f"board not found at wedge {view.wedge_deg:g}°, turntable {view.turntable_deg:g}°"
            )
            continue
        detections.append(detection)
        images.append(frame.image)
    return detections, images, warnings


def draw_overlay(image: np.ndarray, fit: CameraFit, view: int) -> np.ndarray:
    """BGR picture of one view: detected corners (green), reprojected (red), errors ×20."""
    canvas = cv2.cvtColor(frames.to_gray8(image), cv2.COLOR_GRAY2BGR)
    d = fit.detections[view]
    matrix = np.array(fit.result.camera_matrix)
    distortion = np.array(fit.result.distortion)
    projected, _ = cv2.projectPoints(
        d.object_points, fit.rvecs[view], fit.tvecs[view], matrix, distortion
    )
    for seen, model in zip(d.image_points, projected.reshape(-1, 2), strict=True):
        cv2.circle(canvas, _pt(seen), 3, (0, 200, 0), 1, cv2.LINE_AA)
        tip = seen + 20 * (model - seen)
        cv2.line(canvas, _pt(seen), _pt(tip), (0, 0, 255), 1, cv2.LINE_AA)
    text = f"view {view}: {fit.result.per_view_rms_px[view]:.3f} px RMS (errors x20)"
    cv2.putText(canvas, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 255), 1)
    return canvas


def _pt(xy: np.ndarray) -> tuple[int, int]:
    return round(float(xy[0])), round(float(xy[1]))


def undistort_px(
    points: np.ndarray, camera_matrix: np.ndarray, distortion: np.ndarray
) -> np.ndarray:
    """Pixel positions with the lens distortion removed (same camera matrix), (N, 2)."""
    pts = np.asarray(points, np.float64).reshape(-1, 1, 2)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 1e-12)
    out = cv2.undistortPoints(pts, camera_matrix, distortion, P=camera_matrix, criteria=criteria)
    return out.reshape(-1, 2)


def distort_px(points: np.ndarray, camera_matrix: np.ndarray, distortion: np.ndarray) -> np.ndarray:
    """Undistorted pixel positions put back through the lens, (N, 2): undistort_px's inverse."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    inverse = np.linalg.inv(camera_matrix)
    rays = np.column_stack([pts, np.ones(len(pts))]) @ inverse.T
    projected, _ = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), camera_matrix, distortion)
    return projected.reshape(-1, 2)
