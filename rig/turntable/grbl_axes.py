"""What the GRBL driver may ask of each axis: the config checked against the controller's `$$`.

GRBL moves at min(F, $110) with the acceleration $120 and stops on the nearest whole step of
$100 (planner.c plan_buffer_line), whatever the host believes. So the driver takes its step
size, rates and travel from the firmware: a configured speed above $110 is clamped, a firmware
acceleration above the configured limit is refused (GRBL cannot be asked to accelerate less),
homing configured on a controller with `$22=0` and inch reports (`$13=1`) are refused. Every
finding is one line, logged and kept for the session record.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from rig.config import GrblTurntableConfig
from rig.errors import ConfigError, DeviceFault, SafetyError
from rig.motion import motion_timeout_s
from rig.turntable.grbl_codec import axis_index
from rig.turntable.grbl_link import GrblLink
from rig.turntable.grbl_settings import FirmwareSettings

log = logging.getLogger(__name__)

#: GRBL prints coordinates with 3 decimals (and WCO too), so a report is off by up to this much.
REPORT_ROUNDING_UNITS = 0.001


@dataclass(frozen=True)
class AxisPlan:
    """One driven axis as the firmware will move it (degrees for the caller, units on the wire)."""

    index: int
    letter: str
    units_per_deg: float
    steps_per_unit: float
    speed_deg_per_s: float  # the config's speed, clamped to the firmware's $110
    accel_deg_per_s2: float  # the firmware's $120: what its planner really uses
    travel_units: float | None  # soft limits ($20=1): machine space is [−travel, 0]

    @property
    def step_deg(self) -> float:
        """One motor step, in degrees."""
        return 1.0 / (self.steps_per_unit * self.units_per_deg)

    @property
    def tolerance_units(self) -> float:
        """How far a reported position may lie from its target once GRBL has finished there.

        GRBL stops on the step nearest the target (half a step away at most), and reports it
        rounded to 3 decimals.
        """
        return 0.5 / self.steps_per_unit + REPORT_ROUNDING_UNITS

    def move_budget_s(self, distance_deg: float) -> float:
        """A generous time for a move of this length at the firmware's real rates."""
        return motion_timeout_s(abs(distance_deg), self.speed_deg_per_s, self.accel_deg_per_s2)

    def brake_s(self) -> float:
        """Seconds to brake from full speed (a feed hold)."""
        return self.speed_deg_per_s / self.accel_deg_per_s2

    def check_travel(
        self, target_deg: float, target_units: float, wco: tuple[float, ...] | None, name: str
    ) -> None:
        """With soft limits on, GRBL alarms (ALARM:2) on a target outside [−$130, 0]: refuse it.

        Raises:
            SafetyError: the target's machine position lies outside the travel.
        """
        if self.travel_units is None:
            return
        machine = target_units + (wco or (0.0,) * 6)[self.index]
        if not -self.travel_units <= machine <= 0.0:
            raise SafetyError(
                f"{name}: {self.letter} {target_deg:g} deg is machine position {machine:g}, "
                f"outside the controller's soft-limit travel [-{self.travel_units:g}, 0] "
                f"(${130 + self.index})"
            )


def read_firmware(link: GrblLink, config: GrblTurntableConfig) -> FirmwareSettings:
    """The controller's `$$`, asked again (up to `retries` times) while it comes back incomplete.

    Raises:
        DeviceFault: it lacks settings the configured axes need.
        DeviceTimeout, TransportError: as GrblLink.query.
    """
    axes = [axis_index(config.axis)] + ([axis_index(config.tilt.axis)] if config.tilt else [])
    for _ in range(config.retries + 1):
        settings = FirmwareSettings.from_replies(link.query("$$"))
        missing = settings.missing(axes)
        if not missing:
            return settings
        log.warning("%s: `$$` came back without %s", link.name, missing)
    raise DeviceFault(
        f"{link.name}: `$$` lacks {', '.join(f'${n}' for n in missing)}; is it GRBL 1.1 with "
        "these axes?"
    )


def homing_budget_s(settings: FirmwareSettings, axes: Sequence[int]) -> float:
    """A generous time for `$H` from the homing settings (limits.c limits_go_home).

    The seek covers at most 1.5 × $130 at $25; locating and the two pull-offs cover $27 each
    at $24/$25; each of the four phases ends with the $26 debounce.
    """
    values = settings.values
    travel = max(values.get(130 + i, 0.0) for i in axes)
    seek_s = 1.5 * travel / (values.get(25, 500.0) / 60.0)
    slowest = min(values.get(24, 25.0), values.get(25, 500.0)) / 60.0
    locate_s = 4 * values.get(27, 1.0) / slowest
    return 1.5 * (seek_s + locate_s + 4 * values.get(26, 250.0) / 1000.0) + 2.0


def plan_axes(
    config: GrblTurntableConfig, firmware: FirmwareSettings, name: str
) -> tuple[AxisPlan, AxisPlan | None, list[str]]:
    """The turntable's and the tilt's plans, and one line per finding.

    Raises:
        ConfigError: the config asks for homing but the controller has it off ($22=0), the
            controller reports inches ($13=1), or it accelerates harder than the configured
            limit allows.
    """
    notes: list[str] = []
    if firmware.flag(13):
        raise ConfigError(
            f"{name}: the controller reports inches ($13=1); set $13=0 (this driver reads mm "
            "reports as axis units)"
        )
    if config.homing and not firmware.flag(22):
        raise ConfigError(
            f"{name}: the config asks for homing but the controller has it disabled ($22=0); "
            "set $22=1 on the controller (it needs limit switches) or `homing: false`"
        )
    if not config.homing and firmware.flag(22):
        notes.append(
            "homing is enabled on the controller ($22=1) but not in the config: the driver "
            "unlocks with $X instead of homing"
        )
    limits = config.limits
    turntable = _plan(
        firmware, config.axis, config.units_per_deg, config.speed_deg_per_s, notes, name,
        accel_limit=limits.accel_deg_per_s2,
    )  # fmt: skip
    if turntable.travel_units is not None:
        span = (limits.max_deg - limits.min_deg) * config.units_per_deg
        notes.append(
            f"{config.axis}: soft limits are on ($20=1): machine travel is "
            f"[-{turntable.travel_units:g}, 0] units; moves outside it are refused"
            + (f"; the configured range spans {span:g}" if span > turntable.travel_units else "")
        )
    tilt = None
    if config.tilt is not None:
        t = config.tilt
        tilt = _plan(firmware, t.axis, t.units_per_deg, t.speed_deg_per_s, notes, name)
    for note in notes:
        log.warning("%s: %s", name, note)
    return turntable, tilt, notes


def _plan(
    firmware: FirmwareSettings,
    letter: str,
    units_per_deg: float,
    speed_deg_per_s: float,
    notes: list[str],
    name: str,
    *,
    accel_limit: float | None = None,
) -> AxisPlan:
    index = axis_index(letter)
    axis = firmware.axis(index)
    max_speed = axis.max_rate_units_per_min / 60.0 / units_per_deg
    accel = axis.accel_units_per_s2 / units_per_deg
    if speed_deg_per_s > max_speed:
        notes.append(
            f"{letter}: speed {speed_deg_per_s:g} deg/s is above the controller's "
            f"${110 + index}={axis.max_rate_units_per_min:g} ({max_speed:.4g} deg/s): moves run "
            f"at {max_speed:.4g} deg/s"
        )
        speed_deg_per_s = max_speed
    if accel_limit is not None and accel > accel_limit * (1 + 1e-9):
        raise ConfigError(
            f"{name}: the controller accelerates {letter} at {accel:.4g} deg/s² "
            f"(${120 + index}={axis.accel_units_per_s2:g}), above limits.accel_deg_per_s2 "
            f"{accel_limit:g}; lower ${120 + index} to {accel_limit * units_per_deg:g} or raise "
            "the limit"
        )
    if accel_limit is not None and accel < accel_limit * (1 - 1e-9):
        notes.append(
            f"{letter}: the controller accelerates at {accel:.4g} deg/s² "
            f"(${120 + index}={axis.accel_units_per_s2:g}), below limits.accel_deg_per_s2 "
            f"{accel_limit:g}: move times follow the controller"
        )
    return AxisPlan(
        index=index,
        letter=letter,
        units_per_deg=units_per_deg,
        steps_per_unit=axis.steps_per_unit,
        speed_deg_per_s=speed_deg_per_s,
        accel_deg_per_s2=accel,
        travel_units=axis.max_travel_units if firmware.flag(20) else None,
    )
