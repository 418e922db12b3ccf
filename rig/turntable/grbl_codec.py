"""GRBL 1.1 wire codec: pure functions that format commands and parse received lines.

Nothing here does I/O. `parse_line` never raises: anything it cannot read comes back as a
`ParseError` value, so a driver can log line noise and keep waiting. `encode_move` refuses
non-finite targets with SafetyError, so a NaN can never reach a motor.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from rig.errors import SafetyError

#: GRBL real-time commands: acted on at once, outside the line buffer, and never answered `ok`.
STATUS_QUERY = b"?"
FEED_HOLD = b"!"
CYCLE_START = b"~"
SOFT_RESET = b"\x18"

#: Axis letters in the order GRBL (and its multi-axis forks) lists them in a status report.
AXES = "XYZABC"

#: Machine states a GRBL 1.1 status report can name (before an optional `:substate`).
STATES = frozenset({"Idle", "Run", "Hold", "Jog", "Alarm", "Door", "Check", "Home", "Sleep"})

#: GRBL 1.1 `error:N` meanings (doc/csv/error_codes_en_US.csv in the GRBL sources).
ERROR_MEANINGS: dict[int, str] = {
    1: "G-code words consist of a letter and a value; letter was not found",
    2: "missing the expected G-code word value or numeric value format is not valid",
    3: "'$' system command was not recognized or supported",
    4: "negative value received for an expected positive value",
    5: "homing cycle failure: homing is not enabled via settings",
    6: "minimum step pulse time must be greater than 3 usec",
    7: "EEPROM read failed; auto-restoring affected EEPROM to default values",
    8: "'$' command cannot be used unless Grbl is IDLE",
    9: "G-code commands are locked out during alarm or jog state",
    10: "soft limits cannot be enabled without homing also enabled",
    11: "max characters per line exceeded; received command line was not executed",
    12: "'$' setting value causes the step rate to exceed the maximum supported",
    13: "safety door detected as opened and door state initiated",
    14: "build info or startup line exceeded EEPROM line length limit",
    15: "jog target exceeds machine travel; jog command has been ignored",
    16: "jog command has no '=' or contains prohibited g-code",
    17: "laser mode requires PWM output",
    20: "unsupported or invalid g-code command found in block",
    21: "more than one g-code command from same modal group found in block",
    22: "feed rate has not yet been set or is undefined",
    23: "g-code command in block requires an integer value",
    24: "more than one g-code command that requires axis words found in block",
    25: "repeated g-code word found in block",
    26: "no axis words found in block for g-code command that requires them",
    27: "line number value is invalid",
    28: "g-code command is missing a required value word",
    29: "G59.x work coordinate systems are not supported",
    30: "G53 only allowed with G0 and G1 motion modes",
    31: "axis words found in block when no command or current modal state uses them",
    32: "G2 and G3 arcs require at least one in-plane axis word",
    33: "motion command target is invalid",
    34: "arc radius value is invalid",
    35: "G2 and G3 arcs require at least one in-plane offset word",
    36: "unused value words found in block",
    37: "G43.1 dynamic tool length offset is not assigned to configured tool length axis",
    38: "tool number greater than max supported value",
}

#: GRBL 1.1 `ALARM:N` meanings (doc/csv/alarm_codes_en_US.csv in the GRBL sources).
ALARM_MEANINGS: dict[int, str] = {
    1: "hard limit triggered; machine position is likely lost, re-homing is recommended",
    2: "soft limit: motion target exceeds machine travel",
    3: "reset while in motion; machine position is likely lost, re-homing is recommended",
    4: "probe fail: the probe is not in the expected initial state",
    5: "probe fail: the probe did not contact the workpiece",
    6: "homing fail: reset during active homing cycle",
    7: "homing fail: safety door was opened during homing cycle",
    8: "homing fail: cycle failed to clear limit switch when pulling off",
    9: "homing fail: could not find limit switch within search distance",
}

_NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)$")
_BANNER = re.compile(r"^Grbl (\d+\.\d+[a-zA-Z]?)\b(.*)$")
_MESSAGE = re.compile(r"^\[([A-Za-z][A-Za-z0-9]*):(.*)\]$")
_SETTING = re.compile(r"^\$(\d+)=(.*)$")
_STARTUP = re.compile(r"^\$N(\d)=(.*)$")
# nuts_bolts.c read_float: a sign, digits and at most one point; a second point ends the number
_WORD = re.compile(r"([A-Za-z])\s*([+-]?[0-9]*\.?[0-9]*)")


def error_meaning(code: int) -> str:
    """GRBL's explanation of `error:code` (or a generic text for codes it does not define)."""
    return ERROR_MEANINGS.get(code, "unknown GRBL error code")


def alarm_meaning(code: int) -> str:
    """GRBL's explanation of `ALARM:code` (or a generic text for codes it does not define)."""
    return ALARM_MEANINGS.get(code, "unknown GRBL alarm code")


def axis_index(axis: str) -> int:
    """Position of an axis letter in a status report's coordinate list.

    Raises:
        ValueError: the letter is not one of X, Y, Z, A, B, C.
    """
    index = AXES.find(axis.upper()) if len(axis) == 1 else -1
    if index < 0:
        raise ValueError(f"unknown GRBL axis {axis!r}; axes are {', '.join(AXES)}")
    return index


# ---------------------------------------------------------------------------- parsed values


@dataclass(frozen=True)
class Ok:
    """`ok`: the previous command line was accepted."""


@dataclass(frozen=True)
class ErrorReply:
    """`error:N`: the previous command line was rejected with code N."""

    code: int

    @property
    def meaning(self) -> str:
        """GRBL's explanation of the code."""
        return error_meaning(self.code)


@dataclass(frozen=True)
class Alarm:
    """`ALARM:N`: the controller entered the alarm state and locked out motion."""

    code: int

    @property
    def meaning(self) -> str:
        """GRBL's explanation of the code."""
        return alarm_meaning(self.code)


@dataclass(frozen=True)
class Status:
    """A real-time status report `<State|MPos:…|FS:…>`, coordinates in machine units.

    `mpos` or `wpos` is set (GRBL sends one, per setting $10); `wco` only in some reports,
    and MPos = WPos + WCO. `fields` keeps every other field (Bf, Ln, Pn, Ov, A, …) verbatim.
    """

    state: str
    substate: int | None = None
    mpos: tuple[float, ...] | None = None
    wpos: tuple[float, ...] | None = None
    wco: tuple[float, ...] | None = None
    feed: float | None = None
    spindle: float | None = None
    fields: dict[str, str] = field(default_factory=dict)

    def machine_position(self, wco: tuple[float, ...] | None = None) -> tuple[float, ...] | None:
        """MPos, from the report or as WPos + WCO (this report's WCO, else the one given)."""
        if self.mpos is not None:
            return self.mpos
        offset = self.wco if self.wco is not None else wco
        if self.wpos is None or offset is None:
            return None
        return _combine(self.wpos, offset, +1)

    def work_position(self, wco: tuple[float, ...] | None = None) -> tuple[float, ...] | None:
        """WPos, from the report or as MPos - WCO (this report's WCO, else the one given)."""
        if self.wpos is not None:
            return self.wpos
        offset = self.wco if self.wco is not None else wco
        if self.mpos is None or offset is None:
            return None
        return _combine(self.mpos, offset, -1)


@dataclass(frozen=True)
class Banner:
    """The start-up line `Grbl 1.1h ['$' for help]`, sent at power-up and after a soft reset."""

    version: str
    text: str

    @property
    def firmware(self) -> str:
        """`Grbl` and the version, as shown in an identity."""
        return f"Grbl {self.version}"


@dataclass(frozen=True)
class Message:
    """A bracketed feedback line: `[MSG:…]`, `[GC:…]`, `[VER:…]`, `[G54:…]`, `[echo:…]`, …."""

    kind: str
    text: str


@dataclass(frozen=True)
class Setting:
    """One `$N=V` line of a `$$` settings dump."""

    number: int
    value: float


@dataclass(frozen=True)
class ParseError:
    """A line that is not GRBL 1.1 (line noise, another firmware): kept for logging."""

    raw: bytes
    reason: str


Reply = Ok | ErrorReply | Alarm | Status | Banner | Message | Setting | ParseError


# ---------------------------------------------------------------------------- parsing


def parse_line(raw: bytes | str) -> Reply:
    """Parse one received line (with or without its line ending) into a typed value; never raises."""
    data = raw.encode("latin-1", errors="replace") if isinstance(raw, str) else bytes(raw)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return ParseError(data, "non-ASCII bytes")
    text = text.strip()
    if not text:
        return ParseError(data, "empty line")
    if not text.isprintable():
        return ParseError(data, "control characters in line")
    if text == "ok":
        return Ok()
    if text.startswith("error:"):
        code = _parse_code(text[len("error:") :])
        return ErrorReply(code) if code is not None else ParseError(data, "bad error code")
    if text.startswith("ALARM:"):
        code = _parse_code(text[len("ALARM:") :])
        return Alarm(code) if code is not None else ParseError(data, "bad alarm code")
    if text.startswith("<"):
        return _parse_status(text, data)
    if match := _BANNER.match(text):
        return Banner(version=match.group(1), text=text)
    if match := _MESSAGE.match(text):
        return Message(kind=match.group(1), text=match.group(2))
    if match := _STARTUP.match(text):
        return Message(kind=f"N{match.group(1)}", text=match.group(2))
    if match := _SETTING.match(text):
        value = _parse_number(match.group(2))
        if value is None:
            return ParseError(data, "bad setting value")
        return Setting(number=int(match.group(1)), value=value)
    return ParseError(data, "not a GRBL 1.1 line")


def _parse_code(text: str) -> int | None:
    # int() alone would accept " 1", "+1" and "1_0"; GRBL only ever sends plain digits
    if not text.isdigit() or not text.isascii() or len(text) > 4:
        return None
    return int(text)


def _parse_number(text: str) -> float | None:
    # float() would accept "nan", "inf", "1e5" and "1_0"; GRBL sends plain decimals only
    if not _NUMBER.match(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _parse_numbers(text: str) -> tuple[float, ...] | None:
    values = [_parse_number(part) for part in text.split(",")]
    if any(v is None for v in values):
        return None
    return tuple(v for v in values if v is not None)


def _parse_status(text: str, data: bytes) -> Reply:
    if not text.endswith(">") or len(text) < 3:
        return ParseError(data, "unterminated status report")
    parts = text[1:-1].split("|")
    state, _, sub = parts[0].partition(":")
    if state not in STATES:
        return ParseError(data, f"unknown machine state {state!r}")
    substate: int | None = None
    if sub:
        substate = _parse_code(sub)
        if substate is None:
            return ParseError(data, "bad substate")
    coords: dict[str, tuple[float, ...]] = {}
    feed = spindle = None
    others: dict[str, str] = {}
    for part in parts[1:]:
        name, colon, value = part.partition(":")
        if not colon or not name:
            return ParseError(data, f"bad status field {part!r}")
        if name in ("MPos", "WPos", "WCO"):
            numbers = _parse_numbers(value)
            if numbers is None:
                return ParseError(data, f"bad {name} coordinates")
            coords[name] = numbers
        elif name in ("FS", "F"):
            numbers = _parse_numbers(value)
            if numbers is None or len(numbers) != (2 if name == "FS" else 1):
                return ParseError(data, f"bad {name} field")
            feed = numbers[0]
            spindle = numbers[1] if name == "FS" else None
        else:
            others[name] = value
    if ("MPos" in coords) == ("WPos" in coords):
        return ParseError(data, "status report needs exactly one of MPos and WPos")
    return Status(
        state=state,
        substate=substate,
        mpos=coords.get("MPos"),
        wpos=coords.get("WPos"),
        wco=coords.get("WCO"),
        feed=feed,
        spindle=spindle,
        fields=others,
    )


def _combine(a: tuple[float, ...], b: tuple[float, ...], sign: int) -> tuple[float, ...]:
    return tuple(round(x + sign * y, 6) for x, y in zip(a, b, strict=False))


# ---------------------------------------------------------------------------- formatting


def format_number(value: float, decimals: int = 3) -> str:
    """A fixed-point number as GRBL writes and reads it (never `-0.000`, never exponent form).

    Raises:
        SafetyError: the value is NaN or infinite.
    """
    if not math.isfinite(value):
        raise SafetyError(f"refusing to format non-finite value {value}")
    text = f"{value:.{decimals}f}"
    if float(text) == 0.0:
        text = f"{0.0:.{decimals}f}"
    return text


def encode_move(
    angle_deg: float,
    *,
    axis: str = "X",
    units_per_deg: float = 1.0,
    feed_deg_per_min: float | None = None,
    decimals: int = 3,
) -> bytes:
    """`G90 G0 X…` (rapid) or `G90 G1 X… F…` (feed in axis units/min) to an absolute angle.

    Raises:
        SafetyError: the angle, scale or feed is NaN/inf, or the feed or scale is not positive.
    """
    axis_index(axis)
    if not (math.isfinite(units_per_deg) and units_per_deg > 0):
        raise SafetyError(f"units_per_deg must be a positive finite number, got {units_per_deg}")
    if not math.isfinite(angle_deg):
        raise SafetyError(f"target angle {angle_deg} deg is not a finite number")
    target = format_number(angle_deg * units_per_deg, decimals)
    if feed_deg_per_min is None:
        return f"G90 G0 {axis.upper()}{target}\n".encode("ascii")
    if not (math.isfinite(feed_deg_per_min) and feed_deg_per_min > 0):
        raise SafetyError(f"feed {feed_deg_per_min} deg/min must be a positive finite number")
    feed = format_number(feed_deg_per_min * units_per_deg, decimals)
    return f"G90 G1 {axis.upper()}{target} F{feed}\n".encode("ascii")


def encode_set_zero(axis: str = "X") -> bytes:
    """`G10 L20 P1 X0`: make the current position zero in G54 (kept by GRBL across resets).

    Raises:
        ValueError: the axis letter is unknown.
    """
    axis_index(axis)
    return f"G10 L20 P1 {axis.upper()}0\n".encode("ascii")


def format_status(status: Status) -> str:
    """Write a status report as GRBL 1.1 does (`<Idle|MPos:0.000,0.000,0.000|FS:0,0>`)."""
    state = status.state if status.substate is None else f"{status.state}:{status.substate}"
    parts = [state]
    if status.mpos is not None:
        parts.append("MPos:" + ",".join(format_number(v) for v in status.mpos))
    if status.wpos is not None:
        parts.append("WPos:" + ",".join(format_number(v) for v in status.wpos))
    if status.feed is not None:
        if status.spindle is not None:
            parts.append(f"FS:{format_number(status.feed, 0)},{format_number(status.spindle, 0)}")
        else:
            parts.append(f"F:{format_number(status.feed, 0)}")
    parts.extend(f"{name}:{value}" for name, value in status.fields.items())
    if status.wco is not None:
        parts.append("WCO:" + ",".join(format_number(v) for v in status.wco))
    return "<" + "|".join(parts) + ">"


class GcodeSyntaxError(ValueError):
    """A G-code block GRBL would reject while reading it; `code` is its `error:N`."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def parse_gcode_words(line: str) -> list[tuple[str, float]]:
    """Split a G-code block into (letter, value) words, dropping spaces and comments.

    Raises:
        GcodeSyntaxError: a letter without a number (code 2) or a stray character where a
            letter should be, such as the second point of `X1.2.3` (code 1), as gcode.c does.
    """
    text = re.sub(r"\s+", "", re.sub(r"\([^)]*\)|;.*", "", line)).upper()
    words: list[tuple[str, float]] = []
    position = 0
    while position < len(text):
        match = _WORD.match(text, position)
        if match is None or match.start() != position:
            raise GcodeSyntaxError(f"expected a command letter at {text[position:]!r}", 1)
        value = _parse_number(match.group(2))
        if value is None:
            raise GcodeSyntaxError(f"bad number after {match.group(1)!r}", 2)
        words.append((match.group(1), value))
        position = match.end()
    return words
