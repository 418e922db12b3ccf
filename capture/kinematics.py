"""How long the rig's physical actions take: the timing model behind plan order and dry runs.

`Kinematics` holds one duration (or speed) per kind of action. Built from a rig config, the
arm's load, flip and unload times come from walking the arm's own choreography
(`rig.arm.choreography`, the steps `GcodeArm` performs) with its speed and acceleration, so the
estimate follows any change to what the arm does. The walk goes where the driver goes: a rise
straight up before travelling, then the straight move, each timed with the trapezoid profile
the arm's firmware (and its emulator) uses, and a suction switch costs the firmware dwell that
follows it. `schedule_times` times the overlapped handling of `capture.staging` the same way.

What is counted is what the twin's ledger counts: the devices' physical actions. Neither
counts the host's round trips on the wire (a few milliseconds per command).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from capture.staging import Act, CoinActs, task_steps
from rig.arm import choreography
from rig.arm.choreography import MoveTo, Rise, Step, Suction
from rig.config import (
    GcodeArmConfig,
    GrblTurntableConfig,
    Pose,
    RigConfig,
    SimCameraConfig,
    TrayConfig,
)
from rig.motion import trapezoid_duration_s

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
    def from_config(cls, config: RigConfig, slot: int | None = None) -> Kinematics:
        """Derive the durations from the rig's speeds, accelerations and arm choreography.

        The arm's load and unload are timed for tray slot `slot` (default: the middle slot,
        which stands for every slot).
        """
        table = config.turntable
        tilt_speed = 30.0
        if isinstance(table, GrblTurntableConfig) and table.tilt is not None:
            tilt_speed = table.tilt.speed_deg_per_s
        flip_s = load_s = unload_s = BY_HAND_S
        if config.arm is not None:
            load_s, flip_s, unload_s = serial_handling_s(config.arm, config.tray, slot)
        return cls(
            turntable_speed_deg_per_s=table.speed_deg_per_s,
            turntable_accel_deg_per_s2=table.limits.accel_deg_per_s2,
            tilt_speed_deg_per_s=tilt_speed,
            # the LEDs' settling time, which the controller waits out before the next command
            light_switch_s=config.lightbox.settle_ms / 1000.0,
            # a triggered camera (the twin's) reads a frame out while the next shot is set up
            readout_s=0.0 if isinstance(config.camera, SimCameraConfig) else cls.readout_s,
            default_exposure_us=config.camera.exposure_us,
            flip_s=flip_s,
            load_s=load_s,
            unload_s=unload_s,
        )


def serial_handling_s(
    arm: GcodeArmConfig, tray: TrayConfig | None, slot: int | None = None
) -> tuple[float, float, float]:
    """Seconds the serial schedule's load, flip and unload take for one slot (default: middle).

    Each starts from the safe pose and ends there: the capture engine parks the arm after each.
    """
    if tray is None:
        pose = arm.turntable_pose
    else:
        pose = tray.slot_pose(tray.slots // 2 if slot is None else slot)
    park = choreography.park(arm)
    load = (*choreography.pick_from_slot(arm, pose), *choreography.place_on_turntable(arm), *park)
    flip = (*choreography.flip_on_turntable(arm), *park)
    unload = (*choreography.return_to_slot(arm, pose), *park)
    return arm_steps_s(arm, load), arm_steps_s(arm, flip), arm_steps_s(arm, unload)


def arm_walk(arm: GcodeArmConfig, steps: Iterable[Step], start: Pose) -> tuple[float, Pose]:
    """Seconds for the arm to perform `steps` from `start`, and where it ends up.

    Each straight move (a rise included, as `GcodeArm` performs it) takes its trapezoid-profile
    time; each suction switch the firmware dwell that follows it.
    """
    here, seconds = start, 0.0
    for step in steps:
        target: Pose | None = None
        if isinstance(step, Rise):
            target = choreography.rise_target(here, step.z_mm)
        elif isinstance(step, MoveTo):
            target = step.pose
        elif isinstance(step, Suction):
            seconds += step.settle_ms / 1000.0
        if target is not None:
            distance = choreography.distance_mm(here, target)
            seconds += trapezoid_duration_s(distance, arm.speed_mm_per_s, arm.accel_mm_per_s2)
            here = target
    return seconds, here


def arm_steps_s(arm: GcodeArmConfig, steps: Iterable[Step], start: Pose | None = None) -> float:
    """Seconds for the arm to perform `steps` from `start` (default: its safe pose)."""
    return arm_walk(arm, steps, arm.safe_pose if start is None else start)[0]


@dataclass(frozen=True)
class ActTimes:
    """Seconds of one act's arm work: what the shots wait for, and what runs beside them."""

    blocking_s: float = 0.0
    background_s: float = 0.0


@dataclass(frozen=True)
class CoinTimes:
    """The arm's seconds around one coin of an overlapped schedule."""

    bring: ActTimes
    flip: ActTimes | None
    leave: ActTimes


def schedule_times(
    arm: GcodeArmConfig, tray: TrayConfig, schedule: Sequence[CoinActs]
) -> list[CoinTimes]:
    """Time every act of an overlapped schedule, the arm starting at its safe pose (homed)."""
    here = arm.safe_pose
    timed: list[CoinTimes] = []

    def act_times(act: Act) -> ActTimes:
        nonlocal here
        seconds = [0.0, 0.0]
        for part, tasks in enumerate((act.blocking, act.background)):
            for task in tasks:
                spent, here = arm_walk(arm, task_steps(arm, tray, task), here)
                seconds[part] += spent
        return ActTimes(*seconds)

    for coin in schedule:
        bring = act_times(coin.bring)
        flip = act_times(coin.flip) if coin.flip is not None else None
        timed.append(CoinTimes(bring, flip, act_times(coin.leave)))
    return timed
