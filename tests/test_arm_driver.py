"""The G-code arm driver against its pty emulator, in both dialects, verified on the twin's World."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator

import pytest
from arm_support import (
    COIN,
    DIALECTS,
    ROOT,
    TRAY,
    TRAYS,
    UNREACHABLE,
    Bench,
    arm_config,
    bench,
)

from capture.kinematics import Kinematics, arm_steps_s
from rig.arm import choreography, codec
from rig.arm.choreography import MoveTo, Rise, Step
from rig.arm.gcode_arm import GcodeArm
from rig.config import FaultKind, FaultRule, GcodeArmConfig, Pose, load_config
from rig.devices import Arm
from rig.errors import (
    ConfigError,
    DeviceFault,
    DeviceTimeout,
    NotConnected,
    SafetyError,
    TransportError,
)
from rig.motion import trapezoid_duration_s
from rig.sim.faults import FaultInjector


@pytest.fixture(params=DIALECTS)
def rig(request: pytest.FixtureRequest) -> Iterator[Bench]:
    with bench(request.param) as b:
        yield b


def moves_sent(b: Bench) -> list[tuple[float, float, float]]:
    """Every move the emulator received, as (x, y, z) in the rig's frame."""
    d = b.emulator.dialect
    moves = []
    for raw in b.emulator.received:
        command = codec.parse_command(d, raw.decode("ascii"))
        if command is not None and command.code == codec.command_code(d.move):
            native = (command.params["X"], command.params["Y"], command.params["Z"])
            moves.append(codec.from_native(d, native))
    return moves


def xyz(pose: Pose) -> tuple[float, float, float]:
    return (pose.x_mm, pose.y_mm, pose.z_mm)


# ---------------------------------------------------------------- happy path


def test_connect_reads_identity_and_pose(rig: Bench) -> None:
    assert isinstance(rig.arm, Arm)
    identity = rig.arm.identity()
    assert identity.kind == "arm"
    assert identity.model == rig.emulator.dialect.model
    assert identity.firmware  # parsed from the firmware's own answer
    assert identity.endpoint == rig.emulator.port
    assert rig.arm.position() == rig.arm.config.safe_pose  # the twin's arm starts there
    status = rig.arm.status()
    assert status.state == "ready"
    assert status.details["pose_mm"] == xyz(rig.arm.config.safe_pose)


def test_move_updates_the_world_and_the_time_ledger(rig: Bench) -> None:
    target = Pose(x_mm=100.0, y_mm=250.0, z_mm=60.0)
    rig.arm.move_to(target)
    assert rig.world.snapshot().arm_xyz_mm == xyz(target)
    assert rig.arm.position() == target
    distance = math.dist(xyz(rig.arm.config.safe_pose), xyz(target))
    expected = trapezoid_duration_s(distance, 100.0, 500.0)
    moves = [e for e in rig.clock.entries() if e.action.startswith("move")]
    assert [e.duration_s for e in moves] == [pytest.approx(expected)]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_moves_wait_for_completion_not_for_the_ack(dialect: str) -> None:
    # at 1/20 of real time a ~200 mm move lasts ~0.1 s of wall time: the DexArm's `ok` comes
    # long before, and M400 waits; the uArm answers the move itself only once it has stopped
    with bench(dialect, scale=0.05, real_sleep=True) as b:
        target = Pose(x_mm=150.0, y_mm=200.0, z_mm=10.0)
        b.arm.move_to(target)
        assert b.world.snapshot().arm_xyz_mm == xyz(target)
        sent = b"".join(b.emulator.received)
        if b.emulator.dialect.ack_on_completion:
            assert b"M2200" not in sent  # the V3 "is moving" query: E20 on firmware V4
        else:
            assert b"M400" in sent


def test_full_sequence_moves_the_coin_and_flips_it(rig: Bench) -> None:
    rig.world.load_tray({5: COIN})
    rig.arm.home()
    assert rig.world.snapshot().arm_xyz_mm == xyz(rig.arm.config.safe_pose)
    # only the DexArm has a homing command; the uArm's absolute encoders need none
    homed = any(b"M1112" in raw for raw in rig.emulator.received)
    assert homed == (rig.emulator.dialect.name == "dexarm")

    rig.arm.pick_from_slot(5)
    snap = rig.world.snapshot()
    assert snap.held == COIN and 5 not in snap.tray

    rig.arm.place_on_turntable()
    snap = rig.world.snapshot()
    assert snap.held is None
    assert snap.on_turntable is not None and snap.on_turntable.side_up == "obverse"

    rig.arm.flip_on_turntable()
    snap = rig.world.snapshot()
    assert snap.held is None and snap.flip_chute is None
    assert snap.on_turntable is not None
    assert (snap.on_turntable.coin_id, snap.on_turntable.side_up) == ("SAW-0107", "reverse")

    rig.arm.return_to_slot(5)
    rig.arm.park()
    snap = rig.world.snapshot()
    assert snap.on_turntable is None and snap.held is None
    assert snap.tray[5].coin_id == "SAW-0107" and snap.tray[5].side_up == "reverse"
    assert snap.arm_xyz_mm == xyz(rig.arm.config.safe_pose)

    # every sideways move happens at clearance height above the lowest pick or place point
    config = rig.arm.config
    lowest = min(config.turntable_pose.z_mm, rig.emulator.tray.origin.z_mm)
    moves = moves_sent(rig)
    for a, b in itertools.pairwise(moves):
        if a[:2] != b[:2]:
            assert min(a[2], b[2]) >= lowest + config.clearance_mm, f"{a} -> {b} below clearance"


def test_suction_dwells_in_the_firmware(rig: Bench) -> None:
    rig.arm.suction(True)
    assert rig.emulator.suction_on
    assert rig.arm.status().details["suction"] is True
    dwells = [e for e in rig.clock.entries() if e.action == "dwell"]
    assert [e.duration_s for e in dwells] == [pytest.approx(0.3)]
    rig.arm.suction(False)
    assert not rig.emulator.suction_on


def visited(steps: tuple[Step, ...], start: Pose) -> list[tuple[float, float, float]]:
    """The points an arm standing at `start` moves to when it performs `steps`."""
    points, here = [], start
    for step in steps:
        target = choreography.rise_target(here, step.z_mm) if isinstance(step, Rise) else None
        target = step.pose if isinstance(step, MoveTo) else target
        if target is not None:
            points.append(xyz(target))
            here = target
    return points


def test_a_pick_sends_exactly_the_choreography_s_moves(rig: Bench) -> None:
    rig.world.load_tray({5: COIN})
    rig.arm.pick_from_slot(5)
    steps = choreography.pick_from_slot(rig.arm.config, rig.emulator.tray.slot_pose(5))
    assert moves_sent(rig) == [xyz(pose) for pose in choreography.moves(steps)]


def test_every_action_sends_exactly_the_choreography_s_moves(rig: Bench) -> None:
    config, slot = rig.arm.config, rig.emulator.tray.slot_pose(5)
    rig.world.load_tray({5: COIN})
    rig.arm.pick_from_slot(5)
    rig.arm.place_on_turntable()
    rig.arm.flip_on_turntable()
    rig.arm.return_to_slot(5)
    rig.arm.park()
    steps = (
        *choreography.pick_from_slot(config, slot),
        *choreography.place_on_turntable(config),
        *choreography.flip_on_turntable(config),
        *choreography.return_to_slot(config, slot),
        *choreography.park(config),
    )
    # the rises (from the tray's clearance up to the turntable's, say) are among them
    assert len(visited(steps, config.safe_pose)) > len(choreography.moves(steps))
    assert moves_sent(rig) == visited(steps, config.safe_pose)


def test_the_estimate_and_the_arm_walk_one_choreography(monkeypatch: pytest.MonkeyPatch) -> None:
    # a detour written into the choreography reaches both the wire and the dry-run estimate
    sim = load_config(ROOT / "rig" / "config" / "presets" / "sim.yaml")
    assert sim.arm is not None and sim.tray is not None
    before = Kinematics.from_config(sim)
    detour = Pose(x_mm=0.0, y_mm=250.0, z_mm=100.0)
    place = choreography.place_on_turntable

    def with_detour(config: GcodeArmConfig) -> tuple[Step, ...]:
        return (MoveTo(detour), *place(config))

    monkeypatch.setattr(choreography, "place_on_turntable", with_detour)
    after = Kinematics.from_config(sim)
    arm, slot = sim.arm, sim.tray.slot_pose(sim.tray.slots // 2)
    lifted = choreography.above(slot, arm.clearance_mm)
    above_table = choreography.above(arm.turntable_pose, arm.clearance_mm)

    def leg_s(a: Pose, b: Pose) -> float:
        return arm_steps_s(arm, (MoveTo(b),), start=a)

    # without the detour the arm rises from the slot's clearance to the turntable's, then moves
    risen = choreography.rise_target(lifted, above_table.z_mm) or lifted
    direct = leg_s(lifted, risen) + leg_s(risen, above_table)
    added = leg_s(lifted, detour) + leg_s(detour, above_table) - direct
    assert after.load_s == pytest.approx(before.load_s + added)
    assert after.flip_s == before.flip_s and after.unload_s == before.unload_s

    with bench("uarm-swift-pro") as b:
        b.world.load_tray({5: COIN})
        b.arm.pick_from_slot(5)
        b.arm.place_on_turntable()
        config = b.arm.config
        steps = (
            *choreography.pick_from_slot(config, TRAY.slot_pose(5)),
            *with_detour(config),
        )
        assert xyz(detour) in moves_sent(b)
        assert moves_sent(b) == visited(steps, config.safe_pose)
        assert b.world.snapshot().on_turntable == COIN


# ---------------------------------------------------------------- safety


OUTSIDE = [
    Pose(x_mm=400.0, y_mm=200.0, z_mm=50.0),
    Pose(x_mm=0.0, y_mm=20.0, z_mm=50.0),
    Pose(x_mm=0.0, y_mm=200.0, z_mm=-150.0),
    Pose(x_mm=-351.0, y_mm=351.0, z_mm=201.0),
]


def test_out_of_workspace_is_refused_before_a_byte_is_sent(rig: Bench) -> None:
    for pose in OUTSIDE:
        rig.arm.position()  # a full round trip: everything before has surely arrived
        before = list(rig.emulator.received)
        with pytest.raises(SafetyError, match="outside the limits"):
            rig.arm.move_to(pose)
        rig.arm.position()  # the next round trip proves nothing was queued in between
        (only,) = rig.emulator.received[len(before) :]
        assert rig.emulator.dialect.position_query.encode() in only


def test_bad_slot_is_refused_before_a_byte_is_sent(rig: Bench) -> None:
    before = len(rig.emulator.received)
    with pytest.raises(ConfigError, match="slot 99"):
        rig.arm.pick_from_slot(99)
    with pytest.raises(ConfigError):
        rig.arm.return_to_slot(-1)
    rig.arm.position()
    assert len(rig.emulator.received) == before + 1


def test_a_sequence_is_refused_whole_before_a_byte_is_sent() -> None:
    # slot 0 (x = -150 mm) lies outside this workspace: returning a coin there must not first
    # pick it from the turntable and then stop with it hanging on the cup
    with bench("uarm-swift-pro", workspace={"x_mm": (-100, 300)}) as b:
        before = len(b.emulator.received)
        with pytest.raises(SafetyError, match="x_mm"):
            b.arm.return_to_slot(0)
        assert len(b.emulator.received) == before


def test_home_pose_outside_the_workspace_is_refused() -> None:
    # DexArm's firmware homes to (0, 300, 0): a workspace that excludes it must stop home()
    config: dict[str, object] = {
        "workspace": {"x_mm": (-300, 300), "y_mm": (50, 280), "z_mm": (-100, 200)},
        "flip_station": {
            "drop": {"x_mm": 0, "y_mm": 260, "z_mm": 40},
            "pickup": {"x_mm": 60, "y_mm": 260, "z_mm": 0},
        },
    }
    with bench(
        "dexarm",
        workspace=config["workspace"],
        flip_station=config["flip_station"],
        safe_pose={"x_mm": 0, "y_mm": 250, "z_mm": 100},
        turntable_pose={"x_mm": 180, "y_mm": 250, "z_mm": -40},
    ) as b:
        before = len(b.emulator.received)
        with pytest.raises(SafetyError, match="home pose"):
            b.arm.home()
        assert len(b.emulator.received) == before


def test_unreachable_pose_inside_the_workspace_is_the_arm_s_error(rig: Bench) -> None:
    # the uArm answers E22; the DexArm prints "XY beyond limit....." and still answers `ok`
    with pytest.raises(DeviceFault, match=r"E22|beyond limit") as caught:
        rig.arm.move_to(UNREACHABLE[rig.emulator.dialect.name])  # inside the box, too close
    if rig.emulator.dialect.numbered:
        assert caught.value.code == 22
    assert rig.world.snapshot().arm_xyz_mm == xyz(rig.arm.config.safe_pose)
    rig.arm.move_to(Pose(x_mm=0.0, y_mm=250.0, z_mm=100.0))  # still usable afterwards


# ---------------------------------------------------------------- link problems and faults


@pytest.mark.parametrize("dialect", DIALECTS)
def test_bad_port_is_a_transport_error(dialect: str) -> None:
    arm = GcodeArm(arm_config(dialect), tray=TRAYS[dialect], port="/dev/coinrig-no-such-port")
    with pytest.raises(TransportError, match="cannot open"):
        arm.connect()
    arm.close()


def test_no_port_at_all_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no serial port"):
        GcodeArm(arm_config("dexarm"), tray=TRAYS["dexarm"]).connect()


def test_methods_need_a_connection_but_safety_comes_first() -> None:
    arm = GcodeArm(arm_config("uarm-swift-pro"), tray=TRAY, port="/dev/null")
    with pytest.raises(NotConnected):
        arm.position()
    with pytest.raises(SafetyError):
        arm.move_to(Pose(x_mm=999.0, y_mm=200.0, z_mm=0.0))
    assert arm.status().state == "closed"


@pytest.mark.parametrize("kind", ["lost_reply", "garbage", "late_reply"])
def test_link_faults_are_recovered_by_retrying(rig: Bench, kind: FaultKind) -> None:
    rig.emulator.faults.arm(kind)
    assert rig.arm.position() == rig.arm.config.safe_pose
    assert [k for _, k in rig.emulator.faults.fired] == [kind]
    if kind == "late_reply":
        time.sleep(0.5)  # let the stale reply arrive; it must not be taken for a later one
    target = Pose(x_mm=-50.0, y_mm=220.0, z_mm=80.0)
    rig.arm.move_to(target)
    assert rig.arm.position() == target


@pytest.mark.parametrize("kind", ["lost_reply", "garbage"])
def test_faults_during_a_move_are_recovered(rig: Bench, kind: FaultKind) -> None:
    target = Pose(x_mm=120.0, y_mm=180.0, z_mm=30.0)
    rig.emulator.faults.arm(kind)  # hits the move command's own ack
    rig.arm.move_to(target)
    assert rig.world.snapshot().arm_xyz_mm == xyz(target)


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    ("kind", "error"), [("lost_reply", DeviceTimeout), ("garbage", TransportError)]
)
def test_without_retries_link_faults_surface_typed(
    dialect: str, kind: FaultKind, error: type[Exception]
) -> None:
    with bench(dialect, retries=0) as b:
        b.emulator.faults.arm(kind)
        with pytest.raises(error) as caught:
            b.arm.position()
        assert type(caught.value) is error  # a garbled reply is not mistaken for a silent one
        b.arm.position()  # the link itself is fine afterwards


def test_device_error_is_a_fault_and_is_not_retried(rig: Bench) -> None:
    rig.emulator.faults.arm("error", code=25)
    with pytest.raises(DeviceFault):
        rig.arm.move_to(Pose(x_mm=100.0, y_mm=200.0, z_mm=50.0))
    assert rig.world.snapshot().arm_xyz_mm == xyz(rig.arm.config.safe_pose)
    moves = moves_sent(rig)
    assert len(moves) == 1  # refused once, not sent again


def test_disconnect_is_a_transport_error(rig: Bench) -> None:
    rig.emulator.faults.arm("disconnect")
    with pytest.raises(TransportError):
        rig.arm.position()
    assert not rig.emulator.connected


def test_full_sequence_survives_random_link_faults() -> None:
    # the DexArm is the harder case: no sequence numbers to tell a stale reply from a fresh one
    dialect = "dexarm"
    rules = (
        FaultRule(kind="lost_reply", probability=0.05),
        FaultRule(kind="garbage", probability=0.05),
    )
    with bench(dialect, faults=FaultInjector(rules, seed=3)) as b:
        b.world.load_tray({2: COIN})
        b.arm.pick_from_slot(2)
        b.arm.place_on_turntable()
        assert b.world.snapshot().on_turntable is not None
        b.arm.return_to_slot(2)
        snap = b.world.snapshot()
        assert snap.tray[2] == COIN and snap.on_turntable is None and snap.held is None
        assert b.emulator.faults.fired, "the seed should have injected some faults"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_late_reply_without_retries_times_out_and_is_not_taken_later(dialect: str) -> None:
    # at 0.3 x real time the move below lasts ~0.3 s of wall time
    with bench(dialect, retries=0, scale=0.3, real_sleep=True) as b:
        b.emulator.faults.arm("late_reply")
        with pytest.raises(DeviceTimeout):
            b.arm.position()  # the position reply comes 0.45 s late, past the 0.3 s timeout
        # the stale reply (the old pose) lands while this move polls for its completion
        target = Pose(x_mm=-50.0, y_mm=220.0, z_mm=80.0)
        started = time.monotonic()
        b.arm.move_to(target)
        assert time.monotonic() - started > 0.2  # so the move was still running at 0.45 s
        assert b.arm.position() == target
        assert b.world.snapshot().arm_xyz_mm == xyz(target)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_late_ack_of_a_move_is_not_taken_for_its_completion(dialect: str) -> None:
    # the move's `ok` comes 0.45 s late: it is resent, and the straggler must not end M400
    # (DexArm) early; at 0.6 x real time the arm is still travelling then (~0.65 s)
    with bench(dialect, scale=0.6, real_sleep=True) as b:
        b.emulator.faults.arm("late_reply")
        target = Pose(x_mm=-50.0, y_mm=220.0, z_mm=80.0)
        b.arm.move_to(target)
        assert b.world.snapshot().arm_xyz_mm == xyz(target)
        assert b.arm.position() == target
