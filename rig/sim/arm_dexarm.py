"""The Rotrics DexArm's firmware (Marlin 2 with DexArm additions) handling its serial commands.

References, all in iwwwwwwi/Marlin_For_DexArm (Marlin/src/...):

- Commands run one after another from Marlin's queue, each answered `ok` when it is done; a
  command that waits (`planner.synchronize()`) holds every later one. G0/G1 are done once
  planned (gcode/motion/G0_G1.cpp), so their `ok` comes at once; M400, G4, M1000-M1003, M1112
  and M888 synchronize first (gcode/control/M_dexarm.cpp).
- Reach (module/motion.cpp `prepare_fast_move_to_destination` for G0,
  `line_to_destination_kinematic` for G1, which skips the check for a Z-only move): a refused
  move prints `XY beyond limit.....` (or Z, Y) from module/dexarm/dexarm.cpp
  `dexarm_position_is_reachable`, does not move, and still gets its `ok`.
- Until M1112 has homed the arm, `inverse_kinematics` prints `Send M1112 or click HOME to
  initialize DexArm first before any motion.` and nothing moves.
- M114 reports `current_position`: the target of the last move command, not where the arm is
  (motion.cpp `report_current_position_projected`).
- M888 P2 selects the pump module, prints `THE CURRENT MODULE IS PUMP` and saves the settings
  (`echo:Settings Stored ...`, Configuration.h EEPROM_CHITCHAT). M1112 echoes `M1112` first.
- While a command waits, `echo:busy: processing` every 2 s (Configuration.h
  HOST_KEEPALIVE_FEATURE, DEFAULT_KEEPALIVE_INTERVAL 2); unknown commands get
  `echo:Unknown command: "…"` and `ok` (Marlin gcode.cpp).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass

from rig.arm import codec
from rig.arm.codec import Command
from rig.config import FaultRule
from rig.sim.arm_kinematics import (
    DEXARM_PEN_MODULE_OFFSET_MM,
    DEXARM_PUMP_MODULE_OFFSET_MM,
    dexarm_refusal,
)
from rig.sim.arm_machine import XYZ, ArmMachine

Wait = Callable[[], bool]
Handler = Generator[Wait, None, list[str]]

#: Configuration.h DEFAULT_KEEPALIVE_INTERVAL, in physical seconds
KEEPALIVE_S = 2.0
#: module/motion.cpp: feedrate_mm_s = MMM_TO_MMS(3000) until a command sets F
DEFAULT_FEED_MM_PER_S = 3000.0 / 60.0
NOT_HOMED = "Send M1112 or click HOME to initialize DexArm first before any motion."
#: M888 P<n>: the module it selects and its offset (dexarm_position_config.h)
MODULES = {0: ("PEN", DEXARM_PEN_MODULE_OFFSET_MM), 2: ("PUMP", DEXARM_PUMP_MODULE_OFFSET_MM)}


@dataclass
class _Job:
    """One command in Marlin's queue: its handler, and what it waits for now."""

    steps: Generator[Wait, None, None]
    waiting: Wait | None = None


class DexarmFirmware:
    """Marlin's command queue on the DexArm, driving an `ArmMachine`."""

    def __init__(self, arm: ArmMachine, *, homed: bool) -> None:
        self.arm = arm
        self.dialect = arm.dialect
        self.homed = homed
        # the pneumatic module, as an earlier M888 P2 left it in EEPROM
        self.module_offset_mm = DEXARM_PUMP_MODULE_OFFSET_MM
        self._commanded: XYZ = arm.xyz_mm  # Marlin's current_position
        self._feed_mm_per_s = DEFAULT_FEED_MM_PER_S
        self._jobs: deque[_Job] = deque()
        self._dwell_until: float | None = None
        self._next_busy: float | None = None

    # ------------------------------------------------------------------ queue
    def receive(self, line: str) -> None:
        """Queue one command; it runs once those before it are done."""
        text = line.strip()
        if not text:
            return
        command = codec.parse_command(self.dialect, text)
        fault, transport = self.arm.claim_fault()
        self._jobs.append(_Job(self._run(text, command, fault, transport)))

    def service(self) -> None:
        """Run queued commands until one has to wait; send keep-alives while it does."""
        while self._jobs:
            job = self._jobs[0]
            if job.waiting is not None and not job.waiting():
                self._keepalive()
                return
            try:
                job.waiting = next(job.steps)
            except StopIteration:
                self._jobs.popleft()
                self._next_busy = None
                continue

    def next_due(self) -> float | None:
        """A dwell's end or the next keep-alive, whichever comes first."""
        due = [t for t in (self._dwell_until, self._next_busy) if t is not None]
        return min(due) if due else None

    def _keepalive(self) -> None:
        scale = self.arm.clock.scale
        if scale <= 0:
            return  # no physical time passes at scale 0: never busy for 2 s
        now = self.arm.clock.now()
        if self._next_busy is None:
            self._next_busy = now + KEEPALIVE_S * scale
        elif now >= self._next_busy:
            self.arm.send_reply(["echo:busy: processing"])
            self._next_busy += KEEPALIVE_S * scale

    def _idle(self) -> bool:
        return self.arm.idle

    # ------------------------------------------------------------------ commands
    def _run(
        self,
        text: str,
        command: Command | None,
        fault: FaultRule | None,
        transport: FaultRule | None,
    ) -> Generator[Wait, None, None]:
        if fault is not None and fault.kind in ("error", "alarm"):
            lines = ["Error:operation failed (injected fault)"]
        elif command is None or command.code not in self._handlers():
            lines = [f'echo:Unknown command: "{text}"']
        else:
            lines = yield from self._handlers()[command.code](command)
        self.arm.send_reply([*lines, "ok"], transport)

    def _handlers(self) -> dict[str, Callable[[Command], Handler]]:
        return {
            "G0": self._move,
            "G1": self._move,
            "G4": self._dwell,
            "M114": self._position,
            "M115": self._info,
            "M400": self._finish_moves,
            "M888": self._module,
            "M1000": self._pump,
            "M1001": self._pump,
            "M1002": self._pump,
            "M1003": self._pump,
            "M1112": self._home,
        }

    def _move(self, command: Command) -> Handler:
        yield from ()
        params = command.params
        here = self._commanded
        target = (params.get("X", here[0]), params.get("Y", here[1]), params.get("Z", here[2]))
        if "F" in params:
            self._feed_mm_per_s = params["F"] / 60.0
        if not all(math.isfinite(v) for v in (*target, self._feed_mm_per_s)):
            return []  # not modelled: what Marlin's parser makes of "nan"
        z_only = target[:2] == here[:2]
        if command.code == "G0" or not z_only:
            refused = dexarm_refusal(target, self.module_offset_mm)
            if refused is not None:
                return [refused]  # current_position stays where it was
        if target == here:
            return []
        self._commanded = target  # set even when inverse_kinematics refuses below
        if not self.homed:
            return [NOT_HOMED]
        self.arm.plan_move(target, max(self._feed_mm_per_s, 1e-3))
        return []

    def _dwell(self, command: Command) -> Handler:
        yield self._idle  # G4: planner.synchronize() first
        seconds = command.params.get("S", command.params.get("P", 0.0) / 1000.0)
        self._dwell_until = self.arm.clock.record(self.arm.name, "dwell", max(0.0, seconds))
        until = self._dwell_until
        yield lambda: self.arm.clock.now() >= until
        self._dwell_until = None
        return []

    def _position(self, command: Command) -> Handler:
        yield from ()
        return [codec.format_position(self.dialect, self._commanded)]

    def _info(self, command: Command) -> Handler:
        yield from ()
        return [self.dialect.info_reply]

    def _finish_moves(self, command: Command) -> Handler:
        yield self._idle
        return []

    def _pump(self, command: Command) -> Handler:
        yield self._idle  # M1000-M1003: planner.synchronize(), then the pump module's command
        self.arm.switch_suction(command.code == "M1000")
        return []

    def _module(self, command: Command) -> Handler:
        yield self._idle
        if "P" not in command.params:
            name = "PUMP" if self.module_offset_mm == DEXARM_PUMP_MODULE_OFFSET_MM else "PEN"
            return [f"The current module is {name}"]  # print_current_module_type
        name, offset = MODULES.get(int(command.params["P"]), ("PEN", DEXARM_PEN_MODULE_OFFSET_MM))
        self.module_offset_mm = offset
        return [f"THE CURRENT MODULE IS {name}", "echo:Settings Stored (632 bytes; crc 41419)"]

    def _home(self, command: Command) -> Handler:
        self.arm.send_reply(["M1112"])  # SERIAL_ECHOPAIR("M1112\r\n") before anything else
        yield self._idle
        params = command.params
        default = self.dialect.home_pose_mm or (0.0, 300.0, 0.0)
        target = (
            (params["X"], params["Y"], params["Z"]) if all(k in params for k in "XYZ") else default
        )
        self.arm.plan_move(target, self.arm.config.speed_mm_per_s, action="home")
        yield self._idle
        self.homed = True
        self._commanded = target
        return []
