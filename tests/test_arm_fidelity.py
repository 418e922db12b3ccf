"""The arm emulators against their firmware sources, byte for byte, and the driver on top of them.

Each test names the behaviour docs/fidelity-arm-modbus.md lists; the firmware references are in
rig/sim/arm_uarm.py (uArm Swift Pro V4, uarm_protocol.c) and rig/sim/arm_dexarm.py (Marlin on the
DexArm). Wire-level tests talk to the pty with raw lines; the driver tests at the end are the
ones that failed on the driver that assumed its own protocol.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from arm_support import TRAYS, arm_config, bench

from rig.arm import codec
from rig.arm.choreography import Suction
from rig.config import GcodeArmConfig, Pose
from rig.errors import DeviceFault
from rig.sim.arm_dexarm import NOT_HOMED
from rig.sim.arm_emulator import GcodeArmEmulator
from rig.sim.arm_kinematics import dexarm_refusal, uarm_reachable
from rig.sim.clock import SimClock
from rig.sim.faults import FaultInjector
from rig.sim.world import CoinPlacement, World
from rig.transport import SerialLineTransport

UARM, DEXARM = codec.UARM_SWIFT_PRO, codec.DEXARM
COIN = CoinPlacement(coin_id="SAW-0107", side_up="obverse")
# where the DexArm rests: its config's safe pose, where the tests put it and homing parks it
_SAFE = arm_config("dexarm").safe_pose
DEXARM_SAFE = (_SAFE.x_mm, _SAFE.y_mm, _SAFE.z_mm)


@dataclass
class Wire:
    emulator: GcodeArmEmulator
    link: SerialLineTransport
    world: World
    config: GcodeArmConfig

    def send(self, line: str) -> None:
        self.link.write(line.encode("ascii") + b"\n")

    def line(self, timeout_s: float = 1.0) -> str:
        return self.link.read_line(timeout_s).decode("ascii").strip()

    def lines_until(self, last: str, timeout_s: float = 2.0) -> list[str]:
        """Every line up to and including the first that starts with `last`."""
        lines: list[str] = []
        while not lines or not lines[-1].startswith(last):
            lines.append(self.line(timeout_s))
        return lines

    def silent(self, quiet_s: float = 0.15) -> bool:
        return not self.link.drain(quiet_s)


@contextmanager
def wire(dialect: str, *, scale: float = 0.0, homed: bool = True) -> Iterator[Wire]:
    config = arm_config(dialect)
    world = World()
    safe = config.safe_pose
    world.set_arm_xyz((safe.x_mm, safe.y_mm, safe.z_mm))
    emulator = GcodeArmEmulator(
        config=config,
        tray=TRAYS[dialect],
        world=world,
        clock=SimClock(scale),
        faults=FaultInjector(),
        homed=homed,
    )
    with emulator:
        link = SerialLineTransport(emulator.port, name="test")
        link.open()
        try:
            link.drain(0.05)  # the power-on banner
            yield Wire(emulator, link, world, config)
        finally:
            link.close()


def answer(w: Wire) -> list[str]:
    """The lines up to `ok`, without the keep-alives a long wait brings (2 s of motion or more)."""
    return [line for line in w.lines_until("ok") if line != "echo:busy: processing"]


def move(d: codec.Dialect, x: float, y: float, z: float, seq: int | None = None) -> str:
    return codec.encode_command(d, codec.format_move(d, Pose(x_mm=x, y_mm=y, z_mm=z), 6000), seq)[
        :-1
    ].decode()


# ---------------------------------------------------------------- uArm Swift Pro (V4)


@pytest.mark.parametrize(
    ("dialect", "banner"),
    [("uarm-swift-pro", ["@1"]), ("dexarm", ["start", "echo:DexArm emulated firmware"])],
)
def test_each_arm_greets_with_its_power_on_banner(dialect: str, banner: list[str]) -> None:
    # uarm_swift.c uarm_swift_init: printString("@1\n"); Marlin: "start" at boot
    config = arm_config(dialect)
    emulator = GcodeArmEmulator(
        config=config, tray=TRAYS[dialect], world=None, clock=SimClock(0), faults=FaultInjector()
    )
    link = SerialLineTransport(emulator.port, name="test")
    link.open()  # before the emulator starts: the banner is sent once, at power-on
    try:
        with emulator:
            assert [link.read_line(1.0).decode().strip() for _ in banner] == banner
    finally:
        link.close()


def test_uarm_answers_a_move_when_the_arm_has_stopped_and_a_query_at_once() -> None:
    # report_parse_result: synchronous replies only at STATE_IDLE; P commands answered at once
    with wire("uarm-swift-pro", scale=0.1) as w:
        started = time.monotonic()
        w.send(move(UARM, 150.0, 200.0, 10.0, seq=1))  # ~210 mm at 100 mm/s: ~0.23 s of wall
        w.send("#2 P2220")
        first = w.line()
        assert first.startswith("$2 ok X")
        mid = codec.parse_position(UARM, [first.split(" ", 2)[2]])
        assert mid is not None and 0.0 < mid.x_mm < 150.0  # the encoders, mid-move
        assert w.line() == "$1 ok"
        assert time.monotonic() - started >= 0.15


def test_uarm_runs_the_next_command_while_a_move_goes_and_answers_both_at_the_end() -> None:
    # parse_cmd_line no longer waits for STATE_IDLE (the condition is commented out): M2231 runs
    # mid-move; report_parse_result prints both replies, in order, once the arm is idle
    with wire("uarm-swift-pro", scale=0.1) as w:
        w.send(move(UARM, 150.0, 200.0, 10.0, seq=1))  # ~0.23 s of wall time
        w.send("#2 M2231 V1")
        deadline = time.monotonic() + 0.15
        while not w.emulator.suction_on and time.monotonic() < deadline:
            time.sleep(0.005)
        assert w.emulator.suction_on and not w.emulator.idle
        assert [w.line(), w.line()] == ["$1 ok", "$2 ok"]


def test_uarm_has_no_moving_query() -> None:
    # V4 uarm_execute_m_cmd has no case 2200: STATUS_GCODE_UNSUPPORTED_COMMAND -> E20
    with wire("uarm-swift-pro") as w:
        w.send("#3 M2200")
        assert w.line() == "$3 E20"


def test_uarm_dwell_answers_at_once_and_holds_the_next_command() -> None:
    # uarm_cmd_g2004 sets gcode_delay_flag; parse_cmd_line runs no queued command until it clears
    with wire("uarm-swift-pro", scale=1.0) as w:
        started = time.monotonic()
        w.send("#1 G2004 P400")
        assert w.line() == "$1 ok"
        assert time.monotonic() - started < 0.2
        w.send("#2 M2231 V1")
        assert w.line() == "$2 ok"
        assert time.monotonic() - started >= 0.35
        assert w.emulator.suction_on


def test_uarm_position_report_has_four_decimals_in_its_own_frame() -> None:
    # uarm_cmd_p2220: " X%s Y%s Z%s", dtostrf(v, 5, 4); X points away from the base
    with wire("uarm-swift-pro") as w:
        w.send("#4 P2220")
        assert w.line() == "$4 ok X200.0000 Y0.0000 Z150.0000"  # rig (0, 200, 150)


def test_uarm_refuses_points_behind_its_base() -> None:
    # coord_to_angle: x < 0 gives a NaN base angle; mc_line returns UARM_COORD_ERROR -> E22
    with wire("uarm-swift-pro") as w:
        w.send("#5 G0 X-10 Y200 Z100 F6000")
        assert w.line() == "$5 E22"
        w.send("#6 G0 X200 Y-10 Z100 F6000")
        assert w.line() == "$6 ok"


def test_uarm_drops_what_is_not_a_command_and_answers_a_bad_number_bare() -> None:
    # receive_cmd_line returns on lines not starting with # $ G M P; STATUS_BAD_NUMBER_FORMAT
    # adds nothing to the report, so only "$n" comes back
    with wire("uarm-swift-pro") as w:
        w.send("hello")
        w.send("#6 G0 Xnan Y0 Z0 F6000")
        w.send("#7 P2203")
        assert w.line() == "$6"
        assert w.line() == "$7 ok V4.2.0"


def test_uarm_bad_parameters_are_e21() -> None:
    # uarm_execute_m_cmd: M2231 takes V0/V1, M2400 S0..S3; otherwise UARM_CMD_ERROR -> E21
    with wire("uarm-swift-pro") as w:
        w.send("#8 M2231 V5")
        assert w.line() == "$8 E21"
        w.send("#9 M2400 S7")
        assert w.line() == "$9 E21"


def test_uarm_holds_twenty_commands_and_refuses_the_next() -> None:
    # receive_cmd_line: syn_pack_remain >= PACK_MAX_SIZE (20) -> "E23 buffer full", no $n
    with wire("uarm-swift-pro", scale=1.0) as w:
        w.send("#1 G2004 P3000")
        assert w.line() == "$1 ok"
        for seq in range(2, 23):
            w.send(f"#{seq} M2400 S0")
        assert w.line() == "E23 buffer full"


def test_uarm_reports_an_injected_alarm_as_its_own_device_error() -> None:
    # add_result_to_report (later revision): UARM_ENCODER_ERR0R -> E26; the uArm has no E1
    with wire("uarm-swift-pro") as w:
        w.emulator.faults.arm("alarm", code=1)  # GRBL's ALARM:1, as the fault presets give it
        w.send("#3 M2400 S0")
        assert w.line() == "$3 E26"


@pytest.mark.parametrize(
    ("native", "reachable"),
    [
        ((200.0, 0.0, 150.0), True),  # straight ahead
        ((150.0, 200.0, 50.0), True),
        ((0.0, 200.0, 50.0), True),  # base angle 90: the edge, still legal
        ((-10.0, 200.0, 100.0), False),  # behind the base
        ((60.0, 0.0, 0.0), False),  # too close: the suction cup's offset alone is 56.65 mm
        ((400.0, 0.0, 100.0), False),  # beyond the stretched arm
    ],
)
def test_uarm_reach_is_is_angle_legal(native: tuple[float, float, float], reachable: bool) -> None:
    assert uarm_reachable(native) is reachable


# ---------------------------------------------------------------- DexArm (Marlin)


def test_dexarm_refuses_motion_before_m1112_in_text_and_still_answers_ok() -> None:
    # dexarm.cpp inverse_kinematics: no motion before M1112; current_position is still set
    with wire("dexarm", homed=False) as w:
        w.send("G1 F6000 X0 Y300 Z50")
        assert w.lines_until("ok") == [NOT_HOMED, "ok"]
        assert w.world.snapshot().arm_xyz_mm == DEXARM_SAFE  # did not move
        w.send("M114")
        assert w.lines_until("ok") == ["X:0.00 Y:300.00 Z:50.00 E:0.00", "ok"]


def test_dexarm_m1112_echoes_itself_homes_then_answers() -> None:
    # M_dexarm.cpp GcodeSuite::M1112: SERIAL_ECHOPAIR("M1112"), synchronize, home to (0, 300, 0)
    with wire("dexarm", homed=False) as w:
        w.send("M1112")
        assert w.lines_until("ok") == ["M1112", "ok"]
        assert w.world.snapshot().arm_xyz_mm == (0.0, 300.0, 0.0)
        w.send("G1 F6000 X0 Y280 Z20")
        assert w.lines_until("ok") == ["ok"]


def test_dexarm_unreachable_move_prints_why_then_ok() -> None:
    # dexarm_position_is_reachable prints the reason; the move is dropped; `ok` follows
    with wire("dexarm") as w:
        w.send("G1 F6000 X0 Y160 Z150")
        assert w.lines_until("ok") == ["XY beyond limit.....", "ok"]
        w.send("G0 F6000 X0 Y300 Z170")
        assert w.lines_until("ok") == ["Z beyond limit.....", "ok"]
        assert w.world.snapshot().arm_xyz_mm == DEXARM_SAFE


def test_dexarm_checks_no_reach_for_a_z_only_line_move() -> None:
    # line_to_destination_kinematic: "If the move is only in Z/E don't split up the move", and
    # the reach check comes after that return
    with wire("dexarm") as w:
        w.send("G1 F6000 X0 Y300 Z170")
        assert w.lines_until("ok") == ["ok"]
        assert w.world.snapshot().arm_xyz_mm == (0.0, 300.0, 170.0)


def test_dexarm_m114_reports_the_last_target_not_where_the_arm_is() -> None:
    # motion.cpp report_current_position_projected: current_position is the last G-code's target
    with wire("dexarm", scale=0.1) as w:
        w.send("G1 F6000 X180 Y280 Z-40")
        assert w.line() == "ok"  # planned, not done
        w.send("M114")
        assert w.lines_until("ok") == ["X:180.00 Y:280.00 Z:-40.00 E:0.00", "ok"]
        assert w.world.snapshot().arm_xyz_mm == DEXARM_SAFE  # still on its way


def test_dexarm_pump_waits_for_the_queued_motion() -> None:
    # M_dexarm.cpp M1000: planner.synchronize() before the pump switches
    with wire("dexarm", scale=0.1) as w:
        w.world.place_on_turntable(COIN)
        w.send("G1 F6000 X180 Y280 Z-40")  # the turntable: ~2.5 s, 0.25 s of wall time
        w.send("M1000")
        assert w.line() == "ok"
        assert not w.emulator.suction_on
        assert answer(w) == ["ok"]
        assert w.emulator.suction_on and w.world.snapshot().held == COIN


def test_dexarm_dwell_starts_after_the_motion() -> None:
    # G4: planner.synchronize(), then the dwell; its `ok` when both are over
    with wire("dexarm", scale=0.1) as w:
        started = time.monotonic()
        w.send("G1 F6000 X180 Y280 Z-40")  # ~0.25 s of wall time
        w.send("G4 P1000")  # 0.1 s of wall time
        assert w.line() == "ok"
        assert answer(w) == ["ok"]
        assert time.monotonic() - started >= 0.28


def test_dexarm_keeps_the_host_alive_while_a_command_waits() -> None:
    # HOST_KEEPALIVE_FEATURE, DEFAULT_KEEPALIVE_INTERVAL 2: "echo:busy: processing" every 2 s
    with wire("dexarm", scale=0.2) as w:
        w.send("G1 F1200 X180 Y280 Z-40")  # 20 mm/s over ~190 mm: ~10 s, 2 s of wall time
        assert w.line() == "ok"
        w.send("M400")
        lines = w.lines_until("ok", timeout_s=4.0)
        assert lines[-1] == "ok"
        assert lines.count("echo:busy: processing") >= 3


def test_dexarm_unknown_command_is_echoed_then_ok() -> None:
    # gcode.cpp: SERIAL_ECHO_START + "Unknown command: \"...\"", then `ok`
    with wire("dexarm") as w:
        w.send("M9999 S1")
        assert w.lines_until("ok") == ['echo:Unknown command: "M9999 S1"', "ok"]


def test_dexarm_m888_prints_its_module_and_stores_it() -> None:
    # M_dexarm.cpp GcodeSuite::M888 P2: "THE CURRENT MODULE IS PUMP", settings.save()
    with wire("dexarm") as w:
        w.send("M888 P2")
        lines = w.lines_until("ok")
        assert lines[0] == "THE CURRENT MODULE IS PUMP"
        assert lines[1].startswith("echo:Settings Stored")
        w.send("M888")
        assert w.lines_until("ok") == ["The current module is PUMP", "ok"]


@pytest.mark.parametrize(
    ("xyz", "refusal"),
    [
        ((0.0, 300.0, 0.0), None),  # home
        ((0.0, 300.0, 168.0), "Z beyond limit....."),  # ZMAXARM 167
        ((0.0, 300.0, -128.0), "Z beyond limit....."),  # ZMINARM -127
        ((10.0, -1.0, 0.0), "Y beyond limit....."),
        ((0.0, 189.0, 0.0), "XY beyond limit....."),  # 70.9 + 1 + 117.5 = 189.4 at z = 0
        ((0.0, 190.0, 0.0), None),
        ((0.0, 416.0, 0.0), None),  # 300.0 - 1 + 117.5 = 416.5
        ((0.0, 417.0, 0.0), "XY beyond limit....."),
        ((0.0, 200.0, 150.0), "XY beyond limit....."),  # the uArm's safe pose is too close
    ],
)
def test_dexarm_reach_is_its_armlimit_table(
    xyz: tuple[float, float, float], refusal: str | None
) -> None:
    assert dexarm_refusal(xyz, module_offset_mm=105.0) == refusal


# ---------------------------------------------------------------- the driver on top


def test_dexarm_driver_homes_an_arm_fresh_from_power_on() -> None:
    # the driver lifted with G1 before M1112: refused before homing, and its text was garbage
    with bench("dexarm", homed=False) as b:
        b.arm.home()
        assert b.world.snapshot().arm_xyz_mm == DEXARM_SAFE  # homed, then parked
        assert any(raw.startswith(b"M1112") for raw in b.emulator.received)


def test_dexarm_driver_says_an_unhomed_arm_must_be_homed() -> None:
    with bench("dexarm", homed=False) as b:
        before = len(b.emulator.received)
        with pytest.raises(DeviceFault, match="not homed"):
            b.arm.move_to(Pose(x_mm=0.0, y_mm=280.0, z_mm=60.0))
        moves = [raw for raw in b.emulator.received[before:] if raw.startswith(b"G1")]
        assert len(moves) == 1  # a refusal is not retried


def test_dexarm_driver_connects_past_the_module_text() -> None:
    # M888 P2 answers "THE CURRENT MODULE IS PUMP" before `ok`: the driver read it as garbage
    with bench("dexarm") as b:
        assert b"M888 P2" in b"".join(b.emulator.received)
        assert b.arm.identity().firmware.startswith("Marlin DexArm")


def test_uarm_driver_picks_from_slots_left_of_the_base() -> None:
    # rig x < 0 is the uArm's y < 0: sent unrotated, the slot was behind the base (E22)
    with bench("uarm-swift-pro") as b:
        b.world.load_tray({0: COIN})
        b.arm.pick_from_slot(0)  # x = -150 mm
        assert b.world.snapshot().held == COIN


def test_uarm_driver_waits_a_long_move_out_on_its_reply() -> None:
    # 0.6 s of wall time against a 0.3 s reply timeout: the reply marks the end of the move
    with bench("uarm-swift-pro", scale=0.2, real_sleep=True) as b:
        target = Pose(x_mm=150.0, y_mm=200.0, z_mm=-40.0)  # ~250 mm at 100 mm/s
        b.arm.move_to(target)
        assert b.world.snapshot().arm_xyz_mm == (150.0, 200.0, -40.0)
        moves = [raw for raw in b.emulator.received if raw.startswith(b"#") and b"G0" in raw]
        assert len(moves) == 1  # not timed out and sent again


def test_uarm_driver_gives_the_move_after_a_dwell_the_dwell_s_time() -> None:
    # G2004 answers at once and holds the next command: a 2.5 s hold outlasts the move's 2 s
    # timeout floor unless the driver adds it
    with bench("uarm-swift-pro", scale=1.0, real_sleep=True) as b:
        b.arm._switch_suction(Suction(True, settle_ms=2500))  # a long settle, for the test
        b.arm.move_to(Pose(x_mm=0.0, y_mm=200.0, z_mm=140.0))  # 10 mm: 0.2 s of motion
        assert b.world.snapshot().arm_xyz_mm == (0.0, 200.0, 140.0)
