"""The arm's pick-and-place choreography, as data: each action's ordered list of steps.

One definition serves two readers: `GcodeArm` performs these steps on the arm, and the capture
layer's duration estimate walks the very same steps to time them, so the two cannot drift apart.
Every action approaches a point from above at `clearance_mm`, descends, switches the suction
cup, and rises again; it travels sideways only at clearance height.

The actions take poses, not slot numbers: the caller resolves a slot with `TrayConfig.slot_pose`
(which refuses a slot that does not exist) before any step exists, or a spot (a slot, the
turntable, a staging pad) with `spot_pose`. With staging pads the arm waits above the incoming
pad (`wait_clear`) while the camera shoots; `path` lists the points the arm passes through, for
checking that work done beside the camera keeps out of its view (`keep_out_breach`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from rig.config import GcodeArmConfig, Pose, TrayConfig, xy_distance_mm
from rig.devices import Spot
from rig.errors import ConfigError

#: firmware dwell after switching suction: vacuum builds (or vents) in a few hundred ms
SUCTION_SETTLE_MS = 300


@dataclass(frozen=True)
class Rise:
    """Rise straight up to at least `z_mm` from wherever the arm stands (no move if as high)."""

    z_mm: float


@dataclass(frozen=True)
class MoveTo:
    """Travel in a straight line to `pose`."""

    pose: Pose


@dataclass(frozen=True)
class Suction:
    """Switch the suction cup on or off, then let the firmware dwell `settle_ms`."""

    on: bool
    settle_ms: int = SUCTION_SETTLE_MS


#: one step of a choreography
Step = Rise | MoveTo | Suction


def distance_mm(a: Pose, b: Pose) -> float:
    """The straight-line distance between two poses."""
    return math.dist((a.x_mm, a.y_mm, a.z_mm), (b.x_mm, b.y_mm, b.z_mm))


def above(pose: Pose, clearance_mm: float) -> Pose:
    """The point `clearance_mm` straight above `pose`."""
    return Pose(x_mm=pose.x_mm, y_mm=pose.y_mm, z_mm=pose.z_mm + clearance_mm)


def rise_target(here: Pose, z_mm: float) -> Pose | None:
    """Where a `Rise(z_mm)` takes an arm standing at `here`; None when it need not move."""
    if here.z_mm >= z_mm:
        return None
    return Pose(x_mm=here.x_mm, y_mm=here.y_mm, z_mm=z_mm)


def moves(steps: tuple[Step, ...]) -> list[Pose]:
    """The poses of the steps' straight moves, in order (rises depend on where the arm stands)."""
    return [step.pose for step in steps if isinstance(step, MoveTo)]


def _descend_and_switch(config: GcodeArmConfig, pose: Pose, *, on: bool) -> tuple[Step, ...]:
    top = above(pose, config.clearance_mm)
    return (Rise(top.z_mm), MoveTo(top), MoveTo(pose), Suction(on), MoveTo(top))


def pick_at(config: GcodeArmConfig, pose: Pose) -> tuple[Step, ...]:
    """Rise, go above `pose`, descend, switch suction on, rise again."""
    return _descend_and_switch(config, pose, on=True)


def place_at(config: GcodeArmConfig, pose: Pose) -> tuple[Step, ...]:
    """Rise, go above `pose`, descend, switch suction off, rise again."""
    return _descend_and_switch(config, pose, on=False)


def pick_from_slot(config: GcodeArmConfig, slot_pose: Pose) -> tuple[Step, ...]:
    """Take the coin from the tray slot at `slot_pose`."""
    return pick_at(config, slot_pose)


def place_on_turntable(config: GcodeArmConfig) -> tuple[Step, ...]:
    """Put the held coin on the turntable."""
    return place_at(config, config.turntable_pose)


def flip_on_turntable(config: GcodeArmConfig) -> tuple[Step, ...]:
    """Turn the coin on the turntable over through the flip station's chute.

    Picks it from the turntable, drops it into the chute (which turns it over), picks it at the
    chute's exit and puts it back on the turntable.
    """
    station = config.flip_station
    return (
        *pick_at(config, config.turntable_pose),
        *place_at(config, station.drop),
        *pick_at(config, station.pickup),
        *place_at(config, config.turntable_pose),
    )


def return_to_slot(config: GcodeArmConfig, slot_pose: Pose) -> tuple[Step, ...]:
    """Take the coin from the turntable and put it in the tray slot at `slot_pose`."""
    return (*pick_at(config, config.turntable_pose), *place_at(config, slot_pose))


def park(config: GcodeArmConfig) -> tuple[Step, ...]:
    """Rise straight up, then go to the safe pose; suction is left as it is."""
    return (Rise(config.safe_pose.z_mm), MoveTo(config.safe_pose))


# ---------------------------------------------------------------- staging (issue 16)


def spot_pose(config: GcodeArmConfig, tray: TrayConfig, spot: Spot) -> Pose:
    """Where a coin lies at `spot`: a tray slot, the turntable, or a staging pad.

    Raises:
        ConfigError: no such tray slot, or a staging pad on an arm configured without pads.
    """
    if spot == "turntable":
        return config.turntable_pose
    if spot in ("incoming", "outgoing"):
        if config.staging is None:
            raise ConfigError(f"arm: no staging pads configured (asked for {spot!r})")
        return config.staging.incoming if spot == "incoming" else config.staging.outgoing
    assert isinstance(spot, int)
    return tray.slot_pose(spot)


def wait_pose(config: GcodeArmConfig) -> Pose:
    """Where the arm waits while the camera shoots: above the incoming pad, at clearance."""
    if config.staging is None:
        raise ConfigError("arm: no staging pads configured (no waiting pose)")
    return above(config.staging.incoming, config.clearance_mm)


def wait_clear(config: GcodeArmConfig) -> tuple[Step, ...]:
    """Rise, then go to the waiting pose, clear of the camera's view."""
    pose = wait_pose(config)
    return (Rise(pose.z_mm), MoveTo(pose))


def path(steps: tuple[Step, ...], start: Pose) -> list[Pose]:
    """Every point the arm passes through performing `steps` from `start`, rises included."""
    here, points = start, [start]
    for step in steps:
        target = rise_target(here, step.z_mm) if isinstance(step, Rise) else None
        if isinstance(step, MoveTo):
            target = step.pose
        if target is not None:
            points.append(target)
            here = target
    return points


def _segment_xy_distance(a: Pose, b: Pose, centre: Pose) -> float:
    """The closest horizontal approach of the straight move a→b to `centre`."""
    ax, ay = a.x_mm - centre.x_mm, a.y_mm - centre.y_mm
    dx, dy = b.x_mm - a.x_mm, b.y_mm - a.y_mm
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, -(ax * dx + ay * dy) / length2))
    return math.hypot(ax + t * dx, ay + t * dy)


def keep_out_breach(config: GcodeArmConfig, points: list[Pose]) -> str | None:
    """Where a path enters the cylinder about the turntable kept clear while shooting; or None."""
    if config.staging is None:
        return "no staging pads configured, hence no keep-out radius"
    radius, centre = config.staging.keep_out_mm, config.turntable_pose
    for a, b in itertools.pairwise(points):
        gap = _segment_xy_distance(a, b, centre)
        if gap < radius - 1e-9:
            return (
                f"the move from ({a.x_mm:g}, {a.y_mm:g}) to ({b.x_mm:g}, {b.y_mm:g}) passes "
                f"{gap:.1f} mm from the turntable, inside keep_out_mm ({radius:g} mm)"
            )
    if len(points) == 1 and xy_distance_mm(points[0], centre) < radius - 1e-9:
        return "the arm stands inside the keep-out radius"
    return None
