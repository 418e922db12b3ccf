"""GRBL 1.1's `$` system commands for the emulator (system.c system_execute_line, settings.c).

A mixin of GrblEmulator: it reads and changes the emulator's state, settings and parser, and
answers on its line. Which state admits which command follows system_execute_line: `$$` is
refused while running or holding (error:8), `$#`, `$H`, `$I`, `$N`, `$RST=` and setting writes
only in Idle or Alarm (error:8), `$X` only acts in Alarm (ok either way), `$H` needs `$22=1`
(error:5); an unknown `$` word is not a number (error:2); `$<n>=<v>` is checked as
settings_store_global_setting does (error:3 unknown, 4 negative, 6 pulse < 3 µs, 10 soft limits
without homing, 12 step rate above 30 kHz). Not modelled: jogging (`$J=`), sleep (`$SLP`) and
stored startup lines (`$Nx=`): the emulator answers them error:3.
"""

from __future__ import annotations

import math

from rig.config import FaultRule
from rig.sim.grbl_gcode import GcodeState
from rig.sim.grbl_motion import Planner
from rig.turntable.grbl_codec import format_number
from rig.turntable.grbl_settings import (
    MAX_STEP_RATE_HZ,
    STOCK_AXIS,
    STOCK_GLOBAL,
    format_setting,
)

_HELP = "[HLP:$$ $# $G $I $N $x=val $Nx=line $J=line $SLP $C $X $H ~ ! ? ctrl-x]"


class SystemCommands:
    """`$` commands, mixed into GrblEmulator (which provides the attributes below)."""

    state: str
    settings: dict[int, float]
    parser: GcodeState
    planner: Planner
    version: str
    n_axes: int

    def _reply(self, text: str, fault: FaultRule | None = None) -> None:
        raise NotImplementedError

    def _start_homing(self, fault: FaultRule | None, now: float) -> None:
        raise NotImplementedError

    def _request_reset(self, now: float) -> None:
        raise NotImplementedError

    def _coords(self, values: list[float]) -> str:
        raise NotImplementedError

    # ------------------------------------------------------------------ dispatch
    def _system(self, text: str, fault: FaultRule | None, now: float) -> None:
        """Execute one `$` line (already upper-cased and stripped of spaces)."""
        word = text[1:2]
        if word == "":
            self._reply(_HELP, fault)
            self._reply("ok")
        elif word == "J":
            self._reply("error:3", fault)  # jogging is not modelled
        elif word in "$GCX":
            self._simple(text, fault, now)
        elif self.state not in ("Idle", "Alarm"):
            self._reply("error:8", fault)  # EEPROM and homing commands need Idle or Alarm
        elif text == "$#":
            self._parameters(fault)
        elif text == "$H":
            if not int(self.settings[22]):
                self._reply("error:5", fault)
            else:
                self._start_homing(fault, now)
        elif text == "$I":
            self._reply(f"[VER:{self.version}.20190825:]", fault)
            self._reply("[OPT:V,15,128]")
            self._reply("ok")
        elif text == "$N":
            self._reply("$N0=", fault)
            self._reply("$N1=")
            self._reply("ok")
        elif text.startswith(("$N", "$SLP")):
            self._reply("error:3", fault)  # stored startup lines and sleep are not modelled
        elif text.startswith("$RST="):
            self._restore(text[5:], fault, now)
        else:
            code = self._store(text[1:])
            self._reply(f"error:{code}" if code else "ok", fault)

    def _simple(self, text: str, fault: FaultRule | None, now: float) -> None:
        """`$$`, `$G`, `$C`, `$X`: anything after the letter is an invalid statement."""
        if len(text) != 2:
            self._reply("error:3", fault)
        elif text == "$$":
            if self.state in ("Run", "Hold"):
                self._reply("error:8", fault)  # "takes too long to print" during a cycle
                return
            first = True
            for number, value in sorted(self.settings.items()):
                self._reply(format_setting(number, value), fault if first else None)
                first = False
            self._reply("ok")
        elif text == "$G":
            self._reply(f"[GC:{self.parser.modal_report()}]", fault)
            self._reply("ok")
        elif text == "$C":
            self._check_mode(fault, now)
        else:  # $X
            if self.state == "Alarm":
                self.state = "Idle"
                self._reply("[MSG:Caution: Unlocked]", fault)
                fault = None
            self._reply("ok", fault)

    def _check_mode(self, fault: FaultRule | None, now: float) -> None:
        if self.state == "Check":
            # leaving check mode resets GRBL to flush the parser (mc_reset in system.c)
            self._reply("[MSG:Disabled]", fault)
            self._reply("ok")
            self._request_reset(now)
        elif self.state != "Idle":
            self._reply("error:8", fault)
        else:
            self.state = "Check"
            self._reply("[MSG:Enabled]", fault)
            self._reply("ok")

    def _parameters(self, fault: FaultRule | None) -> None:
        """`$#`: coordinate systems, G28/G30, G92, tool length offset, probe (report.c)."""
        zero = [0.0] * self.n_axes
        for n, system in enumerate(self.parser.coord_systems):
            self._reply(f"[G{54 + n}:{self._coords(system)}]", fault if n == 0 else None)
        self._reply(f"[G28:{self._coords(zero)}]")
        self._reply(f"[G30:{self._coords(zero)}]")
        self._reply(f"[G92:{self._coords(self.parser.g92)}]")
        self._reply(f"[TLO:{format_number(0.0)}]")
        self._reply(f"[PRB:{self._coords(zero)}:0]")
        self._reply("ok")

    def _restore(self, what: str, fault: FaultRule | None, now: float) -> None:
        """`$RST=$|#|*`: restore settings and/or offsets, then reset (system.c)."""
        if what not in ("$", "#", "*"):
            self._reply("error:3", fault)
            return
        if what in "$*":
            self.settings.update(STOCK_GLOBAL)
            for first, value in STOCK_AXIS.items():
                self.settings.update({first + i: value for i in range(self.n_axes)})
        if what in "#*":
            self.parser.coord_systems = [[0.0] * self.n_axes for _ in range(6)]
        self._reply("[MSG:Restoring defaults]", fault)
        self._reply("ok")
        self._request_reset(now)

    # ------------------------------------------------------------------ settings
    def _store(self, body: str) -> int:
        """`$<n>=<v>` (settings.c settings_store_global_setting); returns the status code."""
        number_text, equals, value_text = body.partition("=")
        number, value = _read_float(number_text), _read_float(value_text)
        if number is None:
            return 2  # read_float failed on the setting number
        if not equals:
            return 3
        if value is None:
            return 2
        if number > 255 or number != int(number):
            return 3
        return self.store_setting(int(number), value)

    def store_setting(self, number: int, value: float) -> int:
        """Check and store one setting as GRBL does; 0 when it was stored, else its error code."""
        if value < 0:
            return 4
        if number >= 100:
            axis, block = number % 10, number - number % 10
            if block not in STOCK_AXIS or axis >= self.n_axes:
                return 3
            if block == 100 and value * self.settings[110 + axis] > MAX_STEP_RATE_HZ * 60:
                return 12
            if block == 110 and value * self.settings[100 + axis] > MAX_STEP_RATE_HZ * 60:
                return 12
            self.settings[number] = value
            return 0
        if number not in STOCK_GLOBAL:
            return 3
        whole = math.trunc(value)
        if number == 0 and whole < 3:
            return 6
        if number == 20 and whole and not int(self.settings[22]):
            return 10
        self.settings[number] = value if number in (11, 12, 24, 25, 27, 30, 31) else whole
        if number == 22 and not whole:
            self.settings[20] = 0  # disabling homing forces soft limits off
        return 0


def _read_float(text: str) -> float | None:
    """GRBL's read_float: digits with at most one point and a sign, nothing else."""
    body = text[1:] if text[:1] in "+-" else text
    if not body or body.count(".") > 1 or not body.replace(".", "").isdigit():
        return None
    return float(text)
