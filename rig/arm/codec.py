"""G-code arm codec: how each dialect formats commands and reads replies, as data plus pure functions.

Two dialects are described, each by one `Dialect` record:

- uFactory uArm Swift Pro: every command carries a sequence number (`#7 G0 X… Y… Z… F…`) and
  every reply echoes it (`$7 ok`, `$7 ok X… Y… Z…`, `$7 E22`); unsolicited events start with `@`
  (`@1` is the ready banner).
- Rotrics DexArm (Marlin): plain commands (`G1 F… X… Y… Z…`), data lines first (`X:… Y:… Z:…`)
  and then a bare `ok`; `Error:…` and `echo:Unknown command` are followed by an `ok` too.

Nothing here does I/O: the driver and the emulator share these functions, so both sides agree on
the wire format by construction, and hypothesis checks the round trips.
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
    #: move template; `{x}`, `{y}`, `{z}` in mm and `{f}` in mm/min
    move: str
    #: firmware homing command and the pose it ends in (None: absolute encoders, no homing)
    home: str | None
    home_pose_mm: tuple[float, float, float] | None
    suction_on: str
    suction_off: str
    #: extra commands that also switch the pump off (the emulator drops a held coin on them)
    suction_off_aliases: tuple[str, ...]
    position_query: str
    #: a command whose `ok` only comes once every queued motion has finished (Marlin `M400`)
    wait_command: str | None
    #: a query answering whether the arm still moves, when there is no wait command
    moving_query: str | None
    moving_re: str | None
    #: firmware dwell, in milliseconds: the firmware waits, the host only waits for its `ok`
    dwell: str
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
    position_re: str
    #: formats of the emulator's replies
    position_reply: str
    info_reply: str
    error_reply: str
    unknown_command_code: int
    parameter_code: int
    unreachable_code: int
    fault_code: int
    #: the emulated arm's reach: radius in the XY plane and height, in mm
    reach_radius_mm: tuple[float, float]
    reach_z_mm: tuple[float, float]
    line_ending: bytes = b"\n"


UARM_SWIFT_PRO = Dialect(
    name="uarm-swift-pro",
    model="uFactory uArm Swift Pro",
    move="G0 X{x} Y{y} Z{z} F{f}",
    home=None,
    home_pose_mm=None,
    suction_on="M2231 V1",
    suction_off="M2231 V0",
    suction_off_aliases=(),
    position_query="P2220",
    wait_command=None,
    moving_query="M2200",
    moving_re=r"V(?P<moving>\d)",
    dwell="G2004 P{ms}",
    info_query="P2203",
    info_re=r"V(?P<firmware>\S+)",
    setup=("M2400 S0",),  # work mode 0: suction cup / gripper
    numbered=True,
    data_inline=True,
    error_then_ok=False,
    banner=("@1",),
    ok_re=r"^\$(?P<seq>\d+) ok(?: (?P<data>.*))?$",
    error_re=r"^\$(?P<seq>\d+) E(?P<code>\d+)(?: (?P<message>.*))?$",
    event_re=r"^@\d+(?: .*)?$",
    data_re=r"(?!)",  # never: the uArm puts every datum on its `$n ok` line
    position_re=(
        r"X(?P<x>[-+]?\d+(?:\.\d+)?) Y(?P<y>[-+]?\d+(?:\.\d+)?) Z(?P<z>[-+]?\d+(?:\.\d+)?)"
    ),
    position_reply="X{x:.2f} Y{y:.2f} Z{z:.2f} R90.00",
    info_reply="V4.2.0",
    error_reply="E{code}",
    unknown_command_code=20,
    parameter_code=21,
    unreachable_code=22,
    fault_code=25,
    reach_radius_mm=(100.0, 360.0),
    reach_z_mm=(-150.0, 230.0),
)

DEXARM = Dialect(
    name="dexarm",
    model="Rotrics DexArm",
    move="G1 F{f} X{x} Y{y} Z{z}",
    home="M1112",
    home_pose_mm=(0.0, 300.0, 0.0),
    suction_on="M1000",
    suction_off="M1002",
    suction_off_aliases=("M1001", "M1003"),
    position_query="M114",
    wait_command="M400",
    moving_query=None,
    moving_re=None,
    dwell="G4 P{ms}",
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
    data_re=r"^[A-Za-z_][A-Za-z_ ]*:.*$",
    position_re=(
        r"X:(?P<x>[-+]?\d+(?:\.\d+)?) Y:(?P<y>[-+]?\d+(?:\.\d+)?) Z:(?P<z>[-+]?\d+(?:\.\d+)?)"
    ),
    position_reply="X:{x:.2f} Y:{y:.2f} Z:{z:.2f} E:0.00 Count X:{x:.2f} Y:{y:.2f} Z:{z:.2f}",
    info_reply="FIRMWARE_NAME:Marlin DexArm V2.1 (emulated) MACHINE_TYPE:DexArm",
    error_reply="Error:{message}",
    unknown_command_code=0,
    parameter_code=0,
    unreachable_code=0,
    fault_code=0,
    reach_radius_mm=(120.0, 420.0),
    reach_z_mm=(-120.0, 230.0),
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
    return d.move.format(
        x=_number(pose.x_mm),
        y=_number(pose.y_mm),
        z=_number(pose.z_mm),
        f=_number(feed_mm_per_min),
    )


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
    """The last position found in a reply's data lines (the freshest), or None."""
    for text in reversed(texts):
        if match := re.search(d.position_re, text):
            return Pose(
                x_mm=float(match.group("x")),
                y_mm=float(match.group("y")),
                z_mm=float(match.group("z")),
            )
    return None


def parse_moving(d: Dialect, texts: list[str]) -> bool | None:
    """Whether a moving-query reply says the arm still moves (None: no answer in it)."""
    if d.moving_re is None:
        return None
    for text in texts:
        if match := re.search(d.moving_re, text):
            return match.group("moving") != "0"
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


def format_position(d: Dialect, xyz: tuple[float, float, float]) -> str:
    """The position data as the dialect reports it."""
    x, y, z = xyz
    return d.position_reply.format(x=x, y=y, z=z)
