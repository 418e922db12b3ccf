"""Where the arms can reach, as their firmware decides it: the host's copy of the firmware's math.

- uArm Swift Pro: `Source code/uarm_coord_convert.c` of uArm-Developer/SwiftProForArduino turns
  the tool point into the arm's joint angles (`coord_effect2arm`, `coord_to_angle`) and refuses the
  move (`E22`) unless `is_angle_legal` accepts them. Link lengths and angle limits are that
  file's defaults (the Swift Pro build); the tool offsets are the suction cup's (work mode 0,
  `DEFAULT_NORMAL_FRONT` / `DEFAULT_NORMAL_HEIGHT` in uarm_common.h).
- Rotrics DexArm: `dexarm.cpp dexarm_position_is_reachable` checks Z against ZMINARM/ZMAXARM, Y
  against 0 and the horizontal reach against the ARMLIMIT table of `dexarm_position_reachable.h`
  (one min/max pair per 2 mm of height), the front module's offset taken off first.

The functions work in the arm's own frame (`rig.arm.codec.to_native`); `refusal` takes a rig-frame
pose, as the driver sends it. The emulators (rig.sim.arm_uarm, rig.sim.arm_dexarm) refuse moves
with these functions, and the capture layer checks a whole layout with `refusal` before a session
sends a byte (capture.kinematics.reach_problems): an unreachable pose is found at the dry run,
not halfway through a tray with a coin on the cup.
"""

from __future__ import annotations

import math
import struct

from rig.arm import codec
from rig.config import Pose

XYZ = tuple[float, float, float]

# uarm_coord_convert.c (default build: the Swift Pro)
UARM_ARM_A_MM = 142.07  # lower arm
UARM_ARM_B_MM = 158.81  # upper arm
UARM_Z_BASIC_MM = 107.4
UARM_CENTER_TO_ORIGIN_MM = 13.2
UARM_ARMA_DEG = (0.0, 135.6)
UARM_ARMB_DEG = (0.0, 119.9)
UARM_BASE_DEG = (-90.0, 90.0)
UARM_ARMA_ARMB_DEG = (10.0, 151.0)
#: uarm_coord_convert.h RAD_TO_DEG
UARM_RAD_TO_DEG = 57.29578
# uarm_common.h: work mode 0 (suction cup)
UARM_FRONT_OFFSET_MM = 56.65
UARM_HEIGHT_OFFSET_MM = 74.55


def _float32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


def _base_angle_rad(x: float, y: float) -> float:
    # coord_effect2arm / coord_to_angle: x == 0 is +-90 degrees, x < 0 "cann't arrive" (NaN).
    # `float anglec = 90 / RAD_TO_DEG` rounds to a hair over pi/2, so the cup offset nudges a
    # point on x = 0 to x > 0 (legal); in double precision it would land below (NaN)
    if x == 0:
        return _float32((90.0 if y > 0 else -90.0) / UARM_RAD_TO_DEG)
    if x < 0:
        return math.nan
    return math.atan(y / x)


def uarm_joint_angles(xyz: XYZ) -> tuple[float, float, float]:
    """Lower-arm, upper-arm and base angles (degrees) for a tool point; NaN where none exists."""
    x, y, z = xyz
    base = _base_angle_rad(x, y)
    if math.isnan(base):
        return (math.nan, math.nan, math.nan)
    # coord_effect2arm: from the suction cup's tip back to the wrist
    x -= UARM_FRONT_OFFSET_MM * math.cos(base)
    y -= UARM_FRONT_OFFSET_MM * math.sin(base)
    z += UARM_HEIGHT_OFFSET_MM
    stretch = math.hypot(x, y) - UARM_CENTER_TO_ORIGIN_MM
    height = z - UARM_Z_BASIC_MM
    a2, b2 = UARM_ARM_A_MM**2, UARM_ARM_B_MM**2
    xx = stretch * stretch + height * height
    try:
        xxx = a2 - b2 + xx
        rad_a = math.acos(
            (stretch * xxx - height * math.sqrt(4.0 * a2 * xx - xxx * xxx))
            / (xx * 2.0 * UARM_ARM_A_MM)
        )
        xxx = b2 - a2 + xx
        rad_b = math.acos(
            (stretch * xxx + height * math.sqrt(4.0 * b2 * xx - xxx * xxx))
            / (xx * 2.0 * UARM_ARM_B_MM)
        )
    except (ValueError, ZeroDivisionError):  # the C code gets NaN out of sqrt/acos here
        return (math.nan, math.nan, math.nan)
    angle_a, angle_b = rad_a * UARM_RAD_TO_DEG, rad_b * UARM_RAD_TO_DEG
    if height > UARM_ARM_A_MM * math.sin(angle_a / UARM_RAD_TO_DEG):
        angle_b = -angle_b
    # coord_to_angle takes the base angle again, from the wrist point
    return (angle_a, angle_b, _base_angle_rad(x, y) * UARM_RAD_TO_DEG)


def uarm_reachable(xyz: XYZ) -> bool:
    """Whether the uArm accepts a move to this tool point (`is_angle_legal`)."""
    a, b, c = uarm_joint_angles(xyz)
    if any(math.isnan(v) for v in (a, b, c)):
        return False
    return (
        UARM_ARMA_DEG[0] <= a <= UARM_ARMA_DEG[1]
        and UARM_ARMB_DEG[0] <= b <= UARM_ARMB_DEG[1]
        and UARM_ARMA_ARMB_DEG[0] <= 180.0 - a - b <= UARM_ARMA_ARMB_DEG[1]
        and UARM_BASE_DEG[0] <= c <= UARM_BASE_DEG[1]
    )


# dexarm_position_reachable.h and dexarm_position_config.h
DEXARM_Z_MM = (-127.0, 167.0)  # ZMINARM, ZMAXARM
DEXARM_OFFSET_ROT_MM = 12.5
DEXARM_PUMP_MODULE_OFFSET_MM = 105.0
DEXARM_PEN_MODULE_OFFSET_MM = 101.5
#: (max, min) horizontal reach past the module offset, one pair per 2 mm from z = -127 mm
DEXARM_ARMLIMIT: tuple[tuple[float, float], ...] = (
    (229.8, 125.8), (232.9, 125.5), (235.9, 125.2), (238.7, 124.9), (241.3, 124.5),
    (243.9, 124.1), (246.3, 123.6), (248.6, 123.2), (250.9, 122.7), (253.0, 122.1),
    (255.1, 121.6), (257.1, 121.0), (259.0, 120.4), (260.9, 119.7), (262.7, 119.0),
    (264.4, 118.3), (266.1, 117.6), (267.7, 116.8), (269.2, 116.0), (270.7, 115.1),
    (272.2, 114.3), (273.6, 113.4), (274.9, 112.4), (276.2, 111.4), (277.5, 110.4),
    (278.7, 109.3), (279.9, 108.2), (281.0, 107.1), (282.1, 105.9), (283.2, 104.7),
    (284.2, 103.4), (285.2, 102.1), (286.1, 100.8), (287.0, 99.4), (287.9, 97.9),
    (288.7, 96.4), (289.6, 94.8), (290.3, 93.2), (291.1, 91.5), (291.8, 89.8),
    (292.4, 88.0), (293.1, 86.1), (293.7, 84.2), (294.3, 82.2), (294.8, 80.1),
    (295.4, 77.9), (295.9, 75.7), (296.3, 73.3), (296.8, 70.9), (297.2, 70.9),
    (297.5, 70.9), (297.9, 70.9), (298.2, 70.9), (298.5, 70.9), (298.8, 70.9),
    (299.0, 70.9), (299.2, 70.9), (299.4, 70.9), (299.6, 70.9), (299.7, 70.9),
    (299.8, 70.9), (299.9, 70.9), (300.0, 70.9), (300.0, 70.9), (300.0, 70.9),
    (300.0, 70.9), (299.9, 70.9), (299.8, 70.9), (299.7, 70.9), (299.6, 70.9),
    (299.4, 70.9), (299.2, 70.9), (299.0, 70.9), (298.8, 70.9), (298.5, 70.9),
    (298.2, 70.9), (298.1, 70.9), (298.1, 70.9), (298.0, 70.9), (298.0, 70.9),
    (297.8, 70.9), (297.7, 70.9), (297.5, 70.9), (297.3, 70.9), (297.1, 70.9),
    (296.9, 70.9), (296.6, 70.9), (296.3, 72.5), (296.0, 74.2), (295.6, 75.8),
    (295.2, 77.3), (294.8, 78.8), (294.3, 80.3), (293.9, 81.7), (293.4, 83.0),
    (292.8, 84.3), (292.3, 85.6), (291.7, 86.8), (291.1, 88.0), (290.4, 89.1),
    (289.7, 90.2), (289.0, 91.3), (288.3, 92.3), (287.5, 93.2), (286.7, 94.2),
    (285.8, 95.1), (284.9, 96.0), (284.0, 96.8), (283.1, 97.6), (282.1, 98.4),
    (281.1, 99.1), (280.0, 99.8), (278.9, 100.5), (277.7, 101.1), (276.6, 101.8),
    (275.3, 102.3), (274.1, 102.9), (272.7, 103.4), (271.4, 103.9), (270.0, 104.4),
    (268.5, 104.8), (267.0, 105.2), (265.4, 105.6), (263.8, 105.9), (262.1, 106.3),
    (260.4, 106.6), (258.6, 106.8), (256.7, 107.1), (254.8, 107.3), (252.7, 107.5),
    (250.6, 107.6), (248.5, 107.8), (246.2, 107.9), (243.8, 107.9), (241.4, 108.0),
    (238.8, 108.0), (236.1, 108.0), (233.3, 108.0), (230.3, 107.9), (227.1, 107.9),
    (223.8, 107.8), (220.3, 107.6), (216.5, 107.5), (212.5, 107.3), (208.1, 107.1),
    (203.2, 106.8), (197.9, 106.5), (191.8, 106.2), (191.8, 106.2),
)  # fmt: skip


def dexarm_refusal(xyz: XYZ, module_offset_mm: float) -> str | None:
    """The line the DexArm prints when it refuses a move to `xyz`, or None when it accepts it."""
    x, y, z = xyz
    if z > DEXARM_Z_MM[1] or z < DEXARM_Z_MM[0]:
        return "Z beyond limit....."
    if y < 0:
        return "Y beyond limit....."
    # int tmp_z = (int(z + 0.5) + abs(ZMINARM)) / 2 + 0.5: a double, truncated toward zero
    row = int((int(z + 0.5) + abs(DEXARM_Z_MM[0])) / 2 + 0.5)
    reach_max, reach_min = DEXARM_ARMLIMIT[row]
    horizontal = math.hypot(x, y) - (module_offset_mm + DEXARM_OFFSET_ROT_MM)
    if horizontal < reach_min + 1 or horizontal > reach_max - 1:
        return "XY beyond limit....."
    return None


def refusal(dialect: codec.Dialect, pose: Pose) -> str | None:
    """Why the arm's firmware would refuse a move to `pose` (rig frame); None when it accepts it.

    The pose is rounded as the driver writes it on the wire (`rig.arm.codec.format_move`).
    """
    sent = tuple(float(f"{v:.2f}") for v in (pose.x_mm, pose.y_mm, pose.z_mm))
    native = codec.to_native(dialect, (sent[0], sent[1], sent[2]))
    if dialect.name == "uarm-swift-pro":
        if uarm_reachable(native):
            return None
        return f"E{dialect.unreachable_code}: no legal joint angles (is_angle_legal)"
    # the driver selects the pump module at connect (M888 P2)
    return dexarm_refusal(native, DEXARM_PUMP_MODULE_OFFSET_MM)
