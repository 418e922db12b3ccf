"""Calibration targets for the twin: a ChArUco board, an ArUco marker, a chrome sphere, a grey card.

The coin renderer (shading.py) maps the turntable plane into the image with a scale and the
tilt homography; calibration needs more than that to be worth fitting, so targets are ray-cast
through a full pinhole camera that agrees with the coin renderer's geometry (focal length =
working distance × pixels per millimetre, camera tilted about the image x axis, optical axis
through the image centre) and adds a lens: radial distortion and, optionally, a principal-point
offset. The turntable's rotation axis is where the coin renderer puts it (`Optics.axis_offset_mm`,
from the rig config's `simulation.turntable_axis_offset_mm`): one setting for coins and targets,
so the centre a turntable calibration finds is the centre coin frames turn about. The platter's
zero mark is turned against the image, so every fit has something to find. `TwinRig` holds the
hidden values that only targets show; the `truth_*` functions give what a perfect fit would report.

What coin frames do not share (so the lens a camera calibration finds is the targets' alone):
the distortion (k1 moves a point at the coin's rim ~0.25 px), a non-zero `principal_offset_px`
(default 0: it would shift targets against coins), a `rotation_sense` of -1 (coins always turn
counter-clockwise), and a finite `light_distance_mm` (default None: lights at infinity, as the
coin renderer has them; set it to give raking lights a gradient across the card).

Frames go through the same lights (the stage illumination of `radiance_view`, vignetting
included), defocus blur and sensor (`expose`) as coin frames. Conventions (shading.py): image x
right, y down; plane coordinates in millimetres from the optical axis, x right, y down, z up
towards the camera; a positive turntable angle turns things counter-clockwise in the image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from rig.sim.shading import WORKING_DISTANCE_MM, Optics, light_vector, radiance_view
from rig.sim.world import LightState

SUPERSAMPLE = 2  # rays per pixel side; area-averaged down, as a sensor integrates
PLATTER_ALBEDO = 0.05  # the dark matte turntable of Optics.background
PAPER_ALBEDO = 0.85
INK_ALBEDO = 0.04


@dataclass(frozen=True)
class TwinRig:
    """The hidden geometry of the twin's rig: what calibration should recover."""

    zero_offset_deg: float = 17.0  # image angle of the platter's zero mark at driver 0°
    rotation_sense: int = 1  # +1: positive driver angles turn counter-clockwise in the image
    # from the image centre; coin renders have their optical axis there, so 0 keeps them aligned
    principal_offset_px: tuple[float, float] = (0.0, 0.0)
    distortion: tuple[float, float, float, float, float] = (1.2, 0.0, 0.0, 0.0, 0.0)  # OpenCV
    # directional lights this far from the plane's origin (a fall-off across the field);
    # None: at infinity, as the coin renderer has them
    light_distance_mm: float | None = None


@dataclass(frozen=True)
class CharucoBoard:
    """A printed ChArUco board lying on a wedge of `wedge_deg` on the turntable."""

    columns: int = 9
    rows: int = 7
    square_mm: float = 3.0
    marker_mm: float = 2.2
    dictionary: str = "DICT_4X4_50"
    wedge_deg: float = 0.0  # the board's top edge raised by this angle
    position_mm: tuple[float, float] = (0.0, 0.0)  # board centre on the platter
    lift_mm: float = 0.0  # height of the board centre above the platter


@dataclass(frozen=True)
class ArucoMarker:
    """A printed ArUco marker lying flat on the platter, its x axis along the platter's zero."""

    marker_id: int = 7
    size_mm: float = 8.0  # side of the black square
    dictionary: str = "DICT_4X4_50"
    position_mm: tuple[float, float] = (6.0, -3.5)  # marker centre on the platter


@dataclass(frozen=True)
class ChromeSphere:
    """A mirror ball resting on the platter."""

    diameter_mm: float = 16.0
    position_mm: tuple[float, float] = (1.0, 0.5)
    lobe_deg: float = 2.5  # angular size of an LED's mirror image (its diffuser)


@dataclass(frozen=True)
class GreyCard:
    """A uniform neutral grey card filling the view at the coin plane."""

    albedo: float = 0.45


Target = CharucoBoard | ArucoMarker | ChromeSphere | GreyCard


@dataclass(frozen=True)
class TargetScene:
    """A calibration target in the world, and the rig geometry it is seen through."""

    target: Target
    rig: TwinRig = field(default_factory=TwinRig)

    @property
    def kind(self) -> str:
        """A short name of the target, for the frame's ground truth."""
        return {
            CharucoBoard: "charuco",
            ArucoMarker: "aruco",
            ChromeSphere: "sphere",
            GreyCard: "card",
        }[type(self.target)]


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


def _rays(camera: Pinhole, supersample: int) -> np.ndarray:
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


def _downsample(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


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


# ---------------------------------------------------------------- textures


def aruco_dictionary(name: str) -> cv2.aruco.Dictionary:
    """An OpenCV predefined ArUco dictionary by name (e.g. DICT_4X4_50)."""
    return cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, name))


@lru_cache(maxsize=4)
def _board_texture(
    columns: int, rows: int, square_mm: float, marker_mm: float, dictionary: str, ppmm: float
) -> np.ndarray:
    """Albedo of the printed board, float32, `ppmm` texture pixels per millimetre."""
    board = cv2.aruco.CharucoBoard(
        (columns, rows), square_mm, marker_mm, aruco_dictionary(dictionary)
    )
    size = (round(columns * square_mm * ppmm), round(rows * square_mm * ppmm))
    printed = board.generateImage(size, marginSize=0, borderBits=1)
    return INK_ALBEDO + (PAPER_ALBEDO - INK_ALBEDO) * printed.astype(np.float32) / 255


@lru_cache(maxsize=4)
def _marker_texture(marker_id: int, dictionary: str, side_px: int) -> np.ndarray:
    """Albedo of the printed marker (black square and its bits), float32."""
    printed = cv2.aruco.generateImageMarker(
        aruco_dictionary(dictionary), marker_id, side_px, borderBits=1
    )
    return INK_ALBEDO + (PAPER_ALBEDO - INK_ALBEDO) * printed.astype(np.float32) / 255


def _planar_albedo(
    camera: Pinhole,
    texture: np.ndarray,
    texture_ppmm: float,
    frame: tuple[np.ndarray, np.ndarray, np.ndarray],
    surround: float,
    surround_mm: float,
) -> np.ndarray:
    """Albedo (H, W) of a flat printed target seen through the camera, on the dark platter.

    The print has a white margin of `surround_mm` (albedo `surround`) around its texture.
    """
    origin, u_axis, v_axis = (v.astype(np.float32) for v in frame)
    normal = np.cross(u_axis, v_axis)
    eye = camera.centre_mm.astype(np.float32)
    rays = _rays(camera, SUPERSAMPLE)
    # ray/plane intersection: centre + s·ray lies on the target plane
    s = ((origin - eye) @ normal) / (rays @ normal)
    hit = eye + s[..., None] * rays - origin
    u_mm = hit @ u_axis
    v_mm = hit @ v_axis
    # pixel centres of the texture lie at (i + 0.5) / ppmm
    map_x = (u_mm * texture_ppmm - 0.5).astype(np.float32)
    map_y = (v_mm * texture_ppmm - 0.5).astype(np.float32)
    printed = cv2.remap(
        texture,
        map_x,
        map_y,
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=surround,
    )
    height_mm = texture.shape[0] / texture_ppmm
    width_mm = texture.shape[1] / texture_ppmm
    on_paper = (
        (u_mm > -surround_mm)
        & (u_mm < width_mm + surround_mm)
        & (v_mm > -surround_mm)
        & (v_mm < height_mm + surround_mm)
    )
    albedo = np.where(on_paper, printed, np.float32(PLATTER_ALBEDO)).astype(np.float32)
    return _downsample(albedo, camera.width, camera.height)


# ---------------------------------------------------------------- rendering


def _illumination(
    lights: Mapping[str, LightState], width: int, height: int, optics: Optics, rig: TwinRig
) -> np.ndarray:
    """Light falling on a white plane (H, W, 3): the stage lighting of radiance_view, unblurred.

    With `rig.light_distance_mm` each directional light is a point that far away, so the plane
    gets its inverse-square and incidence fall-off, scaled to the infinite light's level at the
    plane's origin.
    """
    if rig.light_distance_mm is None:
        white = Optics(
            field_of_view_mm=optics.field_of_view_mm,
            background=(1.0, 1.0, 1.0),
            light_colour=optics.light_colour,
            shadows=False,
            vignetting=optics.vignetting,
            defocus=0.0,
        )
        return radiance_view(None, lights, 0.0, width, height, white)
    distance = rig.light_distance_mm
    points = _plane_points(pinhole(width, height, optics, rig))
    level = np.zeros((height, width), np.float32)
    for light in lights.values():
        if light.intensity <= 0:
            continue
        if light.diffuse or light.azimuth_deg is None or light.elevation_deg is None:
            level += light.intensity
            continue
        source = distance * np.array(light_vector(light.azimuth_deg, light.elevation_deg))
        rel = source.astype(np.float32) - points
        # irradiance ∝ cos(incidence) / r² = z / r³, relative to the plane's origin
        falloff = rel[..., 2] / np.linalg.norm(rel, axis=-1) ** 3 * distance**3 / source[2]
        level += light.intensity * math.sin(math.radians(light.elevation_deg)) * falloff
    light_rgb = np.array(optics.light_colour, np.float32)
    return (level * _vignette(width, height, optics))[..., None] * light_rgb


def _plane_points(camera: Pinhole) -> np.ndarray:
    """Plane coordinates (H, W, 3) where each pixel's central ray meets the plane z = 0."""
    rays = _rays(camera, 1)
    eye = camera.centre_mm.astype(np.float32)
    return eye + (-eye[2] / rays[..., 2])[..., None] * rays


def _vignette(width: int, height: int, optics: Optics) -> np.ndarray:
    """The lens fall-off alone (H, W), read off a white plane under a unit dome."""
    dome = {"dome": LightState(1.0, None, None, True)}
    flat = Optics(
        field_of_view_mm=optics.field_of_view_mm,
        background=(1.0, 1.0, 1.0),
        light_colour=(1.0, 1.0, 1.0),
        shadows=False,
        vignetting=optics.vignetting,
        defocus=0.0,
    )
    return radiance_view(None, dome, 0.0, width, height, flat)[..., 0]


def _sphere_radiance(
    sphere: ChromeSphere,
    scene: TargetScene,
    camera: Pinhole,
    lights: Mapping[str, LightState],
    turntable_deg: float,
    optics: Optics,
) -> np.ndarray:
    """Radiance (H, W, 3) of a chrome ball on the lit platter, vignetting included."""
    centre = sphere_centre(sphere, scene.rig, turntable_deg, axis_mm=platter_axis(optics))
    radius = sphere.diameter_mm / 2
    s = SUPERSAMPLE
    # only rays near the ball are traced: the box around its projection, with room for the lens
    cx, cy = camera.project(centre[None])[0]
    reach = camera.camera_matrix[0, 0] * radius / (WORKING_DISTANCE_MM - radius) * 1.1 + 6
    x0, x1 = (int(np.clip(v, 0, camera.width)) for v in (cx - reach, cx + reach + 1))
    y0, y1 = (int(np.clip(v, 0, camera.height)) for v in (cy - reach, cy + reach + 1))
    rays = _rays(camera, s)[y0 * s : y1 * s, x0 * s : x1 * s].astype(np.float64)
    to_centre = camera.centre_mm - centre
    b = rays @ to_centre
    disc = b * b - (to_centre @ to_centre - radius * radius)
    inside = disc > 0
    depth = -b - np.sqrt(np.where(inside, disc, 0.0))
    normal = (camera.centre_mm + depth[..., None] * rays - centre) / radius
    # the mirror direction: where the ray goes after bouncing off the ball
    mirror = rays - 2 * np.sum(rays * normal, axis=-1, keepdims=True) * normal
    sigma = math.radians(sphere.lobe_deg)
    glint = np.zeros(rays.shape[:2], np.float64)
    ambient = 0.0
    dome = 0.0
    for light in lights.values():
        if light.intensity <= 0:
            continue
        if light.diffuse or light.azimuth_deg is None or light.elevation_deg is None:
            dome += light.intensity
            continue
        direction = np.array(light_vector(light.azimuth_deg, light.elevation_deg))
        glint += light.intensity * 6.0 * np.exp((mirror @ direction - 1.0) / (sigma * sigma))
        ambient += light.intensity
    # chrome reflects ~60 %: the LEDs' mirror images, the lit box interior, the dome above
    sky = np.clip(mirror[..., 2], 0.0, 1.0)
    ball = np.where(inside, 0.6 * (glint + 0.05 * ambient + dome * (0.25 + 0.5 * sky)), 0.0)
    box = (x1 - x0, y1 - y0)
    cover = cv2.resize(inside.astype(np.float32), box, interpolation=cv2.INTER_AREA)
    shine = cv2.resize(ball.astype(np.float32), box, interpolation=cv2.INTER_AREA)
    # the platter is lit as the stage is; the ball covers part of it
    radiance = PLATTER_ALBEDO * _illumination(
        lights, camera.width, camera.height, optics, scene.rig
    )
    vignette = _vignette(camera.width, camera.height, optics)[y0:y1, x0:x1]
    light_rgb = np.array(optics.light_colour, np.float32)
    patch = radiance[y0:y1, x0:x1]
    patch *= (1.0 - cover)[..., None]
    patch += (shine * vignette)[..., None] * light_rgb
    return radiance


def _printed_albedo(
    target: CharucoBoard | ArucoMarker | GreyCard,
    rig: TwinRig,
    camera: Pinhole,
    turntable_deg: float,
    axis_mm: tuple[float, float],
) -> np.ndarray:
    """Albedo (H, W) of a flat printed target as the camera sees it."""
    if isinstance(target, GreyCard):
        return np.full((camera.height, camera.width), target.albedo, np.float32)
    if isinstance(target, CharucoBoard):
        ppmm = 40.0  # ~3 texture pixels per image pixel: sharp edges after supersampling
        texture = _board_texture(
            target.columns,
            target.rows,
            target.square_mm,
            target.marker_mm,
            target.dictionary,
            ppmm,
        )
        frame = board_frame(target, rig, turntable_deg, axis_mm=axis_mm)
        return _planar_albedo(camera, texture, ppmm, frame, PAPER_ALBEDO, 2.0)
    side_px = 480
    texture = _marker_texture(target.marker_id, target.dictionary, side_px)
    frame = marker_frame(target, rig, turntable_deg, axis_mm=axis_mm)
    return _planar_albedo(camera, texture, side_px / target.size_mm, frame, PAPER_ALBEDO, 1.5)


def target_radiance(
    scene: TargetScene,
    lights: Mapping[str, LightState],
    turntable_deg: float,
    width: int,
    height: int,
    optics: Optics,
) -> np.ndarray:
    """Noise-free image radiance (H, W, 3) of a calibration target, like radiance_view's."""
    camera = pinhole(width, height, optics, scene.rig)
    target = scene.target
    if isinstance(target, ChromeSphere):
        radiance = _sphere_radiance(target, scene, camera, lights, turntable_deg, optics)
    else:
        albedo = _printed_albedo(target, scene.rig, camera, turntable_deg, platter_axis(optics))
        radiance = albedo[..., None] * _illumination(lights, width, height, optics, scene.rig)
    sigma = optics.defocus * width
    if sigma > 0.25:
        radiance = cv2.GaussianBlur(radiance, (0, 0), sigma)
    return radiance


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


def truth_card_flat(
    lights: Mapping[str, LightState],
    width: int,
    height: int,
    optics: Optics,
    rig: TwinRig | None = None,
) -> np.ndarray:
    """The true illumination × lens fall-off (H, W, 3) a grey card shows, before the sensor."""
    return _illumination(lights, width, height, optics, rig or TwinRig())
