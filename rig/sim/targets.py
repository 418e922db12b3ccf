"""Renders of the twin's calibration targets: board, marker, chrome sphere and grey card.

The scenes are rig.sim.target_scene's, ray-cast through rig.sim.target_geometry's pinhole
camera.

What coin frames do not share (so the lens a camera calibration finds is the targets' alone):
the distortion (k1 moves a point at the coin's rim ~0.25 px), a non-zero `principal_offset_px`
(default 0: it would shift targets against coins), a `rotation_sense` of -1 (coins always turn
counter-clockwise), and a finite `light_distance_mm` (default None: lights at infinity, as the
coin renderer has them; set it to give raking lights a gradient across the card).

Frames go through the same lights (the stage illumination of `radiance_view`, vignetting
included), defocus blur and sensor (`expose`) as coin frames.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache

import cv2
import numpy as np

from rig.sim.shading import WORKING_DISTANCE_MM, Optics, light_vector, radiance_view
from rig.sim.target_geometry import (
    Pinhole,
    board_frame,
    marker_frame,
    pinhole,
    pixel_rays,
    platter_axis,
    sphere_centre,
)
from rig.sim.target_scene import (
    ArucoMarker,
    CharucoBoard,
    ChromeSphere,
    GreyCard,
    TargetScene,
    TwinRig,
)
from rig.sim.world import LightState

SUPERSAMPLE = 2  # rays per pixel side; area-averaged down, as a sensor integrates
PLATTER_ALBEDO = 0.05  # the dark matte turntable of Optics.background
PAPER_ALBEDO = 0.85
INK_ALBEDO = 0.04


def _downsample(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


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
    rays = pixel_rays(camera, SUPERSAMPLE)
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
    rays = pixel_rays(camera, 1)
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
    rays = pixel_rays(camera, s)[y0 * s : y1 * s, x0 * s : x1 * s].astype(np.float64)
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


def truth_card_flat(
    lights: Mapping[str, LightState],
    width: int,
    height: int,
    optics: Optics,
    rig: TwinRig | None = None,
) -> np.ndarray:
    """The true illumination × lens fall-off (H, W, 3) a grey card shows, before the sensor."""
    return _illumination(lights, width, height, optics, rig or TwinRig())
