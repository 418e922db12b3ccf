"""The part of GRBL 1.1's G-code parser a turntable uses (gcode.c gc_execute_line), for the emulator.

Modelled: G0/G1 (modal), G4 dwell, G10 L2/L20 (work offsets, kept in EEPROM across resets),
G17, G20/G21, G53, G54-G59, G90/G91, G92, G94, M5/M9 (no spindle or coolant here), and the
word checks a driver can trip: repeated words (error:25), negative F/N/P/T/S (4), two commands
of one modal group (21), a missing F for G1 (22), missing axis words (26) or P/L (28), unused
words (36), anything else unsupported (20). Positions are machine units; the parser's position
is where the last motion was programmed to end (gc_state.position), not where the axes are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rig.turntable.grbl_codec import AXES

#: gcode.c: value words GRBL accepts besides the axis letters.
_VALUE_WORDS = frozenset("FIJKLNPRST")
_NON_NEGATIVE = frozenset("FNPTS")
_MODAL_GROUPS = {0.0: "motion", 1.0: "motion", 90.0: "distance", 91.0: "distance",
                 20.0: "units", 21.0: "units", 17.0: "plane", 94.0: "feed_mode"}  # fmt: skip
_COORD_SYSTEMS = {54.0 + n: n for n in range(6)}
_NON_MODAL = frozenset({4.0, 10.0, 53.0, 92.0})
MM_PER_INCH = 25.4


@dataclass
class Outcome:
    """What a parsed block asks of the controller; `error` is its `error:N` (0: ok)."""

    error: int = 0
    target: list[float] | None = None  # a motion's machine-unit target
    rate: float | None = None  # its feed (units/min), None for a rapid
    dwell_s: float | None = None  # G4: wait for the planner to empty, then dwell
    sync: bool = False  # G10/G92 sync the planner first (FORCE_BUFFER_SYNC_* in config.h)


@dataclass
class GcodeState:
    """The parser's modal state and offsets (gc_state); G54-G59 live in EEPROM and survive resets."""

    n_axes: int
    position: list[float] = field(default_factory=list)
    coord_systems: list[list[float]] = field(default_factory=list)
    coord_select: int = 0
    g92: list[float] = field(default_factory=list)
    motion: int = 0
    absolute: bool = True
    inches: bool = False
    feed: float = 0.0

    def __post_init__(self) -> None:
        self.position = self.position or [0.0] * self.n_axes
        self.coord_systems = self.coord_systems or [[0.0] * self.n_axes for _ in range(6)]
        self.g92 = self.g92 or [0.0] * self.n_axes

    def reset(self, position: list[float]) -> None:
        """After a reset (gc_init): default modes, G92 cleared, position synced to the axes."""
        self.position = list(position)
        self.g92 = [0.0] * self.n_axes
        self.coord_select, self.motion, self.absolute, self.inches, self.feed = (
            0,
            0,
            True,
            False,
            0.0,
        )

    def wco(self) -> list[float]:
        """Work coordinate offset: active coordinate system plus G92 (WPos = MPos − WCO)."""
        system = self.coord_systems[self.coord_select]
        return [a + b for a, b in zip(system, self.g92, strict=True)]

    def modal_report(self) -> str:
        """The `$G` line's body (report.c report_gcode_modes)."""
        return (
            f"G{self.motion} G{54 + self.coord_select} G17 G{20 if self.inches else 21} "
            f"G{90 if self.absolute else 91} G94 M5 M9 T0 F{self.feed:.0f} S0"
        )

    def execute(self, words: list[tuple[str, float]]) -> Outcome:
        """Check and apply one block; nothing changes when it fails."""
        values: dict[str, float] = {}
        g_codes: list[float] = []
        for letter, value in words:
            if letter == "G":
                g_codes.append(value)
            elif letter == "M":
                if value not in (5.0, 9.0):
                    return Outcome(error=20)
            elif letter in values:
                return Outcome(error=25)
            elif letter not in _VALUE_WORDS and letter not in AXES[: self.n_axes]:
                return Outcome(error=20)
            elif letter in _NON_NEGATIVE and value < 0:
                return Outcome(error=4)
            else:
                values[letter] = value
        return self._apply(g_codes, values)

    def _apply(self, g_codes: list[float], values: dict[str, float]) -> Outcome:
        groups: dict[str, float] = {}
        non_modal: float | None = None
        select: int | None = None
        for g in g_codes:
            if g in _MODAL_GROUPS:
                group = _MODAL_GROUPS[g]
            elif g in _COORD_SYSTEMS:
                group, select = "coord", _COORD_SYSTEMS[g]
            elif g in _NON_MODAL:
                group, non_modal = "non_modal", g
            else:
                return Outcome(error=20)
            if group in groups:
                return Outcome(error=21)
            groups[group] = g
        inches = groups.get("units", 20.0 if self.inches else 21.0) == 20.0
        scale = MM_PER_INCH if inches else 1.0
        axes = {AXES.index(k): v * scale for k, v in values.items() if k in AXES}
        used = {4.0: {"P"}, 10.0: {"L", "P"}}.get(non_modal or 0.0, set())
        if set(values) - set(AXES) - {"F", "N"} - used:
            return Outcome(error=36)  # checked before anything changes, as gcode.c step 3 does
        if non_modal == 4.0:
            if "P" not in values:
                return Outcome(error=28)
            return self._finish(groups, select, values, scale, Outcome(dwell_s=values["P"]))
        if non_modal == 10.0:
            return self._set_coordinates(groups, select, values, axes, scale)
        if non_modal == 92.0:
            if not axes:
                return Outcome(error=26)
            system = self.coord_systems[select if select is not None else self.coord_select]
            for i, v in axes.items():
                self.g92[i] = self.position[i] - system[i] - v
            return self._finish(groups, select, values, scale, Outcome(sync=True))
        return self._motion(groups, select, values, axes, scale, machine=non_modal == 53.0)

    def _set_coordinates(self, groups: dict[str, float], select: int | None,
                         values: dict[str, float], axes: dict[int, float],
                         scale: float) -> Outcome:  # fmt: skip
        if not axes:
            return Outcome(error=26)
        if "L" not in values or "P" not in values:
            return Outcome(error=28)
        if values["L"] not in (2.0, 20.0):
            return Outcome(error=20)
        number = int(values["P"])
        if number > 6:
            return Outcome(error=29)
        index = number - 1 if number > 0 else self.coord_select
        stored = self.coord_systems[index]
        for i, v in axes.items():
            # L20: the offset that makes the parser's position read v (WPos = MPos − WCS − G92)
            stored[i] = self.position[i] - self.g92[i] - v if values["L"] == 20.0 else v
        return self._finish(groups, select, values, scale, Outcome(sync=True))

    def _motion(self, groups: dict[str, float], select: int | None, values: dict[str, float],
                axes: dict[int, float], scale: float, *, machine: bool) -> Outcome:  # fmt: skip
        motion = int(groups.get("motion", float(self.motion)))
        absolute = groups.get("distance", 90.0 if self.absolute else 91.0) == 90.0
        if machine and motion not in (0, 1):
            return Outcome(error=30)
        feed = values["F"] * scale if "F" in values else self.feed
        if not axes:
            return self._finish(groups, select, values, scale, Outcome())
        if motion == 1 and feed <= 0:
            return Outcome(error=22)
        system = self.coord_systems[select if select is not None else self.coord_select]
        target = list(self.position)
        for i, v in axes.items():
            if machine:
                target[i] = v
            elif absolute:
                target[i] = v + system[i] + self.g92[i]
            else:
                target[i] = self.position[i] + v
        outcome = Outcome(target=target, rate=feed if motion == 1 else None)
        return self._finish(groups, select, values, scale, outcome)

    def _finish(self, groups: dict[str, float], select: int | None, values: dict[str, float],
                scale: float, outcome: Outcome) -> Outcome:  # fmt: skip
        if "F" in values:
            self.feed = values["F"] * scale
        if "motion" in groups:
            self.motion = int(groups["motion"])
        if "distance" in groups:
            self.absolute = groups["distance"] == 90.0
        if "units" in groups:
            self.inches = groups["units"] == 20.0
        if select is not None:
            self.coord_select = select
        if outcome.target is not None:
            self.position = list(outcome.target)
        return outcome
