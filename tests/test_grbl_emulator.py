"""The GRBL emulator against GRBL 1.1h's sources and documents, over a real pty, no driver.

Each test names the firmware behaviour it holds; docs/fidelity-grbl.md lists them with their
references. Times: scale 0 where only the outcome matters, real time (scale 1) where a state
must be seen while it lasts; moves are kept under a second.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import pytest
from grbl_wire import Wire, WireFactory, wire_fixture  # noqa: F401
from hypothesis import given
from hypothesis import strategies as st

from rig.motion import trapezoid_duration_s
from rig.sim.grbl_motion import Profile, lround
from rig.turntable.grbl_codec import Alarm, Banner, ErrorReply, Message, Ok, Status
from rig.turntable.grbl_settings import format_setting, stock_settings

STOCK_DUMP = [
    "$0=10", "$1=25", "$2=0", "$3=0", "$4=0", "$5=0", "$6=0", "$10=1", "$11=0.010", "$12=0.002",
    "$13=0", "$20=0", "$21=0", "$22=0", "$23=0", "$24=25.000", "$25=500.000", "$26=250",
    "$27=1.000", "$30=1000", "$31=0", "$32=0", "$100=250.000", "$101=250.000", "$102=250.000",
    "$110=500.000", "$111=500.000", "$112=500.000", "$120=10.000", "$121=10.000",
    "$122=10.000", "$130=200.000", "$131=200.000", "$132=200.000",
]  # fmt: skip
#: fast enough for sub-second real-time moves: 100 steps/unit, 6000 units/min, 100 units/s²
QUICK = {100: 100.0, 110: 6000.0, 120: 100.0}


def moves(wire: Wire) -> list[float]:
    return [e.duration_s for e in wire.clock.entries() if e.action.startswith("move")]


# ---------------------------------------------------------------------------- settings


def test_settings_dump_is_stock_grbl_1_1h(make_wire: WireFactory) -> None:
    wire = make_wire()
    wire.send(b"$$\n")
    assert [line.decode() for line in wire.raw(len(STOCK_DUMP))] == STOCK_DUMP
    assert wire.read() == [Ok()]
    assert [format_setting(n, v) for n, v in sorted(stock_settings().items())] == STOCK_DUMP


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"$100=-1", "error:4"),  # negative value
        (b"$0=2", "error:6"),  # step pulse under 3 us
        (b"$20=1", "error:10"),  # soft limits need homing
        (b"$99=1", "error:3"),  # no such setting
        (b"$103=1", "error:3"),  # no fourth axis on a 3-axis build
        (b"$100=5000", "error:12"),  # 5000 steps x 500 mm/min is over 30 kHz
        (b"$Q", "error:2"),  # not a number where the setting number goes
        (b"$$$", "error:3"),
        (b"$H", "error:5"),  # homing disabled ($22=0)
        (b"$J=G91 X1 F10", "error:3"),  # jogging is not modelled
        (b"$100=80", "ok"),
    ],
)
def test_system_commands_answer_as_system_c(
    make_wire: WireFactory, line: bytes, reply: str
) -> None:
    wire = make_wire()
    wire.send(line + b"\n")
    assert wire.raw()[-1].decode() == reply


def test_a_setting_write_is_kept_and_shown(make_wire: WireFactory) -> None:
    wire = make_wire()
    assert wire.ask(b"$100=80\n") == [Ok()]
    wire.send(b"$$\n")
    assert b"$100=80.000" in wire.raw(len(STOCK_DUMP))
    assert wire.emulator.settings[100] == 80.0


def test_queries_report_parser_state_offsets_and_build(make_wire: WireFactory) -> None:
    wire = make_wire()
    assert wire.ask(b"$G\n", 2) == [Message("GC", "G0 G54 G17 G21 G90 G94 M5 M9 T0 F0 S0"), Ok()]
    replies = wire.ask(b"$#\n", 12)
    assert replies[0] == Message("G54", "0.000,0.000,0.000") and replies[-1] == Ok()
    assert [r.kind for r in replies[:-1] if isinstance(r, Message)][-3:] == ["G92", "TLO", "PRB"]
    assert wire.ask(b"$I\n", 3) == [
        Message("VER", "1.1h.20190825:"),
        Message("OPT", "V,15,128"),
        Ok(),
    ]


# ---------------------------------------------------------------------------- g-code


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"G1 X10", 22),  # no feed rate yet
        (b"G1 X1.2.3 F10", 1),  # a second point is where a letter must be
        (b"G5 X1", 20),
        (b"G0 G1 X1", 21),
        (b"G0 X1 X2", 25),
        (b"G4", 28),
        (b"G10 L20 X0", 28),
        (b"G92", 26),
        (b"G1 X1 F-1", 4),
        (b"G0 X1 P1", 36),
        (b"G0 X" + b"1" * 90, 11),  # longer than the 80-character line buffer
    ],
)
def test_gcode_errors_as_gcode_c(make_wire: WireFactory, line: bytes, code: int) -> None:
    wire = make_wire()
    assert wire.ask(line + b"\n") == [ErrorReply(code)]


@pytest.mark.parametrize("target", [30.0, 60.0, 120.0, 720.0, -0.056])
def test_moves_end_on_the_nearest_whole_step(make_wire: WireFactory, target: float) -> None:
    wire = make_wire({100: 8.889, 110: 100000.0})
    assert wire.ask(f"G90 G1 X{target:.3f} F5400\n".encode()) == [Ok()]
    report = wire.wait_for("Idle")
    steps = lround(target * 8.889)
    assert report.mpos is not None and report.mpos[0] == round(steps / 8.889, 3)
    assert wire.world.snapshot().turntable_deg == pytest.approx(steps / 8.889)


def test_a_move_shorter_than_half_a_step_is_dropped(make_wire: WireFactory) -> None:
    wire = make_wire({100: 8.889}, scale=1.0)
    assert wire.ask(b"G1 X0.05 F100\n") == [Ok()]  # 0.44 steps: planner.c PLAN_EMPTY_BLOCK
    assert wire.status().state == "Idle"
    assert moves(wire) == []


def test_rates_and_accelerations_are_capped_by_the_settings(make_wire: WireFactory) -> None:
    wire = make_wire({101: 250.0, 111: 250.0})
    assert wire.ask(b"G1 X100 F100000\n") == [Ok()]
    wire.wait_for("Idle")
    assert moves(wire) == [pytest.approx(trapezoid_duration_s(100.0, 500.0 / 60, 10.0))]
    # a diagonal: each axis's limit scaled by its share of the direction (planner.c)
    assert wire.ask(b"G0 X200 Y100\n") == [Ok()]
    wire.wait_for("Idle")
    share = 1 / math.sqrt(2)
    rapid, accel = min(500.0, 250.0) / share / 60, 10.0 / share
    assert moves(wire)[-1] == pytest.approx(trapezoid_duration_s(100 * math.sqrt(2), rapid, accel))


@given(st.floats(1e-3, 1e4), st.floats(1e-2, 1e3), st.floats(1e-2, 1e4), st.floats(0.0, 1.0))
def test_profile_is_grbls_trapezoid(length: float, speed: float, accel: float, at: float) -> None:
    profile = Profile.rest_to_rest(length, speed, accel)
    duration = profile.duration_s()
    assert duration == pytest.approx(trapezoid_duration_s(length, speed, accel), rel=1e-9)
    assert profile.distance_at(duration) == pytest.approx(length)
    t = at * duration
    assert 0.0 <= profile.distance_at(t) <= profile.distance_at(min(duration, t + 1e-3)) + 1e-9
    assert profile.speed_at(t) <= speed * (1 + 1e-9)


@given(st.floats(-1e6, 1e6))
def test_lround_rounds_halves_away_from_zero(value: float) -> None:
    assert abs(lround(value) - value) <= 0.5
    assert lround(2.5) == 3 and lround(-2.5) == -3


def test_dwell_is_answered_once_the_motion_is_done(make_wire: WireFactory) -> None:
    wire = make_wire(QUICK, scale=1.0)
    start = time.monotonic()
    assert wire.ask(b"G1 X30 F1800\nG4 P0.01\n") == [Ok()]  # the motion line at once
    assert wire.read() == [Ok()]  # the dwell: protocol_buffer_synchronize, then 10 ms
    assert time.monotonic() - start >= 0.9 * moves(wire)[0]
    assert wire.status().state == "Idle"


# ---------------------------------------------------------------------------- real-time commands


def test_feed_hold_when_idle_holds_and_reads_no_lines(make_wire: WireFactory) -> None:
    wire = make_wire()
    wire.send(b"!?")  # both pending at one check point: the report goes first (protocol.c)
    assert wire.read()[0] == Status("Idle", mpos=(0.0, 0.0, 0.0), feed=0.0, spindle=0.0,
                                    wco=(0.0, 0.0, 0.0))  # fmt: skip
    report = wire.status()
    assert (report.state, report.substate) == ("Hold", 0)
    wire.send(b"G4 P0\n")
    assert wire.silent()  # protocol_exec_rt_suspend: no line is read in a completed hold
    wire.send(b"~")
    assert wire.read() == [Ok()]
    assert wire.status().state == "Idle"


def test_a_report_asked_with_a_motion_line_shows_idle(make_wire: WireFactory) -> None:
    wire = make_wire(QUICK, scale=1.0)
    wire.send(b"G1 X20 F1800\n?")  # the `?` waits at the line's check point, before the line
    first, second = wire.read(2)
    assert isinstance(first, Status) and first.state == "Idle" and second == Ok()
    assert wire.status().state == "Run"  # the cycle started once the buffer was empty
    wire.wait_for("Idle")


def test_feed_hold_brakes_then_waits_and_resumes(make_wire: WireFactory) -> None:
    wire = make_wire({100: 100.0, 110: 6000.0, 120: 20.0}, scale=1.0)
    assert wire.ask(b"G1 X20 F1200\n") == [Ok()]
    time.sleep(0.6)  # cruising at 20 units/s: braking takes a second at 20 units/s²
    wire.send(b"!")
    braking = wire.wait_for("Hold:1")
    held = wire.wait_for("Hold:0", timeout_s=3.0)
    assert braking.mpos is not None and held.mpos is not None
    assert braking.mpos[0] < held.mpos[0] < 20.0
    time.sleep(0.2)
    assert wire.status().mpos == held.mpos  # at rest
    wire.send(b"~")
    wire.wait_for("Run")
    final = wire.wait_for("Idle", timeout_s=5.0)
    assert final.mpos is not None and final.mpos[0] == 20.0


def test_reset_while_moving_is_alarm_3_and_the_position_is_lost(make_wire: WireFactory) -> None:
    wire = make_wire(QUICK, scale=1.0)
    assert wire.ask(b"G1 X30 F3000\n") == [Ok()]
    time.sleep(0.3)
    replies = wire.ask(b"\x18", 3)
    assert replies[0] == Alarm(3) and isinstance(replies[1], Banner)
    assert replies[2] == Message("MSG", "'$H'|'$X' to unlock")
    assert wire.ask(b"G0 X0\n") == [ErrorReply(9)]  # G-code locked out
    machine, physical = wire.emulator.machine_position()[0], wire.emulator.physical_position()[0]
    assert 0 < machine < 30 and physical > machine  # the axis coasted past GRBL's count
    assert wire.status().state == "Alarm"
    assert wire.ask(b"$X\n", 2) == [Message("MSG", "Caution: Unlocked"), Ok()]


def test_reset_after_a_completed_hold_keeps_the_position(make_wire: WireFactory) -> None:
    wire = make_wire(QUICK, scale=1.0)
    assert wire.ask(b"G1 X30 F3000\n") == [Ok()]
    time.sleep(0.2)
    wire.send(b"!")
    held = wire.wait_for("Hold:0")
    (banner,) = wire.ask(b"\x18")
    assert isinstance(banner, Banner)  # no ALARM:3: the steppers were at rest
    report = wire.status()
    assert report.state == "Idle" and report.mpos == held.mpos
    assert wire.emulator.physical_position() == wire.emulator.machine_position()


def test_two_queries_at_once_get_one_report(make_wire: WireFactory) -> None:
    wire = make_wire()
    wire.send(b"??")
    assert isinstance(wire.read()[0], Status)
    assert wire.silent()


def test_report_fields_follow_report_c(make_wire: WireFactory) -> None:
    wire = make_wire()
    first, second, third = wire.status(), wire.status(), wire.status()
    assert first.wco == (0.0, 0.0, 0.0) and "Ov" not in first.fields  # WCO after a reset
    assert second.wco is None and second.fields["Ov"] == "100,100,100"  # overrides next
    assert third.wco is None and "Ov" not in third.fields
    assert wire.ask(b"G10 L20 P1 X5\n") == [Ok()]
    assert wire.status().wco == (-5.0, 0.0, 0.0)  # an offset change is reported at once
    assert wire.ask(b"$10=0\n") == [Ok()]
    assert wire.status().wpos == (5.0, 0.0, 0.0)
    assert wire.ask(b"$10=3\n$13=1\n", 2) == [Ok(), Ok()]
    report = wire.status()
    assert report.fields["Bf"] == "15,128"
    wire.send(b"G0 X25.4\n")  # work 25.4 mm is machine 20.4 mm
    wire.read()
    assert wire.status().mpos == (round(20.4 / 25.4, 4), 0.0, 0.0)  # $13=1: inches


def test_check_mode_parses_without_moving(make_wire: WireFactory) -> None:
    wire = make_wire()
    assert wire.ask(b"$C\n", 2) == [Message("MSG", "Enabled"), Ok()]
    assert wire.ask(b"G0 X10\n") == [Ok()]
    report = wire.status()
    assert report.state == "Check" and report.mpos == (0.0, 0.0, 0.0)
    replies = wire.ask(b"$C\n", 3)
    assert replies[:2] == [Message("MSG", "Disabled"), Ok()] and isinstance(replies[2], Banner)


# ---------------------------------------------------------------------------- homing and limits


def test_homing_answers_nothing_until_done_and_sets_minus_pulloff(make_wire: WireFactory) -> None:
    wire = make_wire({22: 1, 24: 600, 25: 600, 26: 25, 120: 100}, scale=1.0)
    assert wire.status().state == "Alarm"  # HOMING_INIT_LOCK
    wire.send(b"$H\n")
    time.sleep(0.1)
    wire.send(b"?")
    assert wire.read() == [Ok()]  # the report waited for the cycle (interface.md)
    report = wire.read()[0]
    assert isinstance(report, Status) and report.state == "Idle"
    assert report.mpos == (-1.0, 0.0, 0.0)  # −$27 on the homed (driven) axis
    assert wire.world.snapshot().turntable_deg == pytest.approx(-1.0)


def test_homing_toward_negative_sets_minus_travel_plus_pulloff(make_wire: WireFactory) -> None:
    wire = make_wire({22: 1, 23: 3, 25: 6000, 26: 0})
    wire.ask(b"$H\n")
    assert wire.status().mpos == (-199.0, 0.0, 0.0)
    assert wire.world.snapshot().turntable_deg == pytest.approx(1.0)  # $27 off the switch


def test_a_switch_out_of_reach_is_alarm_9(make_wire: WireFactory) -> None:
    wire = make_wire({22: 1, 100: 100.0, 110: 60000.0, 25: 60000.0, 26: 0})
    assert wire.ask(b"$X\n", 2)[1] == Ok()
    assert wire.ask(b"G0 X50\n") == [Ok()]  # the switch (at 0) is now behind a + search
    wire.wait_for("Idle")
    replies = wire.ask(b"$H\n", 3)
    assert replies[0] == Alarm(9) and isinstance(replies[1], Banner)


def test_reset_during_homing_is_alarm_6(make_wire: WireFactory) -> None:
    wire = make_wire({22: 1, 25: 60, 26: 25}, scale=1.0)
    wire.send(b"$H\n")
    time.sleep(0.1)
    replies = wire.ask(b"\x18", 2)
    assert replies[0] == Alarm(6) and isinstance(replies[1], Banner)


def test_soft_limit_is_a_critical_alarm_2(make_wire: WireFactory) -> None:
    wire = make_wire({22: 1, 20: 1})
    assert wire.ask(b"$X\n", 2)[1] == Ok()
    replies = wire.ask(b"G0 X10\n", 2)  # machine space is [−$130, 0]
    assert replies == [Alarm(2), Message("MSG", "Reset to continue")]
    wire.send(b"?$X\n")
    assert wire.silent()  # nothing but a reset is served
    replies = wire.ask(b"\x18", 2)
    assert isinstance(replies[0], Banner) and replies[1] == Message("MSG", "'$H'|'$X' to unlock")


def test_a_tripped_limit_is_alarm_1_until_reset(make_wire: WireFactory) -> None:
    wire = make_wire(QUICK)
    wire.emulator.faults.arm("alarm", code=1)
    replies = wire.ask(b"G0 X10\n", 3)
    assert replies == [Ok(), Alarm(1), Message("MSG", "Reset to continue")]
    wire.send(b"$X\n")
    assert wire.silent()
    assert isinstance(wire.ask(b"\x18", 2)[0], Banner)
    assert wire.status().state == "Alarm"


def test_every_fidelity_row_names_a_test_that_exists() -> None:
    root = Path(__file__).resolve().parents[1]
    rows = [
        line
        for line in (root / "docs" / "fidelity-grbl.md").read_text().splitlines()
        if line.startswith("| ") and not line.startswith("| behaviour")
    ]
    assert len(rows) > 20
    for row in rows:
        named = re.findall(r"(test_\w+\.py)::(\w+)", row.rsplit("|", 2)[-2])
        assert named, row
        for file, name in named:
            source = (root / "tests" / file).read_text()
            assert f"def {name}(" in source, f"{file}::{name}"
