"""Pure conversions for a Modbus stepper/servo drive: angles, register words, speed, status.

Positions travel as signed step counts, in one 16-bit register or two (a 32-bit value split
into a high and a low word; big-endian word order, as most drives use, or little-endian).
Speed travels in 0.1 rpm units, the unit integrated drives use for their speed register.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

WordOrder = Literal["big", "little"]

INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
#: speed register units per revolution-per-minute (the register holds 0.1 rpm steps)
SPEED_UNITS_PER_RPM = 10
#: one rpm is 6 degrees per second
DEG_PER_S_PER_RPM = 6.0


def deg_to_steps(angle_deg: float, steps_per_deg: float) -> int:
    """The nearest whole step count for an angle (ties to even, as Python's round).

    Raises:
        ValueError: the angle is not finite or steps_per_deg is not positive.
    """
    if not math.isfinite(angle_deg):
        raise ValueError(f"angle {angle_deg} deg is not finite")
    if not steps_per_deg > 0:
        raise ValueError(f"steps_per_deg must be positive, got {steps_per_deg}")
    return round(angle_deg * steps_per_deg)


def steps_to_deg(steps: int, steps_per_deg: float) -> float:
    """The angle of a step count."""
    return steps / steps_per_deg


def word_to_int16(word: int) -> int:
    """A 16-bit register value read as a two's-complement signed number."""
    _check_word(word)
    return word - 0x10000 if word & 0x8000 else word


def int16_to_word(value: int) -> int:
    """A signed 16-bit number as the register value that carries it.

    Raises:
        ValueError: the value does not fit in 16 signed bits.
    """
    if not INT16_MIN <= value <= INT16_MAX:
        raise ValueError(f"{value} does not fit in a signed 16-bit register")
    return value & 0xFFFF


def int32_to_words(value: int, word_order: WordOrder = "big") -> tuple[int, int]:
    """A signed 32-bit number as two registers (high word first for "big").

    Raises:
        ValueError: the value does not fit in 32 signed bits.
    """
    if not INT32_MIN <= value <= INT32_MAX:
        raise ValueError(f"{value} does not fit in a signed 32-bit register pair")
    raw = value & 0xFFFF_FFFF
    high, low = raw >> 16, raw & 0xFFFF
    return (high, low) if word_order == "big" else (low, high)


def words_to_int32(words: Sequence[int], word_order: WordOrder = "big") -> int:
    """Two registers read as one signed 32-bit number.

    Raises:
        ValueError: not exactly two 16-bit words.
    """
    if len(words) != 2:
        raise ValueError(f"a 32-bit value needs 2 registers, got {len(words)}")
    for word in words:
        _check_word(word)
    high, low = (words[0], words[1]) if word_order == "big" else (words[1], words[0])
    raw = (high << 16) | low
    return raw - (1 << 32) if raw & 0x8000_0000 else raw


def encode_position(steps: int, words: int, word_order: WordOrder = "big") -> list[int]:
    """A step count as the 1 or 2 registers a position occupies.

    Raises:
        ValueError: the step count does not fit the register width.
    """
    if words == 1:
        return [int16_to_word(steps)]
    if words == 2:
        return list(int32_to_words(steps, word_order))
    raise ValueError(f"a position occupies 1 or 2 registers, not {words}")


def decode_position(registers: Sequence[int], word_order: WordOrder = "big") -> int:
    """The step count held in 1 or 2 position registers.

    Raises:
        ValueError: not 1 or 2 valid 16-bit words.
    """
    if len(registers) == 1:
        return word_to_int16(registers[0])
    return words_to_int32(registers, word_order)


def position_range(words: int) -> tuple[int, int]:
    """The smallest and largest step count a 1- or 2-register position can carry."""
    return (INT16_MIN, INT16_MAX) if words == 1 else (INT32_MIN, INT32_MAX)


def speed_to_register(speed_deg_per_s: float) -> int:
    """A turntable speed as the drive's speed register (0.1 rpm units, at least 1).

    Raises:
        ValueError: the speed is not positive and finite, or too fast for the register.
    """
    if not (math.isfinite(speed_deg_per_s) and speed_deg_per_s > 0):
        raise ValueError(f"speed {speed_deg_per_s} deg/s must be positive and finite")
    # a positive request never rounds to zero: a zero speed would mean "never arrive"
    value = max(1, round(speed_deg_per_s / DEG_PER_S_PER_RPM * SPEED_UNITS_PER_RPM))
    if value > 0xFFFF:
        raise ValueError(f"speed {speed_deg_per_s:g} deg/s exceeds the speed register")
    return value


def register_to_speed(word: int) -> float:
    """The speed in deg/s that a speed register value stands for."""
    _check_word(word)
    return word / SPEED_UNITS_PER_RPM * DEG_PER_S_PER_RPM


@dataclass(frozen=True)
class DriveStatus:
    """The drive's status word, decoded."""

    busy: bool
    fault: bool
    raw: int


def decode_status(word: int, *, busy_bit: int, fault_bit: int) -> DriveStatus:
    """Decode the status register's busy and fault bits."""
    _check_word(word)
    return DriveStatus(busy=bool(word >> busy_bit & 1), fault=bool(word >> fault_bit & 1), raw=word)


def encode_status(
    *, busy: bool, fault: bool, busy_bit: int, fault_bit: int, other_bits: int = 0
) -> int:
    """The status word a drive shows for these flags (other bits kept as given)."""
    word = other_bits & ~(1 << busy_bit) & ~(1 << fault_bit) & 0xFFFF
    return word | (int(busy) << busy_bit) | (int(fault) << fault_bit)


def _check_word(word: int) -> None:
    if not 0 <= word <= 0xFFFF:
        raise ValueError(f"register value must be 0..65535, got {word}")
