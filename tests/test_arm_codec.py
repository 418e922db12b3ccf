"""The G-code arm codec: reply tables per dialect, and hypothesis round trips and safety."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rig.arm import codec
from rig.arm.codec import DEXARM, UARM_SWIFT_PRO, Data, ErrorReply, Event, Garbage, Ok
from rig.config import Pose, Workspace
from rig.errors import ConfigError, SafetyError

DIALECTS = [UARM_SWIFT_PRO, DEXARM]
dialects = st.sampled_from(DIALECTS)
WORKSPACE = Workspace()

REPLIES = [
    ("uarm-ok", UARM_SWIFT_PRO, b"$3 ok", Ok(seq=3)),
    ("uarm-ok-crlf", UARM_SWIFT_PRO, b"$3 ok\r", Ok(seq=3)),
    (
        "uarm-position",
        UARM_SWIFT_PRO,
        b"$12 ok X1.50 Y-2.00 Z3.00 R90.00",
        Ok(seq=12, data="X1.50 Y-2.00 Z3.00 R90.00"),
    ),
    ("uarm-error", UARM_SWIFT_PRO, b"$4 E22", ErrorReply(seq=4, code=22, message="$4 E22")),
    ("uarm-ready", UARM_SWIFT_PRO, b"@1", Event("@1")),
    ("uarm-report", UARM_SWIFT_PRO, b"@3 X1 Y2 Z3 R4", Event("@3 X1 Y2 Z3 R4")),
    ("uarm-marlin-ok-is-garbage", UARM_SWIFT_PRO, b"ok", Garbage(b"ok")),
    ("uarm-noise", UARM_SWIFT_PRO, b"\xfe\x00\xa5<|\x85", Garbage(b"\xfe\x00\xa5<|\x85")),
    ("dexarm-ok", DEXARM, b"ok", Ok()),
    (
        "dexarm-m114",
        DEXARM,
        b"X:0.00 Y:300.00 Z:0.00 E:0.00 Count X:0.00 Y:300.00 Z:0.00",
        Data("X:0.00 Y:300.00 Z:0.00 E:0.00 Count X:0.00 Y:300.00 Z:0.00"),
    ),
    ("dexarm-error", DEXARM, b"Error:Out of range", ErrorReply(None, None, "Out of range")),
    (
        "dexarm-unknown",
        DEXARM,
        b'echo:Unknown command: "M9"',
        ErrorReply(None, None, '"M9"'),
    ),
    ("dexarm-busy", DEXARM, b"echo:busy: processing", Event("echo:busy: processing")),
    ("dexarm-start", DEXARM, b"start", Event("start")),
    ("dexarm-control-char", DEXARM, b"ok\x07", Garbage(b"ok\x07")),
    # Marlin prints free text before `ok` (M888, M1112, reach checks): every printable line is
    # data to the DexArm, never garbage (M_dexarm.cpp GcodeSuite::M888, M1112)
    ("dexarm-module", DEXARM, b"THE CURRENT MODULE IS PUMP", Data("THE CURRENT MODULE IS PUMP")),
    ("dexarm-m1112-echo", DEXARM, b"M1112", Data("M1112")),
    ("dexarm-reach", DEXARM, b"XY beyond limit.....", Data("XY beyond limit.....")),
    ("dexarm-uarm-reply-is-data", DEXARM, b"$3 ok", Data("$3 ok")),
    # uarm_cmd_p2220: " X%s Y%s Z%s" with four decimals, no R
    (
        "uarm-p2220-v4",
        UARM_SWIFT_PRO,
        b"$5 ok X200.0000 Y-0.0000 Z150.0000",
        Ok(seq=5, data="X200.0000 Y-0.0000 Z150.0000"),
    ),
    # receive_cmd_line: a full queue answers without the sequence number
    ("uarm-buffer-full", UARM_SWIFT_PRO, b"E23 buffer full", Garbage(b"E23 buffer full")),
]


@pytest.mark.parametrize(
    ("dialect", "raw", "expected"), [r[1:] for r in REPLIES], ids=[r[0] for r in REPLIES]
)
def test_parse_line_table(dialect: codec.Dialect, raw: bytes, expected: codec.Reply) -> None:
    assert codec.parse_line(dialect, raw) == expected


def test_encode_command_numbers_only_the_uarm() -> None:
    assert codec.encode_command(UARM_SWIFT_PRO, "P2220", 7) == b"#7 P2220\n"
    assert codec.encode_command(DEXARM, "M114", 7) == b"M114\n"


def test_move_formats_match_each_firmware() -> None:
    # the uArm's X points away from its base (uarm_coord_convert.c: x < 0 "cann't arrive"), the
    # rig's y does: a quarter turn; the DexArm's frame is the rig's
    pose = Pose(x_mm=10, y_mm=200.126, z_mm=-0.001)
    assert codec.format_move(UARM_SWIFT_PRO, pose, 6000) == "G0 X200.13 Y-10.00 Z0.00 F6000.00"
    assert codec.format_move(DEXARM, pose, 6000) == "G1 F6000.00 X10.00 Y200.13 Z0.00"


def test_position_parses_from_either_layout() -> None:
    uarm = codec.parse_line(UARM_SWIFT_PRO, b"$2 ok X200.0000 Y1.2500 Z150.0000")
    assert isinstance(uarm, Ok)
    assert codec.parse_position(UARM_SWIFT_PRO, [uarm.data]) == Pose(
        x_mm=-1.25, y_mm=200.0, z_mm=150.0
    )
    texts = ["X:5.00 Y:300.00 Z:0.00 E:0.00", "DEXARM Theta A:0.00 B:0.00 C:0.00"]
    assert codec.parse_position(DEXARM, texts) == Pose(x_mm=5.0, y_mm=300.0, z_mm=0.0)
    assert codec.parse_position(DEXARM, ["FIRMWARE_NAME:Marlin"]) is None


def test_dexarm_position_is_not_read_from_stepper_counts() -> None:
    # motion.cpp report_current_position_projected: the position opens the first line; stepper
    # counts may follow on a line of their own, in steps, and the last line is not the answer
    texts = ["X:5.00 Y:300.00 Z:0.00 E:0.00 Count X:812 Y:4417 Z:93", "Count X:812 Y:4417 Z:93"]
    assert codec.parse_position(DEXARM, texts) == Pose(x_mm=5.0, y_mm=300.0, z_mm=0.0)


def test_refusals_are_read_from_the_dexarm_s_text() -> None:
    # dexarm.cpp dexarm_position_is_reachable / inverse_kinematics: text, then `ok`
    assert codec.refusal(DEXARM, ["XY beyond limit....."]) == "XY beyond limit....."
    not_homed = "Send M1112 or click HOME to initialize DexArm first before any motion."
    assert codec.refusal(DEXARM, ["echo:x", not_homed]) == not_homed
    assert codec.refusal(DEXARM, ["X:0.00 Y:300.00 Z:0.00 E:0.00"]) is None
    assert codec.refusal(UARM_SWIFT_PRO, ["XY beyond limit....."]) is None


def test_firmware_queries() -> None:
    assert codec.parse_firmware(UARM_SWIFT_PRO, ["V4.2.0"]) == "4.2.0"
    info = "FIRMWARE_NAME:Marlin DexArm V2.1 MACHINE_TYPE:DexArm"
    assert codec.parse_firmware(DEXARM, [info]) == "Marlin DexArm V2.1"


def test_unknown_dialect_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="dexarm"):
        codec.dialect("meArm")


def test_negative_dwell_is_refused() -> None:
    with pytest.raises(SafetyError):
        codec.format_dwell(DEXARM, -1)
    assert codec.format_dwell(UARM_SWIFT_PRO, 300) == "G2004 P300"


def test_command_codes_of_templates() -> None:
    assert codec.command_code(DEXARM.move) == "G1"
    assert codec.command_code(UARM_SWIFT_PRO.suction_on) == "M2231"
    assert codec.parse_command(UARM_SWIFT_PRO, "hello") is None
    assert codec.parse_command(UARM_SWIFT_PRO, "#9 M2231 V1") == codec.Command(
        seq=9, code="M2231", params={"V": 1.0}
    )


coordinates = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)
feeds = st.floats(min_value=1.0, max_value=1e5, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(d=dialects, x=coordinates, y=coordinates, z=coordinates, feed=feeds)
def test_move_round_trips_through_the_parser(
    d: codec.Dialect, x: float, y: float, z: float, feed: float
) -> None:
    line = codec.format_move(d, Pose(x_mm=x, y_mm=y, z_mm=z), feed)
    command = codec.parse_command(d, line)
    assert command is not None
    assert command.code == codec.command_code(d.move)
    params = command.params
    rig = codec.from_native(d, (params["X"], params["Y"], params["Z"]))
    assert rig == pytest.approx((x, y, z), abs=0.0051)
    assert params["F"] == pytest.approx(feed, abs=0.0051)


@given(d=dialects, xyz=st.tuples(coordinates, coordinates, coordinates))
def test_frames_are_inverse_and_the_uarm_s_x_is_the_rig_s_y(
    d: codec.Dialect, xyz: tuple[float, float, float]
) -> None:
    native = codec.to_native(d, xyz)
    assert codec.from_native(d, native) == xyz
    if d.frame == "x_forward":
        assert (native[0], native[2]) == (xyz[1], xyz[2])


any_float = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=300, deadline=None)
@given(d=dialects, x=any_float, y=any_float, z=any_float, feed=any_float)
def test_never_emits_nan_or_inf(
    d: codec.Dialect, x: float, y: float, z: float, feed: float
) -> None:
    pose = Pose.model_construct(x_mm=x, y_mm=y, z_mm=z)  # bypass validation on purpose
    try:
        line = codec.format_move(d, pose, feed)
    except SafetyError:
        assert not all(math.isfinite(v) for v in (x, y, z, feed)) or feed <= 0
        return
    assert "nan" not in line.lower() and "inf" not in line.lower()
    assert line.isascii()


@settings(max_examples=500, deadline=None)
@given(
    d=dialects,
    x=st.one_of(any_float, st.floats(-400, 400)),
    y=st.one_of(any_float, st.floats(0, 400)),
    z=st.one_of(any_float, st.floats(-150, 250)),
    seq=st.integers(1, 10**6),
)
def test_no_bytes_for_a_pose_outside_the_workspace(
    d: codec.Dialect, x: float, y: float, z: float, seq: int
) -> None:
    pose = Pose.model_construct(x_mm=x, y_mm=y, z_mm=z)
    finite = all(math.isfinite(v) for v in (x, y, z))
    inside = finite and WORKSPACE.contains(pose)
    try:
        data = codec.encode_move(d, pose, 6000.0, WORKSPACE, seq)
    except SafetyError:
        assert not inside
        return
    assert inside, f"bytes {data!r} produced for a pose outside the workspace"
    assert data.endswith(d.line_ending)


positions = st.tuples(st.floats(-1000, 1000), st.floats(-1000, 1000), st.floats(-1000, 1000)).map(
    lambda t: tuple(round(v, 2) for v in t)
)


@settings(max_examples=200, deadline=None)
@given(d=dialects, xyz=positions, seq=st.integers(1, 10**6))
def test_position_reply_round_trips(
    d: codec.Dialect, xyz: tuple[float, float, float], seq: int
) -> None:
    lines = codec.format_reply_ok(d, seq, codec.format_position(d, xyz))
    replies = [codec.parse_line(d, line.encode("ascii")) for line in lines]
    final = replies[-1]
    assert isinstance(final, Ok)
    assert final.seq == (seq if d.numbered else None)
    texts = [r.text for r in replies[:-1] if isinstance(r, Data)]
    texts += [final.data] if final.data else []
    pose = codec.parse_position(d, texts)
    assert pose is not None
    assert (pose.x_mm, pose.y_mm, pose.z_mm) == pytest.approx(xyz, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(d=dialects, code=st.integers(0, 99), seq=st.integers(1, 10**6))
def test_error_reply_round_trips(d: codec.Dialect, code: int, seq: int) -> None:
    lines = codec.format_reply_error(d, seq, code, "Out of range")
    first = codec.parse_line(d, lines[0].encode("ascii"))
    assert isinstance(first, ErrorReply)
    if d.numbered:
        assert (first.seq, first.code) == (seq, code)
    else:
        assert first.message == "Out of range"
        assert codec.parse_line(d, lines[-1].encode("ascii")) == Ok()
