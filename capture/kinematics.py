"""How long the rig's physical actions take: the timing model behind plan order and dry runs.

`Kinematics` holds one duration (or speed) per kind of action. Built from a rig config, the
arm's load, flip and unload times come from walking the arm's own choreography
(`rig.arm.choreography`, the steps `GcodeArm` performs) with its speed and acceleration, so the
estimate follows any change to what the arm does. The walk goes where the driver goes: a rise
straight up before travelling, then the straight move, each timed with the trapezoid profile
the arm's firmware (and its emulator) uses, and a suction switch costs the firmware dwell that
follows it. `schedule_times` times the overlapped handling of `capture.staging` the same way.

`reach_problems` checks a layout against the arm's reach as its firmware computes it
(`rig.arm.reach`) before a session sends a byte: every place a coin lies, the approach above it,
and every height the arm rises to above it (a park rises straight up to the safe pose's height
from wherever the arm stands).

What is counted is what the twin's ledger counts: the devices' physical actions. Neither
counts the host's round trips on the wire (a few milliseconds per command).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from capture.staging import Act, CoinActs, schedule_tasks, staged_schedule, task_steps
from rig.arm import choreography, codec, reach
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


# ---------------------------------------------------------------- reach


def _places(arm: GcodeArmConfig, tray: TrayConfig | None) -> dict[str, Pose]:
    """Every place the arm puts the cup down at, named."""
    places = {
        "the turntable": arm.turntable_pose,
        "the flip station's drop": arm.flip_station.drop,
        "the flip station's pickup": arm.flip_station.pickup,
    }
    if arm.staging is not None:
        places["the incoming pad"] = arm.staging.incoming
        places["the outgoing pad"] = arm.staging.outgoing
    if tray is not None:
        places |= {f"tray slot {slot}": tray.slot_pose(slot) for slot in range(tray.slots)}
    return places


def session_poses(arm: GcodeArmConfig, tray: TrayConfig | None) -> list[Pose]:
    """Every pose a session may send the arm to with this layout, rises included (no repeats).

    The serial schedule for every slot, the overlapped one (every slot as the first, a middle
    and the last coin) and parking, which rises straight up to the safe pose's height from
    wherever a task ended, on the way out of an error too.
    """
    poses: list[Pose] = [arm.safe_pose]
    slots = [] if tray is None else [tray.slot_pose(slot) for slot in range(tray.slots)]
    park = choreography.park(arm)
    for slot in slots or [arm.turntable_pose]:
        load = (*choreography.pick_from_slot(arm, slot), *choreography.place_on_turntable(arm))
        unload = choreography.return_to_slot(arm, slot)
        for action in (load, choreography.flip_on_turntable(arm), unload):
            poses += choreography.path((*action, *park), arm.safe_pose)
    if arm.staging is not None and tray is not None:
        orders = [[slot] for slot in range(tray.slots)] + [list(range(tray.slots))]
        for order in orders:
            jobs = [_Slotted(f"coin-{slot}", slot) for slot in order]
            schedule = staged_schedule(jobs, [True] * len(jobs))
            here = arm.safe_pose
            for task, _ in schedule_tasks(schedule):
                points = choreography.path(task_steps(arm, tray, task), here)
                poses += points
                here = points[-1]
    # a park from wherever a step may leave the arm (after a failure too): a place, its approach
    for place in _places(arm, tray).values():
        for end in (place, choreography.above(place, arm.clearance_mm)):
            poses += choreography.path(park, end)
    unique: dict[tuple[float, float, float], Pose] = {}
    for pose in poses:
        unique.setdefault((pose.x_mm, pose.y_mm, pose.z_mm), pose)
    return list(unique.values())


@dataclass(frozen=True)
class _Slotted:
    coin_id: str
    slot: int | None


def _describe(arm: GcodeArmConfig, tray: TrayConfig | None, pose: Pose) -> str:
    """What a pose is, for a person: a place, its approach, or a point straight above it."""
    named = {"the safe pose": arm.safe_pose, **_places(arm, tray)}
    for name, place in named.items():
        if (place.x_mm, place.y_mm) != (pose.x_mm, pose.y_mm):
            continue
        if pose.z_mm == place.z_mm:
            return name
        if pose.z_mm == place.z_mm + arm.clearance_mm:
            return f"the approach above {name}"
        if pose.z_mm == arm.safe_pose.z_mm:
            return f"the point above {name} at the safe pose's height"
        return f"the point above {name} at z {pose.z_mm:g} mm"
    return "a point between two places"


def reach_problems(config: RigConfig) -> list[str]:
    """One line for each pose of the layout the arm's firmware would refuse (empty: all reachable).

    Checked before anything moves (the dry run, the session's handling), so an unreachable
    layout is refused in one line instead of pausing a session with a coin on the cup.
    """
    arm = config.arm
    if arm is None:
        return []
    dialect = codec.dialect(arm.dialect)
    problems: list[str] = []
    for pose in session_poses(arm, config.tray):
        refused = reach.refusal(dialect, pose)
        if refused is not None:
            problems.append(
                f"the {dialect.model} cannot reach {_describe(arm, config.tray, pose)}, "
                f"({pose.x_mm:g}, {pose.y_mm:g}, {pose.z_mm:g}) mm: {refused}"
            )
    return problems
