"""G-code arm codec: how each dialect formats commands and reads replies, as data plus pure functions.

Two dialects are described, each by one `Dialect` record, as their firmware sources show them
(docs/fidelity-arm-modbus.md lists every behaviour with its reference):

- uFactory uArm Swift Pro (firmware V4, grbl-based; `Source code/uarm_protocol.c` of
  uArm-Developer/SwiftProForArduino): every command carries a sequence number (`#7 G0 X… Y… Z… F…`)
  and every reply echoes it (`$7 ok`, `$7 ok X… Y… Z…`, `$7 E22`); unsolicited events start with `@`
  (`@1` is the ready banner). G and M commands are queued and their reply is printed only once
  the arm is idle (`report_parse_result`), so a move's `ok` marks its end; P queries are answered
  at once, even mid-move. The arm's own frame has X pointing away from the base.
- Rotrics DexArm (Marlin 2; iwwwwwwi/Marlin_For_DexArm): plain commands (`G1 F… X… Y… Z…`), data
  lines first and then a bare `ok`; `Error:…` and `echo:Unknown command` are followed by an `ok`
  too. The firmware prints free text before its `ok` (`THE CURRENT MODULE IS PUMP`, `M1112`,
  `XY beyond limit.....`): every printable line is data. A move it refuses still gets its `ok`,
  after a line saying why.

Poses in the rig's frame (x to the right, y away from the base, z up: the DexArm's own frame)
are turned into the arm's frame on the way out and back on the way in (`to_native`,
`from_native`). Nothing here does I/O: the driver and the emulator share these functions, so both
sides agree on the wire format by construction, and hypothesis checks the round trips.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from rig.config import Pose, Workspace
from rig.errors import ConfigError, SafetyError
from rig.motion import check_within

DialectName = Literal["uarm-swift-pro", "dexarm"]


@dataclass(frozen=True)
class Dialect:
    """Everything that differs between two G-code arm firmwares, as data."""

    name: DialectName
    model: str
    #: move template; `{x}`, `{y}`, `{z}` in mm (the arm's frame) and `{f}` in mm/min
    move: str
    #: the arm's frame: "rig" (x right, y away from the base) or "x_forward" (x away from it)
    frame: Literal["rig", "x_forward"]
    #: firmware homing command and the pose it ends in, rig frame (None: absolute encoders)
    home: str | None
    home_pose_mm: tuple[float, float, float] | None
    suction_on: str
    suction_off: str
    #: extra commands that also switch the pump off (the emulator drops a held coin on them)
    suction_off_aliases: tuple[str, ...]
    position_query: str
    #: a command whose `ok` only comes once every queued motion has finished (Marlin `M400`)
    wait_command: str | None
    #: whether a move's own reply comes only once the arm has stopped (uArm: synchronous
    #: replies are held until the arm is idle), so no completion query is needed
    ack_on_completion: bool
    #: firmware dwell, in milliseconds
    dwell: str
    #: whether the dwell's reply comes at once and the firmware holds the *next* command
    #: instead (uArm G2004), rather than answering when the dwell is over (Marlin G4)
    dwell_holds_next: bool
    info_query: str
    info_re: str
    #: commands that put the arm into a known mode after connecting
    setup: tuple[str, ...]
    #: whether commands carry `#n` and replies echo `$n` (so stale replies can be told apart)
    numbered: bool
    #: whether data rides on the `ok` line (`$n ok X…`) rather than on lines before a bare `ok`
    data_inline: bool
    #: whether an error line is followed by an `ok` that closes the exchange (Marlin)
    error_then_ok: bool
    banner: tuple[str, ...]
    ok_re: str
    error_re: str
    event_re: str
    data_re: str
    #: data lines with which the firmware refuses a command it still answers `ok` to
    refusal_re: str
    #: the refusal that means "home me first" (DexArm: no motion before M1112)
    not_homed_re: str
    position_re: str
    #: formats of the emulator's replies
    position_reply: str
    info_reply: str
    error_reply: str
    unknown_command_code: int
    parameter_code: int
    unreachable_code: int
    fault_code: int
    line_ending: bytes = b"\n"


UARM_SWIFT_PRO = Dialect(
    name="uarm-swift-pro",
    model="uFactory uArm Swift Pro",
    move="G0 X{x} Y{y} Z{z} F{f}",
    # uarm_coord_convert.c coord_to_angle: x < 0 "cann't arrive"; X points away from the base
    frame="x_forward",
    home=None,
    home_pose_mm=None,
    suction_on="M2231 V1",
    suction_off="M2231 V0",
    suction_off_aliases=(),
    position_query="P2220",
    wait_command=None,
    ack_on_completion=True,  # uarm_protocol.c report_parse_result: sync replies when idle
    dwell="G2004 P{ms}",
    dwell_holds_next=True,  # uarm_cmd_g2004 sets gcode_delay_flag; parse_cmd_line waits on it
    info_query="P2203",
    info_re=r"V(?P<firmware>\S+)",
    setup=("M2400 S0",),  # work mode 0: suction cup / gripper
    numbered=True,
    data_inline=True,
    error_then_ok=False,
    banner=("@1",),  # uarm_swift.c uarm_swift_init
    ok_re=r"^\$(?P<seq>\d+) ok(?: (?P<data>.*))?$",
    error_re=r"^\$(?P<seq>\d+) E(?P<code>\d+)(?: (?P<message>.*))?$",
    event_re=r"^@\d+(?: .*)?$",
    data_re=r"(?!)",  # never: the uArm puts every datum on its `$n ok` line
    refusal_re=r"(?!)",  # never: the uArm refuses with `$n E..`
    not_homed_re=r"(?!)",
    position_re=(
        r"^X(?P<x>[-+]?\d+(?:\.\d+)?) Y(?P<y>[-+]?\d+(?:\.\d+)?) Z(?P<z>[-+]?\d+(?:\.\d+)?)"
    ),
    # uarm_cmd_p2220: " X%s Y%s Z%s" with dtostrf(v, 5, 4): four decimals, no R
    position_reply="X{x:.4f} Y{y:.4f} Z{z:.4f}",
    info_reply="V4.2.0",
    error_reply="E{code}",
    unknown_command_code=20,  # STATUS_GCODE_UNSUPPORTED_COMMAND -> E20
    parameter_code=21,  # UARM_CMD_ERROR -> E21
    unreachable_code=22,  # UARM_COORD_ERROR -> E22
    fault_code=26,  # UARM_ENCODER_ERR0R -> E26 (closed-loop step loss, firmware 4.2+)
)

DEXARM = Dialect(
    name="dexarm",
    model="Rotrics DexArm",
    move="G1 F{f} X{x} Y{y} Z{z}",
    frame="rig",
    home="M1112",
    home_pose_mm=(0.0, 300.0, 0.0),  # M_dexarm.cpp GcodeSuite::M1112 without X Y Z
    suction_on="M1000",
    suction_off="M1002",
    suction_off_aliases=("M1001", "M1003"),
    position_query="M114",
    wait_command="M400",
    ack_on_completion=False,  # Marlin answers G1 once it is planned
    dwell="G4 P{ms}",
    dwell_holds_next=False,  # Marlin G4 answers `ok` when the dwell is over
    info_query="M115",
    info_re=r"FIRMWARE_NAME:(?P<firmware>.+?)(?: [A-Z_]+:|$)",
    setup=("M888 P2",),  # end effector: pneumatic module
    numbered=False,
    data_inline=False,
    error_then_ok=True,
    banner=("start", "echo:DexArm emulated firmware"),
    ok_re=r"^ok(?: (?P<data>.*))?$",
    error_re=r"^(?:Error:|echo:Unknown command:)\s*(?P<message>.*)$",
    event_re=r"^(?:start|echo:.*|busy:.*|//.*)$",
    # Marlin prints free text before `ok` (M888, M1112, reach checks): all of it is data
    data_re=r"^.+$",
    # dexarm.cpp dexarm_position_is_reachable and inverse_kinematics: text, then `ok`
    refusal_re=r"beyond limit|Send M1112",
    not_homed_re=r"Send M1112",
    # motion.cpp report_current_position_projected: the position opens the line; stepper
    # counts (" Count ...") may follow on it or on lines of their own, and must not be read
    position_re=(
        r"^X:(?P<x>[-+]?\d+(?:\.\d+)?) Y:(?P<y>[-+]?\d+(?:\.\d+)?) Z:(?P<z>[-+]?\d+(?:\.\d+)?)"
    ),
    position_reply="X:{x:.2f} Y:{y:.2f} Z:{z:.2f} E:0.00",
    info_reply="FIRMWARE_NAME:Marlin DexArm V2.1 (emulated) MACHINE_TYPE:DexArm",
    error_reply="Error:{message}",
    unknown_command_code=0,
    parameter_code=0,
    unreachable_code=0,
    fault_code=0,
)

DIALECTS: dict[str, Dialect] = {d.name: d for d in (UARM_SWIFT_PRO, DEXARM)}


def dialect(name: str) -> Dialect:
    """The dialect record called `name`.

    Raises:
        ConfigError: no such dialect (the message lists the known ones).
    """
    try:
        return DIALECTS[name]
    except KeyError:
        raise ConfigError(
            f"unknown arm dialect {name!r}; choose one of {sorted(DIALECTS)}"
        ) from None


# ---------------------------------------------------------------- frames

XYZ = tuple[float, float, float]


def to_native(d: Dialect, xyz: XYZ) -> XYZ:
    """Rig-frame coordinates in the arm's own frame (a quarter turn for the uArm)."""
    x, y, z = xyz
    if d.frame == "x_forward":
        # right-handed both: rig y (away from the base) is the uArm's X, rig x its -Y
        return (y, -x, z)
    return (x, y, z)


def from_native(d: Dialect, xyz: XYZ) -> XYZ:
    """The arm's own coordinates in the rig's frame (inverse of `to_native`)."""
    x, y, z = xyz
    if d.frame == "x_forward":
        return (-y, x, z)
    return (x, y, z)


# ---------------------------------------------------------------- host → arm


def _number(value: float) -> str:
    # two decimals: 10 µm, finer than either arm repeats; "-0.00" is written as "0.00"
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def format_move(d: Dialect, pose: Pose, feed_mm_per_min: float) -> str:
    """The move command text (without sequence number or line ending).

    Raises:
        SafetyError: a coordinate or the feed is NaN or infinite, or the feed is not positive.
    """
    for axis in ("x_mm", "y_mm", "z_mm"):
        check_within(getattr(pose, axis), -math.inf, math.inf, what=f"arm {axis}", unit="mm")
    if not (math.isfinite(feed_mm_per_min) and feed_mm_per_min > 0):
        raise SafetyError(f"arm feed {feed_mm_per_min} mm/min must be a positive finite number")
    x, y, z = to_native(d, (pose.x_mm, pose.y_mm, pose.z_mm))
    return d.move.format(x=_number(x), y=_number(y), z=_number(z), f=_number(feed_mm_per_min))


def check_pose(workspace: Workspace, pose: Pose, *, device: str = "arm") -> Pose:
    """Return the pose if every coordinate is finite and inside the workspace box.

    Raises:
        SafetyError: a coordinate is NaN/inf or outside the box (the message names axis and limits).
    """
    for axis in ("x_mm", "y_mm", "z_mm"):
        low, high = getattr(workspace, axis)
        check_within(getattr(pose, axis), low, high, what=f"{device} {axis}", unit="mm")
    return pose


def encode_command(d: Dialect, text: str, seq: int | None = None) -> bytes:
    """One command line on the wire: `#seq ` first for numbered dialects, then the line ending."""
    prefix = f"#{seq} " if d.numbered and seq is not None else ""
    return (prefix + text).encode("ascii") + d.line_ending


def encode_move(
    d: Dialect,
    pose: Pose,
    feed_mm_per_min: float,
    workspace: Workspace,
    seq: int | None = None,
) -> bytes:
    """The bytes of a move, produced only for a pose inside the workspace.

    Raises:
        SafetyError: the pose lies outside the workspace or a number is not finite.
    """
    check_pose(workspace, pose)
    return encode_command(d, format_move(d, pose, feed_mm_per_min), seq)


def format_dwell(d: Dialect, duration_ms: int) -> str:
    """A firmware dwell command (the firmware waits; its `ok` marks the end).

    Raises:
        SafetyError: a negative duration.
    """
    if duration_ms < 0:
        raise SafetyError(f"arm dwell {duration_ms} ms must not be negative")
    return d.dwell.format(ms=int(duration_ms))


# ---------------------------------------------------------------- arm → host


@dataclass(frozen=True)
class Ok:
    """The command was accepted; `data` is what rode on the ok line (uArm), if anything."""

    seq: int | None = None
    data: str = ""


@dataclass(frozen=True)
class ErrorReply:
    """The arm refused or failed the command."""

    seq: int | None
    code: int | None
    message: str


@dataclass(frozen=True)
class Data:
    """A reply line that comes before the `ok` (Marlin `M114`, `M115` output)."""

    text: str


@dataclass(frozen=True)
class Event:
    """An unsolicited line: a banner, a `@n` report, `echo:` chatter, a busy keep-alive."""

    text: str


@dataclass(frozen=True)
class Garbage:
    """Bytes no dialect would send: line noise, a wrong baud rate."""

    raw: bytes


Reply = Ok | ErrorReply | Data | Event | Garbage


def _printable(raw: bytes) -> str | None:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() else None


def parse_line(d: Dialect, raw: bytes) -> Reply:
    """Classify one received line (without its line ending)."""
    text = _printable(raw.rstrip(b"\r\n"))
    if text is None:
        return Garbage(raw)
    text = text.strip()
    if match := re.match(d.ok_re, text):
        seq = match.groupdict().get("seq")
        return Ok(seq=int(seq) if seq is not None else None, data=match.group("data") or "")
    if match := re.match(d.error_re, text):
        groups = match.groupdict()
        seq, code = groups.get("seq"), groups.get("code")
        return ErrorReply(
            seq=int(seq) if seq is not None else None,
            code=int(code) if code is not None else None,
            message=groups.get("message") or text,
        )
    if re.match(d.event_re, text):
        return Event(text)
    if re.match(d.data_re, text):
        return Data(text)
    return Garbage(raw)


def parse_position(d: Dialect, texts: list[str]) -> Pose | None:
    """The last position found in a reply's data lines (the freshest), rig frame, or None."""
    for text in reversed(texts):
        if match := re.search(d.position_re, text):
            native = (float(match.group("x")), float(match.group("y")), float(match.group("z")))
            x, y, z = from_native(d, native)
            return Pose(x_mm=x + 0.0, y_mm=y + 0.0, z_mm=z + 0.0)  # + 0.0: no "-0.0"
    return None


def refusal(d: Dialect, texts: list[str]) -> str | None:
    """The data line with which the firmware refused a command it answered `ok` to, if any."""
    for text in texts:
        if re.search(d.refusal_re, text):
            return text
    return None


def parse_firmware(d: Dialect, texts: list[str]) -> str | None:
    """The firmware version from an info-query reply, or None."""
    for text in texts:
        if match := re.search(d.info_re, text):
            return match.group("firmware").strip()
    return None


# ---------------------------------------------------------------- emulator side

_WORD = re.compile(r"([A-Z])\s*([-+]?(?:\d+\.?\d*|\.\d+)|[-+]?(?:nan|inf))", re.IGNORECASE)
_NUMBERED = re.compile(r"^#(?P<seq>\d+)\s+(?P<body>.*)$")


@dataclass(frozen=True)
class Command:
    """A received command: its sequence number, code word (`G0`, `M2231`) and parameters."""

    seq: int | None
    code: str
    params: dict[str, float]


def command_code(text: str) -> str:
    """The code word of a command template or line (`"G1 F{f} X{x}"` → `"G1"`)."""
    match = _WORD.match(text.strip())
    if match is None:
        return text.strip().split(" ", 1)[0].upper()
    return f"{match.group(1).upper()}{int(float(match.group(2)))}"


def parse_command(d: Dialect, line: str) -> Command | None:
    """Parse a received command line; None when it is not a G-code line at all."""
    text = line.strip()
    seq: int | None = None
    if d.numbered and (numbered := _NUMBERED.match(text)):
        seq = int(numbered.group("seq"))
        text = numbered.group("body")
    words = _WORD.findall(text)
    if not words or not re.match(r"^[GMP]", text, re.IGNORECASE):
        return None
    letter, value = words[0]
    try:
        code = f"{letter.upper()}{int(float(value))}"
    except (ValueError, OverflowError):
        return None
    params = {key.upper(): float(number) for key, number in words[1:]}
    return Command(seq=seq, code=code, params=params)


def format_reply_ok(d: Dialect, seq: int | None, data: str = "") -> list[str]:
    """The lines of a successful reply, data included, in the dialect's layout."""
    prefix = f"${seq} " if d.numbered and seq is not None else ""
    if d.data_inline:
        return [f"{prefix}ok" + (f" {data}" if data else "")]
    return ([data] if data else []) + ["ok"]


def format_reply_error(d: Dialect, seq: int | None, code: int, message: str) -> list[str]:
    """The lines of an error reply (Marlin closes it with an `ok`)."""
    prefix = f"${seq} " if d.numbered and seq is not None else ""
    line = prefix + d.error_reply.format(code=code, message=message)
    return [line, "ok"] if d.error_then_ok else [line]


def format_position(d: Dialect, xyz: XYZ) -> str:
    """The position data as the dialect reports it, for rig-frame coordinates."""
    x, y, z = to_native(d, xyz)
    return d.position_reply.format(x=x + 0.0, y=y + 0.0, z=z + 0.0)
