"""How long the rig's physical actions take: the timing model behind plan order and dry runs.

`Kinematics` holds one duration (or speed) per kind of action. Built from a rig config, the
arm's load, flip and unload times come from walking the arm's own choreography
(`rig.arm.choreography`, the steps `GcodeArm` performs) with its speed and acceleration, so the
estimate follows any change to what the arm does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rig.arm import choreography
from rig.arm.choreography import MoveTo, Step, Suction
from rig.config import GcodeArmConfig, GrblTurntableConfig, Pose, RigConfig
from rig.motion import trapezoid_duration_s

#: vacuum build-up or release per pick/place, as the estimate counts a suction step
SUCTION_STEP_S = 0.5
#: an operator handling the coin by hand, per load, flip or unload
BY_HAND_S = 15.0


@dataclass(frozen=True)
class Kinematics:
    """How long the rig's physical actions take; built from a RigConfig."""

    turntable_speed_deg_per_s: float = 60.0
    turntable_accel_deg_per_s2: float = 180.0
    tilt_speed_deg_per_s: float = 30.0
    light_switch_s: float = 0.03
    camera_config_s: float = 0.01
    readout_s: float = 0.05
    default_exposure_us: float = 20000.0
    flip_s: float = 10.0
    load_s: float = 10.0
    unload_s: float = 10.0

    @classmethod
    def from_config(cls, config: RigConfig) -> Kinematics:
        """Derive the durations from the rig's speeds, accelerations and arm choreography."""
        table = config.turntable
        tilt_speed = 30.0
        if isinstance(table, GrblTurntableConfig) and table.tilt is not None:
            tilt_speed = table.tilt.speed_deg_per_s
        # A Modbus round trip (~10 ms) plus the LEDs' settling time.
        light_s = 0.01 + config.lightbox.settle_ms / 1000.0
        flip_s = load_s = unload_s = BY_HAND_S
        if config.arm is not None:
            arm = config.arm
            # a coin from the middle of the tray stands for every slot
            tray = config.tray
            slot = tray.slot_pose(tray.slots // 2) if tray is not None else arm.turntable_pose
            park = choreography.park(arm)
            # the capture engine parks the arm after each action: each starts at the safe pose
            load = (
                *choreography.pick_from_slot(arm, slot),
                *choreography.place_on_turntable(arm),
                *park,
            )
            load_s = arm_steps_s(arm, load)
            flip_s = arm_steps_s(arm, (*choreography.flip_on_turntable(arm), *park))
            unload_s = arm_steps_s(arm, (*choreography.return_to_slot(arm, slot), *park))
        return cls(
            turntable_speed_deg_per_s=table.speed_deg_per_s,
            turntable_accel_deg_per_s2=table.limits.accel_deg_per_s2,
            tilt_speed_deg_per_s=tilt_speed,
            light_switch_s=light_s,
            default_exposure_us=config.camera.exposure_us,
            flip_s=flip_s,
            load_s=load_s,
            unload_s=unload_s,
        )


def arm_steps_s(arm: GcodeArmConfig, steps: Iterable[Step], start: Pose | None = None) -> float:
    """Seconds for the arm to perform `steps` from `start` (default: its safe pose).

    Each straight move takes its trapezoid-profile time, each suction switch `SUCTION_STEP_S`.
    A `Rise` is not timed, and the next move is timed from where the arm stood before it: the
    estimate times the straight path between the choreography's poses, as dry runs always have.
    """
    here = arm.safe_pose if start is None else start
    moves_s = 0.0
    switches = 0
    for step in steps:
        if isinstance(step, MoveTo):
            distance = choreography.distance_mm(here, step.pose)
            moves_s += trapezoid_duration_s(distance, arm.speed_mm_per_s, arm.accel_mm_per_s2)
            here = step.pose
        elif isinstance(step, Suction):
            switches += 1
    return moves_s + switches * SUCTION_STEP_S
