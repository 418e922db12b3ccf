"""Capture plans: what to shoot of one coin, expanded into an ordered list of shot events.

A plan is a frozen pydantic model loaded from YAML (capture/plans/*.yaml). `expand` orders the
shots to minimise physical time: one flip per coin, the turntable serpentines (ascending angles
on the first side, descending on the second, so it never rewinds 360°), tilts serpentine within
an angle, and lights (milliseconds to switch) vary in the inner loops instead of rotating per
light (seconds). `check_plan` checks every pose and setting against a rig config and
`estimate_duration_s` times one coin's shots from the rig's kinematics (`capture.kinematics`);
`capture.estimate.dry_run` times a whole session with them, coin handling included.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from capture.kinematics import Kinematics
from rig.config import (
    GrblTurntableConfig,
    RigConfig,
    describe_validation_error,
    presets,
    safe_yaml,
)
from rig.errors import ConfigError
from rig.motion import trapezoid_duration_s

PLANS = "capture.plans"  # the package that ships the named plans
# Shots of one coin a plan may ask for: 20,000 is over five hours of shooting per coin at a
# second a shot, and `rig capture --dry-run` still times such a plan in seconds. Past it, a
# hostile plan (3,600 angles x thousands of lights) would keep `expand` busy for hours.
MAX_SHOTS_PER_COIN = 20_000

Side = Literal["obverse", "reverse"]
OnFailure = Literal["pause", "skip"]
Intensity = float


class _Frozen(BaseModel):
    # NaN and infinities refused in every float field, also those without bounds (tilts).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ReferenceShot(_Frozen):
    """The per-side reference view (the rig's own catalog-style shot), taken once per side."""

    light: str
    turntable_deg: float = Field(0.0, ge=0.0, lt=360.0)
    tilt_deg: float | None = None
    on_failure: OnFailure = "pause"


class Plan(_Frozen):
    """What to shoot of one coin: sides × angles × tilts × light patterns × exposure bracket."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    description: str = ""
    sides: tuple[Side, ...] = ("obverse", "reverse")
    angles_deg: tuple[float, ...] | None = Field(
        None, min_length=1, description="explicit turntable angles in [0, 360)"
    )
    angle_count: int | None = Field(None, ge=1, le=3600, description="evenly spaced over 360°")
    tilts_deg: tuple[float, ...] = Field((), description="camera tilts; empty = no tilt axis used")
    lights: tuple[str, ...] = Field(min_length=1, description="light pattern names")
    patterns: dict[str, dict[str, Intensity]] = Field(
        default_factory=dict, description="plan-local patterns (channel → 0..1); else the rig's"
    )
    exposures_us: tuple[float, ...] = Field((), description="bracket; empty = camera default")
    gain_db: float | None = Field(None, ge=0, le=48)
    reference: ReferenceShot | None = None
    on_failure: OnFailure = "pause"
    retries: int = Field(2, ge=0, le=10, description="extra attempts per device command")

    @model_validator(mode="after")
    def _consistent(self) -> Plan:
        if not self.sides or len(set(self.sides)) != len(self.sides):
            raise ValueError("sides must be one or both of obverse, reverse, each once")
        if (self.angles_deg is None) == (self.angle_count is None):
            raise ValueError("give exactly one of angles_deg or angle_count")
        for name, values in (
            ("angles_deg", self.angles_deg or ()),
            ("tilts_deg", self.tilts_deg),
            ("lights", self.lights),
            ("exposures_us", self.exposures_us),
        ):
            if len(set(values)) != len(values):
                raise ValueError(f"{name} has duplicates: {list(values)}")
        for angle in self.angles_deg or ():
            if not (math.isfinite(angle) and 0.0 <= angle < 360.0):
                raise ValueError(f"angle {angle} must lie in [0, 360)")
        for tilt in self.tilts_deg:
            if not math.isfinite(tilt):
                raise ValueError(f"tilt {tilt} is not finite")
        for exposure in self.exposures_us:
            if not (math.isfinite(exposure) and exposure > 0):
                raise ValueError(f"exposure {exposure} µs must be positive")
        for pattern, levels in self.patterns.items():
            for channel, level in levels.items():
                if not 0.0 <= level <= 1.0:
                    raise ValueError(f"pattern {pattern!r}: {channel} level {level} not in 0..1")
        shots = self.shot_count()
        if not 1 <= shots <= MAX_SHOTS_PER_COIN:
            raise ValueError(
                f"the plan makes {shots:,} shots per coin; a plan makes 1 to {MAX_SHOTS_PER_COIN:,}"
            )
        return self

    def shot_count(self) -> int:
        """How many images `expand` makes of one coin, computed without expanding."""
        angles = len(self.angles_deg) if self.angles_deg is not None else self.angle_count or 1
        per_side = angles * max(1, len(self.tilts_deg)) * len(self.lights)
        per_side = per_side * max(1, len(self.exposures_us)) + (self.reference is not None)
        return len(self.sides) * per_side

    def angles(self) -> tuple[float, ...]:
        """The turntable angles in ascending order, each in [0, 360)."""
        if self.angles_deg is not None:
            return tuple(sorted(self.angles_deg))
        count = self.angle_count or 1
        return tuple(round(360.0 * i / count, 6) for i in range(count))

    @classmethod
    def load(cls, path: Path | str) -> Plan:
        """Read and validate a YAML plan, or a shipped one by name (`quick`, `standard`).

        Raises:
            ConfigError: missing file, bad YAML or an invalid plan (one line).
        """
        given = path
        path = presets.resolve(path, PLANS)
        try:
            data = safe_yaml.load_file(path)
        except FileNotFoundError:
            raise ConfigError(presets.missing_message(given, "plan", PLANS)) from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{path}: {describe_validation_error(exc)}") from exc


@dataclass(frozen=True)
class ShotEvent:
    """One image to take: the coin side up, the poses and settings; `index` names its file."""

    index: int
    side: Side
    turntable_deg: float
    tilt_deg: float | None
    light: str
    exposure_us: float | None
    gain_db: float | None
    reference: bool = False
    on_failure: OnFailure = "pause"


T = TypeVar("T")


def _serpentine(values: Sequence[float | None], reverse: bool) -> list[float | None]:
    return list(reversed(values)) if reverse else list(values)


def _loop_order(values: Sequence[T], current: T | None, last: T | None = None) -> list[T]:
    """`values` starting with the one already set and, when given, ending with `last`.

    Starting each loop from the light (or exposure) left on saves one switch per pose, as a
    serpentine does, also when the previous side left another one set. Ending with the setting
    of a reference shot taken right after the loop saves another.
    """
    order = list(values)
    kept_first = current is not None and current in order
    if current is not None and kept_first:
        start = order.index(current)
        order = [*order[start:], *order[:start]]
    if last is not None and last in order[1 if kept_first else 0 :]:
        order.remove(last)
        order.append(last)
    return order


#: a shot as the estimate sees it (`shot_row`)
ShotRow = tuple[Side, float, float | None, str, float | None, bool, OnFailure]
_Pose = tuple[Side, float, float | None]


def expand(plan: Plan) -> list[ShotEvent]:
    """The plan's shots in the order that minimises physical time; indices follow that order."""
    order = _regular_order(plan, {})
    if plan.reference is not None:
        references = [_reference_row(plan, side) for side in plan.sides]
        first = order
        for row in references:
            first = _insert_cheapest(first, row)
        # Second pass: the pose each reference follows ends its loop on the reference's light
        # and exposure, so the reference costs no switch there.
        ends: dict[_Pose, tuple[str, float | None]] = {}
        for position, row in enumerate(first):
            before = first[position - 1] if position > 0 else None
            if row[5] and before is not None and not before[5] and before[0] == row[0]:
                ends[before[:3]] = (row[3], row[4])
        second = _regular_order(plan, ends)
        for row in references:
            second = _insert_cheapest(second, row)
        kinematics = Kinematics()
        order = min((first, second), key=lambda rows: _rows_duration_s(rows, kinematics))
    return [
        ShotEvent(
            index=i,
            side=side,
            turntable_deg=angle,
            tilt_deg=tilt,
            light=light,
            exposure_us=exposure,
            gain_db=plan.gain_db,
            reference=reference,
            on_failure=on_failure,
        )
        for i, (side, angle, tilt, light, exposure, reference, on_failure) in enumerate(order)
    ]


def _regular_order(plan: Plan, ends: dict[_Pose, tuple[str, float | None]]) -> list[ShotRow]:
    """The plan's regular shots: serpentine sweeps, lights and exposures in the inner loops.

    `ends` names poses whose loop must finish on a given light and exposure (a reference
    shot follows them).
    """
    angles = plan.angles()
    # Sorted, like the angles: a serpentine over a monotone list never crosses back over itself,
    # whatever order the plan's author wrote the tilts in.
    tilts: list[float | None] = list(sorted(plan.tilts_deg)) or [None]
    exposures: list[float | None] = list(plan.exposures_us) or [None]
    order: list[ShotRow] = []
    tilt_flip = False
    for side_number, side in enumerate(plan.sides):
        # Serpentine: the second side runs the angles backwards from where the first ended.
        for angle in _serpentine(angles, reverse=side_number % 2 == 1):
            assert angle is not None
            for tilt in _serpentine(tilts, tilt_flip):
                end_light, end_exposure = ends.get((side, angle, tilt), (None, None))
                lights = _loop_order(plan.lights, order[-1][3] if order else None, end_light)
                for light in lights:
                    last = end_exposure if light == lights[-1] else None
                    for exposure in _loop_order(exposures, order[-1][4] if order else None, last):
                        order.append((side, angle, tilt, light, exposure, False, plan.on_failure))
            tilt_flip = not tilt_flip
    return order


def _insert_cheapest(order: list[ShotRow], row: ShotRow) -> list[ShotRow]:
    """`order` with `row` inserted among its side's shots where it adds the least physical time.

    The reference view usually lands beside a shot with the very same settings (costing nothing
    but its exposure), else where the sweep passes its angle; `Kinematics()`'s relative costs
    decide, which holds for any rig whose motions are slower than its light switches.
    """
    kinematics = Kinematics()
    states = [RigState.start()]
    for r in order:
        states.append(states[-1].after(r))
    best_position, best_cost = len(order), math.inf
    for position in range(len(order) + 1):
        before = order[position - 1][0] if position > 0 else row[0]
        after = order[position][0] if position < len(order) else row[0]
        if row[0] not in (before, after):
            continue  # only among (or at the edges of) its own side's shots
        added = states[position].step_s(row, kinematics)
        if position < len(order):
            follower = order[position]
            added += states[position].after(row).step_s(follower, kinematics)
            added -= states[position].step_s(follower, kinematics)
        if added < best_cost - 1e-12:
            best_position, best_cost = position, added
    return [*order[:best_position], row, *order[best_position:]]


def _reference_row(
    plan: Plan, side: Side
) -> tuple[Side, float, float | None, str, float | None, bool, OnFailure]:
    assert plan.reference is not None
    ref = plan.reference
    tilt = ref.tilt_deg if ref.tilt_deg is not None else (plan.tilts_deg or (None,))[0]
    exposure = plan.exposures_us[0] if plan.exposures_us else None
    return (side, ref.turntable_deg, tilt, ref.light, exposure, True, ref.on_failure)


def naive_order(events: Iterable[ShotEvent]) -> list[ShotEvent]:
    """The obvious order a person would write: per side, per light, rotate through every angle.

    Used only as a baseline for `estimate_duration_s`: it rewinds the turntable for every light.
    """
    return sorted(
        events,
        key=lambda e: (e.side, e.light, e.exposure_us or 0.0, e.tilt_deg or 0.0, e.turntable_deg),
    )


# ---------------------------------------------------------------- duration


@dataclass(frozen=True)
class RigState:
    """What the rig has set between two shots: the costs of the next shot depend on it."""

    side: Side | None
    angle: float
    tilt: float
    light: str | None
    exposure: float | None

    @classmethod
    def start(cls, start_deg: float = 0.0) -> RigState:
        """A freshly homed rig: nothing lit, no exposure set, no coin side yet."""
        return cls(side=None, angle=start_deg, tilt=0.0, light=None, exposure=None)

    def after(self, row: ShotRow) -> RigState:
        """The rig's state right after shooting `row` from this one (no tilt: tilt stays)."""
        side, angle, tilt, light, exposure = row[:5]
        tilt = self.tilt if tilt is None else tilt
        return RigState(side=side, angle=angle, tilt=tilt, light=light, exposure=exposure)

    def step_s(self, row: ShotRow, k: Kinematics) -> float:
        """Seconds from this state to `row` shot: flip, moves, switches, exposure and readout."""
        side, angle, tilt, light, exposure = row[:5]
        total = k.flip_s if self.side is not None and side != self.side else 0.0
        total += trapezoid_duration_s(
            angle - self.angle, k.turntable_speed_deg_per_s, k.turntable_accel_deg_per_s2
        )
        if tilt is not None:
            total += abs(tilt - self.tilt) / k.tilt_speed_deg_per_s
        if light != self.light:
            total += k.light_switch_s
        if exposure != self.exposure:
            total += k.camera_config_s
        exposure_us = exposure if exposure is not None else k.default_exposure_us
        return total + exposure_us / 1e6 + k.readout_s


def shot_row(event: ShotEvent) -> ShotRow:
    """A shot as the estimate sees it: side, angle, tilt, light, exposure, reference, on_failure."""
    return (
        event.side,
        event.turntable_deg,
        event.tilt_deg,
        event.light,
        event.exposure_us,
        event.reference,
        event.on_failure,
    )


def estimate_duration_s(
    events: Sequence[ShotEvent], kinematics: Kinematics, *, start_deg: float = 0.0
) -> float:
    """Physical time to shoot `events` in the given order on one coin, load and unload included.

    Motions happen one after the other (the engine never moves two axes at once), a light or
    exposure change costs its switch time, and every change of side costs a flip.
    """
    return _rows_duration_s([shot_row(event) for event in events], kinematics, start_deg=start_deg)


def _rows_duration_s(
    rows: Sequence[ShotRow], kinematics: Kinematics, start_deg: float = 0.0
) -> float:
    if not rows:
        return 0.0
    total = kinematics.load_s + kinematics.unload_s
    state = RigState.start(start_deg)
    for row in rows:
        total += state.step_s(row, kinematics)
        state = state.after(row)
    return total


# ---------------------------------------------------------------- checks against a rig


def check_plan(plan: Plan, config: RigConfig) -> list[str]:
    """Every problem with running this plan on this rig (empty when it can run)."""
    problems: list[str] = []
    events = expand(plan)
    table = config.turntable
    low, high = table.limits.min_deg, table.limits.max_deg
    for angle in sorted({e.turntable_deg for e in events}):
        if not low <= angle <= high:
            problems.append(f"turntable angle {angle:g}° outside the limits [{low:g}, {high:g}]°")
    tilts = sorted({e.tilt_deg for e in events if e.tilt_deg is not None})
    tilt_cfg = table.tilt if isinstance(table, GrblTurntableConfig) else None
    if tilts and tilt_cfg is None:
        problems.append(f"plan asks for camera tilts {tilts}° but this rig has no tilt axis")
    elif tilt_cfg is not None:
        for tilt in tilts:
            if not tilt_cfg.min_deg <= tilt <= tilt_cfg.max_deg:
                problems.append(
                    f"tilt {tilt:g}° outside the limits [{tilt_cfg.min_deg:g}, "
                    f"{tilt_cfg.max_deg:g}]°"
                )
    channels = {c.name for c in config.lightbox.channels}
    for pattern, levels in plan.patterns.items():
        unknown = sorted(set(levels) - channels)
        if unknown:
            problems.append(
                f"plan pattern {pattern!r} names unknown channel(s) {unknown}; "
                f"channels are {sorted(channels)}"
            )
    known = set(plan.patterns) | set(config.lightbox.patterns)
    for light in sorted({e.light for e in events}):
        if light not in known:
            problems.append(f"light pattern {light!r} is not defined; known: {sorted(known)}")
    camera = config.camera
    for exposure in sorted({e.exposure_us for e in events if e.exposure_us is not None}):
        if not camera.min_exposure_us <= exposure <= camera.max_exposure_us:
            problems.append(
                f"exposure {exposure:g} µs outside the camera limits "
                f"[{camera.min_exposure_us:g}, {camera.max_exposure_us:g}] µs"
            )
    return problems
