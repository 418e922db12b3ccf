"""Codec of the Modbus turntable drive: tables, exhaustive single-register checks, round trips."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rig.turntable import modbus_codec as codec

WORDS = range(0x10000)


# ---------------------------------------------------------------- tables with readable ids


@pytest.mark.parametrize(
    ("value", "big", "little"),
    [
        pytest.param(0, (0, 0), (0, 0), id="zero"),
        pytest.param(1, (0, 1), (1, 0), id="one"),
        pytest.param(-1, (0xFFFF, 0xFFFF), (0xFFFF, 0xFFFF), id="minus-one"),
        pytest.param(65536, (1, 0), (0, 1), id="carry-into-high-word"),
        pytest.param(-65536, (0xFFFF, 0), (0, 0xFFFF), id="negative-whole-high-word"),
        pytest.param(codec.INT32_MAX, (0x7FFF, 0xFFFF), (0xFFFF, 0x7FFF), id="int32-max"),
        pytest.param(codec.INT32_MIN, (0x8000, 0), (0, 0x8000), id="int32-min"),
        pytest.param(-36000, (0xFFFF, 0x7360), (0x7360, 0xFFFF), id="minus-360-deg-at-100"),
    ],
)
def test_int32_words_table(value: int, big: tuple[int, int], little: tuple[int, int]) -> None:
    assert codec.int32_to_words(value) == big
    assert codec.int32_to_words(value, "little") == little
    assert codec.words_to_int32(big) == value
    assert codec.words_to_int32(little, "little") == value


@pytest.mark.parametrize(
    "value", [codec.INT32_MAX + 1, codec.INT32_MIN - 1, 1 << 40], ids=["max+1", "min-1", "huge"]
)
def test_int32_out_of_range_is_refused(value: int) -> None:
    with pytest.raises(ValueError, match="32-bit"):
        codec.int32_to_words(value)


@pytest.mark.parametrize("value", [32768, -32769], ids=["int16-max+1", "int16-min-1"])
def test_int16_out_of_range_is_refused(value: int) -> None:
    with pytest.raises(ValueError, match="16-bit"):
        codec.int16_to_word(value)


@pytest.mark.parametrize("word", [-1, 0x10000], ids=["negative", "17-bit"])
def test_bad_register_values_are_refused(word: int) -> None:
    with pytest.raises(ValueError):
        codec.word_to_int16(word)
    with pytest.raises(ValueError):
        codec.words_to_int32([0, word])


def test_words_to_int32_needs_two_words() -> None:
    with pytest.raises(ValueError, match="2 registers"):
        codec.words_to_int32([1, 2, 3])


@pytest.mark.parametrize(
    ("angle", "steps_per_deg", "steps"),
    [
        pytest.param(90.0, 100.0, 9000, id="quarter-turn"),
        pytest.param(-725.5, 100.0, -72550, id="negative-multi-turn"),
        pytest.param(10.004, 100.0, 1000, id="rounds-down"),
        pytest.param(10.006, 100.0, 1001, id="rounds-up"),
        pytest.param(1.0, 3.2, 3, id="fractional-ratio"),
    ],
)
def test_deg_to_steps_table(angle: float, steps_per_deg: float, steps: int) -> None:
    assert codec.deg_to_steps(angle, steps_per_deg) == steps


@pytest.mark.parametrize("angle", [math.nan, math.inf, -math.inf])
def test_deg_to_steps_refuses_non_finite(angle: float) -> None:
    with pytest.raises(ValueError, match="not finite"):
        codec.deg_to_steps(angle, 100.0)


@pytest.mark.parametrize(
    ("speed", "word"),
    [
        pytest.param(60.0, 100, id="10rpm"),
        pytest.param(6.0, 10, id="1rpm"),
        pytest.param(0.01, 1, id="never-zero"),
        pytest.param(3600.0, 6000, id="600rpm"),
    ],
)
def test_speed_register_table(speed: float, word: int) -> None:
    assert codec.speed_to_register(speed) == word


@pytest.mark.parametrize("speed", [0.0, -1.0, math.nan, math.inf, 1e9])
def test_speed_register_refuses_bad_speeds(speed: float) -> None:
    with pytest.raises(ValueError):
        codec.speed_to_register(speed)


def test_status_table() -> None:
    status = codec.decode_status(0b11, busy_bit=0, fault_bit=1)
    assert (status.busy, status.fault, status.raw) == (True, True, 3)
    status = codec.decode_status(0x8004, busy_bit=2, fault_bit=7)
    assert (status.busy, status.fault) == (True, False)


def test_encode_position_widths() -> None:
    assert codec.encode_position(-2, 1) == [0xFFFE]
    assert codec.encode_position(-2, 2) == [0xFFFF, 0xFFFE]
    assert codec.decode_position([0xFFFE]) == -2
    assert codec.decode_position([0xFFFF, 0xFFFE]) == -2
    with pytest.raises(ValueError):
        codec.encode_position(40000, 1)
    with pytest.raises(ValueError):
        codec.encode_position(1, 3)


# ---------------------------------------------------------------- exhaustive over one register


def test_int16_round_trip_every_register_value() -> None:
    for word in WORDS:
        value = codec.word_to_int16(word)
        assert codec.INT16_MIN <= value <= codec.INT16_MAX
        assert codec.int16_to_word(value) == word
        assert codec.decode_position([word]) == value


def test_status_round_trip_every_register_value() -> None:
    for busy_bit, fault_bit in ((0, 1), (3, 15), (15, 0)):
        for word in WORDS:
            status = codec.decode_status(word, busy_bit=busy_bit, fault_bit=fault_bit)
            assert status.busy == bool(word & (1 << busy_bit))
            assert status.fault == bool(word & (1 << fault_bit))
            again = codec.encode_status(
                busy=status.busy,
                fault=status.fault,
                busy_bit=busy_bit,
                fault_bit=fault_bit,
                other_bits=word,
            )
            assert again == word


def test_speed_round_trip_every_nonzero_register_value() -> None:
    for word in range(1, 0x10000):
        assert codec.speed_to_register(codec.register_to_speed(word)) == word


# ---------------------------------------------------------------- hypothesis round trips


@given(st.integers(codec.INT32_MIN, codec.INT32_MAX), st.sampled_from(["big", "little"]))
def test_int32_round_trip(value: int, order: codec.WordOrder) -> None:
    words = codec.int32_to_words(value, order)
    assert all(0 <= w <= 0xFFFF for w in words)
    assert codec.words_to_int32(words, order) == value


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.sampled_from(["big", "little"]))
def test_words_round_trip(first: int, second: int, order: codec.WordOrder) -> None:
    value = codec.words_to_int32([first, second], order)
    assert codec.int32_to_words(value, order) == (first, second)


@given(
    st.floats(-1e5, 1e5, allow_nan=False),
    st.floats(0.01, 1e4, allow_nan=False),
)
def test_deg_steps_round_trip_within_half_a_step(angle: float, steps_per_deg: float) -> None:
    steps = codec.deg_to_steps(angle, steps_per_deg)
    back = codec.steps_to_deg(steps, steps_per_deg)
    assert abs(back - angle) <= 0.5 / steps_per_deg * (1 + 1e-9) + 1e-9


@given(st.integers(-(10**8), 10**8), st.floats(0.01, 1e4, allow_nan=False))
def test_steps_deg_steps_is_identity(steps: int, steps_per_deg: float) -> None:
    assert codec.deg_to_steps(codec.steps_to_deg(steps, steps_per_deg), steps_per_deg) == steps


@given(st.floats(0.6, 3600.0, allow_nan=False))
def test_speed_quantisation_is_within_half_a_unit(speed: float) -> None:
    word = codec.speed_to_register(speed)
    half_unit = codec.DEG_PER_S_PER_RPM / codec.SPEED_UNITS_PER_RPM / 2
    assert abs(codec.register_to_speed(word) - speed) <= half_unit + 1e-9
