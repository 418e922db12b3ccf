"""GRBL 1.1 `$$` settings: the stock values, how GRBL prints them, and what a driver reads there.

Pure: no I/O. The emulator keeps its settings in the same numbering; the driver parses a `$$`
dump with `FirmwareSettings.from_replies` and asks it for each axis it drives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rig.turntable.grbl_codec import AXES, Setting, format_number

#: Stock GRBL 1.1h values (grbl/defaults.h, DEFAULTS_GENERIC) of the non-axis settings.
STOCK_GLOBAL: dict[int, float] = {
    0: 10, 1: 25, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 10: 1, 11: 0.010, 12: 0.002, 13: 0,
    20: 0, 21: 0, 22: 0, 23: 0, 24: 25.0, 25: 500.0, 26: 250, 27: 1.0, 30: 1000.0, 31: 0.0, 32: 0,
}  # fmt: skip

#: Stock per-axis values by the axis block's first number (defaults.h DEFAULTS_GENERIC): steps
#: per unit, max rate (units/min), acceleration (units/s²), max travel (units).
STOCK_AXIS: dict[int, float] = {100: 250.0, 110: 500.0, 120: 10.0, 130: 200.0}

#: Settings GRBL prints as integers (report.c report_util_uint8_setting); $30/$31 have no
#: decimals (N_DECIMAL_RPMVALUE 0); every other one has three (N_DECIMAL_SETTINGVALUE 3).
INTEGER_SETTINGS = frozenset({0, 1, 2, 3, 4, 5, 6, 10, 13, 20, 21, 22, 23, 26, 32})
_RPM_SETTINGS = frozenset({30, 31})

#: settings.c settings_store_global_setting: step rates above this fail with error:12.
MAX_STEP_RATE_HZ = 30000.0


def stock_settings(n_axes: int = 3) -> dict[int, float]:
    """Every `$N` of a stock GRBL 1.1h with `n_axes` axes (3 on an Uno; forks add A, B, C)."""
    settings = dict(STOCK_GLOBAL)
    for first, value in STOCK_AXIS.items():
        for index in range(n_axes):
            settings[first + index] = value
    return settings


def format_setting(number: int, value: float) -> str:
    """One `$$` line as GRBL 1.1h prints it: `$0=10`, `$11=0.010`, `$30=1000`, `$100=250.000`."""
    if number in INTEGER_SETTINGS:
        return f"${number}={int(value)}"
    decimals = 0 if number in _RPM_SETTINGS else 3
    return f"${number}={format_number(value, decimals)}"


@dataclass(frozen=True)
class AxisSettings:
    """One axis as the firmware drives it, in GRBL units (mm on a mill, here degrees × scale)."""

    letter: str
    steps_per_unit: float  # $100+i
    max_rate_units_per_min: float  # $110+i
    accel_units_per_s2: float  # $120+i
    max_travel_units: float  # $130+i (only enforced with soft limits, $20=1)


@dataclass(frozen=True)
class FirmwareSettings:
    """A controller's `$$` dump, with the readings a driver needs."""

    values: Mapping[int, float]

    @classmethod
    def from_replies(cls, replies: Iterable[object]) -> FirmwareSettings:
        """Collect the `$N=V` lines among a command's replies (anything else is skipped)."""
        return cls({r.number: r.value for r in replies if isinstance(r, Setting)})

    def missing(self, axes: Iterable[int]) -> list[int]:
        """Setting numbers a driver of these axis indices needs but the dump lacks."""
        wanted = [10, 13, 20, 22, 23]
        wanted += [first + i for i in axes for first in STOCK_AXIS]
        return [n for n in wanted if n not in self.values]

    def axis(self, index: int) -> AxisSettings:
        """The settings of the axis at this status-report index (0 = X).

        Raises:
            KeyError: the dump has no such axis.
        """
        return AxisSettings(
            letter=AXES[index],
            steps_per_unit=self.values[100 + index],
            max_rate_units_per_min=self.values[110 + index],
            accel_units_per_s2=self.values[120 + index],
            max_travel_units=self.values[130 + index],
        )

    def flag(self, number: int) -> bool:
        """A boolean setting ($13, $20, $21, $22 …); absent counts as off."""
        return bool(int(self.values.get(number, 0)))

    def bit(self, number: int, index: int) -> bool:
        """One bit of a mask setting ($3 direction invert, $23 homing direction …)."""
        return bool(int(self.values.get(number, 0)) >> index & 1)
