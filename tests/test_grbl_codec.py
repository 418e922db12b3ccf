"""GRBL 1.1 codec: parse tables, formatting, and hypothesis round trips."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rig.errors import SafetyError
from rig.sim.grbl_motion import lround
from rig.turntable.grbl_axes import REPORT_ROUNDING_UNITS, AxisPlan
from rig.turntable.grbl_codec import (
    ERROR_MEANINGS,
    STATES,
    Alarm,
    Banner,
    ErrorReply,
    GcodeSyntaxError,
    Message,
    Ok,
    ParseError,
    Setting,
    Status,
    alarm_meaning,
    axis_index,
    encode_move,
    encode_set_zero,
    error_meaning,
    format_number,
    format_status,
    parse_gcode_words,
    parse_line,
)
from rig.turntable.grbl_settings import (
    INTEGER_SETTINGS,
    FirmwareSettings,
    format_setting,
    stock_settings,
)

PARSE_TABLE = [
    pytest.param(b"ok", Ok(), id="ok"),
    pytest.param(b"ok\r\n", Ok(), id="ok-crlf"),
    pytest.param(b"error:22", ErrorReply(22), id="error-22"),
    pytest.param(b"ALARM:1", Alarm(1), id="alarm-1"),
    pytest.param(
        b"Grbl 1.1h ['$' for help]",
        Banner(version="1.1h", text="Grbl 1.1h ['$' for help]"),
        id="banner-1.1h",
    ),
    pytest.param(
        b"Grbl 1.1f ['$' for help]",
        Banner(version="1.1f", text="Grbl 1.1f ['$' for help]"),
        id="banner-1.1f",
    ),
    pytest.param(b"[MSG:Reset to continue]", Message("MSG", "Reset to continue"), id="msg"),
    pytest.param(
        b"[MSG:'$H'|'$X' to unlock]", Message("MSG", "'$H'|'$X' to unlock"), id="msg-pipes"
    ),
    pytest.param(
        b"[GC:G0 G54 G17 G21 G90 G94 M5 M9 T0 F0 S0]",
        Message("GC", "G0 G54 G17 G21 G90 G94 M5 M9 T0 F0 S0"),
        id="gc",
    ),
    pytest.param(b"[VER:1.1h.20190825:]", Message("VER", "1.1h.20190825:"), id="ver"),
    pytest.param(b"[G54:10.000,0.000,0.000]", Message("G54", "10.000,0.000,0.000"), id="g54"),
    pytest.param(b"$110=5400.000", Setting(110, 5400.0), id="setting-float"),
    pytest.param(b"$10=1", Setting(10, 1.0), id="setting-int"),
    pytest.param(b"$N0=G20", Message("N0", "G20"), id="startup-line"),
    pytest.param(
        b"<Idle|MPos:0.000,0.000,0.000|FS:0,0>",
        Status("Idle", mpos=(0.0, 0.0, 0.0), feed=0.0, spindle=0.0),
        id="status-idle-mpos",
    ),
    pytest.param(
        b"<Run|WPos:12.500,-3.000,0.000|F:3600.|WCO:1.000,2.000,0.000>",
        Status(
            "Run",
            wpos=(12.5, -3.0, 0.0),
            wco=(1.0, 2.0, 0.0),
            feed=3600.0,
        ),
        id="status-run-wpos-wco-F",
    ),
    pytest.param(
        b"<Hold:0|MPos:1.000,2.000,3.000|Bf:15,128|FS:0,0|Pn:XZ|Ov:100,100,100>",
        Status(
            "Hold",
            substate=0,
            mpos=(1.0, 2.0, 3.0),
            feed=0.0,
            spindle=0.0,
            fields={"Bf": "15,128", "Pn": "XZ", "Ov": "100,100,100"},
        ),
        id="status-hold-other-fields",
    ),
    pytest.param(
        b"<Door:1|MPos:0.000,0.000,0.000,90.000>",
        Status("Door", substate=1, mpos=(0.0, 0.0, 0.0, 90.0)),
        id="status-door-4-axes",
    ),
]


@pytest.mark.parametrize(("raw", "expected"), PARSE_TABLE)
def test_parse_table(raw: bytes, expected: object) -> None:
    assert parse_line(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xfe\x00\xa5<|\x85", id="emulator-garbage"),
        pytest.param(b"error:", id="error-no-code"),
        pytest.param(b"error:-1", id="error-negative"),
        pytest.param(b"error: Bad number format", id="grbl-0.9-error-text"),
        pytest.param(b"ALARM:x", id="alarm-not-number"),
        pytest.param(b"<Idle|MPos:0.000,0.000,0.000", id="status-unterminated"),
        pytest.param(b"<Flying|MPos:0,0,0>", id="status-unknown-state"),
        pytest.param(b"<Idle|MPos:nan,0,0>", id="status-nan"),
        pytest.param(b"<Idle|MPos:1e5,0,0>", id="status-exponent"),
        pytest.param(b"<Idle|FS:0,0>", id="status-no-position"),
        pytest.param(b"<Idle|MPos:0,0,0|WPos:0,0,0>", id="status-both-positions"),
        pytest.param(b"<Idle|MPos:0,0,0|FS:1>", id="status-fs-one-value"),
        pytest.param(b"<Idle|junk>", id="status-field-without-colon"),
        pytest.param(b"$1=inf", id="setting-inf"),
        pytest.param(b"Marlin 2.0", id="other-firmware"),
        pytest.param(b"ok\x07", id="control-char"),
    ],
)
def test_parse_rejects_as_parse_error(raw: bytes) -> None:
    reply = parse_line(raw)
    assert isinstance(reply, ParseError)
    assert reply.raw == raw
    assert reply.reason


def test_status_positions_relate_by_wco() -> None:
    report = parse_line(b"<Idle|MPos:15.000,2.000,0.000|FS:0,0|WCO:5.000,1.000,0.000>")
    assert isinstance(report, Status)
    assert report.work_position() == (10.0, 1.0, 0.0)
    assert report.machine_position() == (15.0, 2.0, 0.0)
    wpos_only = parse_line(b"<Idle|WPos:10.000,1.000,0.000|FS:0,0>")
    assert isinstance(wpos_only, Status)
    # without WCO in this report, the caller's last known WCO is used; none known: unknown
    assert wpos_only.machine_position() is None
    assert wpos_only.machine_position((5.0, 1.0, 0.0)) == (15.0, 2.0, 0.0)


def test_meanings_cover_codes() -> None:
    assert "feed rate" in error_meaning(22)
    assert "locked" in error_meaning(9)
    assert "hard limit" in alarm_meaning(1)
    assert error_meaning(999) == "unknown GRBL error code"
    assert ErrorReply(9).meaning == ERROR_MEANINGS[9]


def test_encode_move_rapid_and_feed() -> None:
    assert encode_move(12.5) == b"G90 G0 X12.500\n"
    assert encode_move(90, axis="A", units_per_deg=2.0, feed_deg_per_min=600) == (
        b"G90 G1 A180.000 F1200.000\n"
    )
    assert encode_move(-0.0001) == b"G90 G0 X0.000\n"  # never "-0.000"
    assert encode_set_zero("Y") == b"G10 L20 P1 Y0\n"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_encode_move_refuses_non_finite(bad: float) -> None:
    with pytest.raises(SafetyError):
        encode_move(bad)
    with pytest.raises(SafetyError):
        encode_move(10.0, feed_deg_per_min=bad)
    with pytest.raises(SafetyError):
        encode_move(10.0, units_per_deg=bad)
    with pytest.raises(SafetyError):
        format_number(bad)


def test_encode_move_refuses_bad_feed_and_axis() -> None:
    with pytest.raises(SafetyError):
        encode_move(10.0, feed_deg_per_min=0.0)
    with pytest.raises(ValueError, match="unknown GRBL axis"):
        encode_move(10.0, axis="Q")
    assert axis_index("a") == 3


def test_parse_gcode_words() -> None:
    assert parse_gcode_words("G90 G1 X12.500 F600 (comment) ; tail") == [
        ("G", 90.0),
        ("G", 1.0),
        ("X", 12.5),
        ("F", 600.0),
    ]
    assert parse_gcode_words("g0x-.5") == [("G", 0.0), ("X", -0.5)]
    with pytest.raises(GcodeSyntaxError) as second_point:
        parse_gcode_words("G1 X1.2.3")  # read_float stops at ".3", where a letter must follow
    assert second_point.value.code == 1
    with pytest.raises(GcodeSyntaxError) as no_number:
        parse_gcode_words("G1 X F5")
    assert no_number.value.code == 2
    with pytest.raises(GcodeSyntaxError) as no_letter:
        parse_gcode_words("G1 #5")
    assert no_letter.value.code == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_parser_never_crashes_on_bytes(raw: bytes) -> None:
    reply = parse_line(raw)
    assert isinstance(
        reply, Ok | ErrorReply | Alarm | Status | Banner | Message | Setting | ParseError
    )


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_parser_never_crashes_on_text(text: str) -> None:
    reply = parse_line(text)
    if isinstance(reply, Status):
        assert all(math.isfinite(v) for v in reply.mpos or reply.wpos or ())


_coord = st.integers(min_value=-(10**9), max_value=10**9).map(lambda n: n / 1000)
_coords = st.integers(min_value=3, max_value=6).flatmap(lambda n: st.tuples(*[_coord] * n))
_field_value = st.from_regex(r"\A[A-Za-z0-9,.]{1,12}\Z", fullmatch=True)


@st.composite
def _statuses(draw: st.DrawFn) -> Status:
    state = draw(st.sampled_from(sorted(STATES)))
    substate = draw(st.none() | st.integers(0, 3)) if state in ("Hold", "Door") else None
    use_mpos = draw(st.booleans())
    position = draw(_coords)
    wco = draw(st.none() | st.tuples(*[_coord] * len(position)))
    with_feed = draw(st.sampled_from(["none", "F", "FS"]))
    feed = float(draw(st.integers(0, 100000))) if with_feed != "none" else None
    spindle = float(draw(st.integers(0, 30000))) if with_feed == "FS" else None
    names = draw(st.lists(st.sampled_from(["Bf", "Ln", "Pn", "Ov", "A"]), unique=True))
    fields = {name: draw(_field_value) for name in names}
    return Status(
        state=state,
        substate=substate,
        mpos=position if use_mpos else None,
        wpos=None if use_mpos else position,
        wco=wco,
        feed=feed,
        spindle=spindle,
        fields=fields,
    )


@settings(max_examples=300, deadline=None)
@given(_statuses())
def test_status_round_trip(status: Status) -> None:
    text = format_status(status)
    assert text.startswith("<") and text.endswith(">")
    assert parse_line(text.encode("ascii")) == status


@settings(max_examples=300, deadline=None)
@given(
    angle=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    units_per_deg=st.floats(min_value=0.001, max_value=1e5),
    feed=st.none() | st.floats(min_value=0.01, max_value=1e5),
    axis=st.sampled_from("XYZABC"),
)
def test_move_round_trip(angle: float, units_per_deg: float, feed: float | None, axis: str) -> None:
    line = encode_move(angle, axis=axis, units_per_deg=units_per_deg, feed_deg_per_min=feed)
    text = line.decode("ascii")
    assert text.endswith("\n") and "nan" not in text.lower() and "inf" not in text.lower()
    words = dict(parse_gcode_words(text))
    assert math.isfinite(words[axis])
    # GRBL reads 3 decimals: the number on the wire is the scaled angle rounded to 0.001 units
    assert words[axis] == pytest.approx(angle * units_per_deg, abs=0.0005 + 1e-9 * abs(angle))
    if feed is None:
        assert text.startswith("G90 G0 ")
    else:
        assert text.startswith("G90 G1 ")
        assert words["F"] == pytest.approx(feed * units_per_deg, abs=0.0005 + 1e-9 * feed)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(stock_settings())), st.floats(0.0, 1e5))
def test_setting_lines_round_trip(number: int, value: float) -> None:
    line = format_setting(number, value)
    parsed = parse_line(line)
    assert isinstance(parsed, Setting) and parsed.number == number
    decimals = 0 if number in (30, 31) else 3
    shown = int(value) if number in INTEGER_SETTINGS else round(value, decimals)
    assert parsed.value == pytest.approx(shown, abs=10.0**-decimals)
    assert FirmwareSettings.from_replies([parsed]).values == {number: parsed.value}


@settings(max_examples=300, deadline=None)
@given(st.floats(0.05, 2000.0), st.floats(-3600.0, 3600.0))
def test_the_step_grbl_stops_on_is_within_the_drivers_tolerance(
    steps_per_unit: float, target: float
) -> None:
    axis = AxisPlan(0, "X", 1.0, steps_per_unit, 10.0, 10.0, None)
    target = round(target, 3)  # what the motion line carries
    reached = lround(target * steps_per_unit) / steps_per_unit  # planner.c lroundf
    assert abs(round(reached, 3) - target) <= axis.tolerance_units  # as reported, 3 decimals
    neighbour = (lround(target * steps_per_unit) + 1) / steps_per_unit
    assert abs(neighbour - target) > axis.tolerance_units - 2 * REPORT_ROUNDING_UNITS
