"""Checks of settings and of JSON read back from run folders: finite, in range, of the right type.

Every numeric option passes through `number` or `whole` before any work starts, so NaN, inf, a
negative learning rate or a negative step count is one line naming the option, never a
traceback from deep inside torch or a run that trains zero steps and saves checkpoints anyway.
JSON read back from a run folder (config.json, a checkpoint's model.json) is typed against the
dataclass that wrote it (`check_fields`) before a value is used.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import fields, is_dataclass
from typing import Any

from training.errors import SettingsError

# Upper bounds of sizes that would otherwise allocate without limit (a keep-grid backbone's
# Linear grows with image_size squared): far above anything trained here, and the same for
# options (TrainConfig) and for checkpoints read back (training.checkpoint).
MAX_IMAGE_SIZE = 1024
MAX_EMBEDDING_DIM = 8192
MAX_ROTATIONS = 36  # build_model's own limit, checked before any image is decoded
MAX_SEED = 2**32 - 1
MAX_LR = 10.0


def number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """`value` as a float if finite and within [low, high] (open ends where asked).

    Raises:
        SettingsError: not a number, NaN, infinite, or out of range (names the option).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(f"{name} must be a number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise SettingsError(f"{name} must be a finite number, got {value}")
    too_low = low is not None and (x <= low if low_open else x < low)
    too_high = high is not None and (x >= high if high_open else x > high)
    if too_low or too_high:
        raise SettingsError(f"{name} must be {_range(low, high, low_open, high_open)}, got {value}")
    return x


def whole(name: str, value: object, *, low: int | None = None, high: int | None = None) -> int:
    """`value` as an int if it is one (not a bool) and within [low, high].

    Raises:
        SettingsError: not a whole number, or out of range (names the option).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(f"{name} must be a whole number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise SettingsError(f"{name} must be {_range(low, high, False, False)}, got {value}")
    return value


def _range(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if high is None:
        return f"{'>' if low_open else '>='} {_text(low)}" if low is not None else "a number"
    if low is None:
        return f"{'<' if high_open else '<='} {_text(high)}"
    return f"in {'(' if low_open else '['}{_text(low)}, {_text(high)}{')' if high_open else ']'}"


def _text(bound: float | None) -> str:
    """A bound as written: 4294967295, not 4.29497e+09; 1.5708, not 1.5707963267948966."""
    if isinstance(bound, int) or (bound is not None and float(bound).is_integer()):
        return str(int(bound))
    return f"{bound:.6g}"


def check_fields(cls: type, values: dict[str, Any], where: str) -> None:
    """Check that each present key of `values` has the type of `cls`'s field of that name.

    Keys `cls` does not have are ignored (files written by newer versions); nested dataclass
    fields are checked recursively. Only the types dataclasses here use are understood: bool,
    int, float, str, list[str], dict and `X | None`.

    Raises:
        SettingsError: a value of the wrong type, naming the key and `where` it came from.
    """
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.name in values and not _fits(values[f.name], hints[f.name]):
            raise SettingsError(
                f"{where}: {f.name} = {values[f.name]!r:.60} is not a {hints[f.name]}"
            )
        nested = hints[f.name]
        if f.name in values and is_dataclass(nested) and isinstance(values[f.name], dict):
            check_fields(nested, values[f.name], f"{where}: {f.name}")  # type: ignore[arg-type]


def _fits(value: object, hint: Any) -> bool:
    """Whether a JSON value fits a type hint (JSON numbers: an int is a float, a bool is neither)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if hint is float:
        return isinstance(value, (int, float))
    if hint in (int, str):
        return isinstance(value, hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if origin is dict or hint is dict or is_dataclass(hint):
        return isinstance(value, dict)
    return True  # a type this checker does not model: left to the dataclass's own check()


def positive(owner: object, *names: str, high: dict[str, float] | None = None) -> None:
    """Each named attribute of `owner` a whole number >= 1 or a finite number > 0.

    A number named in `high` must also be at most that bound.

    Raises:
        SettingsError: names the option (`--image-size` for image_size) and the value.
    """
    for name in names:
        value = getattr(owner, name)
        option = f"--{name.replace('_', '-')}"
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise SettingsError(f"{option} must be > 0, got {value}")
        else:
            number(option, value, low=0, low_open=True, high=(high or {}).get(name))
