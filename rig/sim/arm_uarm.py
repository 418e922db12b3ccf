"""The uArm Swift Pro's firmware (V4, grbl-based) handling its serial commands.

The reference is `Source code/uarm_protocol.c` of uArm-Developer/SwiftProForArduino:

- `receive_cmd_line`: a line starting with `#n` is numbered; lines that start with anything but
  `#`, `$`, G, M or P are dropped without a reply. P commands are asynchronous: answered at once,
  even mid-move. G and M commands go to a queue of 20 (`PACK_MAX_SIZE`); a 21st gets
  `E23 buffer full` (no `$n`).
- `parse_cmd_line`: the queued commands are executed one by one (a move is handed to the planner
  and the next command runs while it moves), except while a `G2004` delay is running
  (`gcode_delay_flag`).
- `report_parse_result`: the replies of queued commands are printed in order, and only while the
  arm is idle (`sys.state == STATE_IDLE`): a move's `$n ok` comes when the arm has stopped.
- `add_result_to_report`: `ok`, or `E20` (unsupported command), `E21` (a uArm command's bad
  parameter), `E22` (unreachable: `mc_line` returns UARM_COORD_ERROR), `E26` (encoder error,
  firmware 4.2+); grbl's other status codes add nothing, so a bad number gets a bare `$n`.
- Queries: `P2220` reports the encoders' position as ` X%s Y%s Z%s` (four decimals), `P2203` the
  software version. `M2231 V0/V1` switches the pump when executed; `M2400 S0..S3` sets the mode.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass

from rig.arm import codec
from rig.arm.codec import Command
from rig.config import FaultRule
from rig.sim.arm_kinematics import uarm_reachable
from rig.sim.arm_machine import ArmMachine

#: uarm_protocol.h PACK_MAX_SIZE: synchronous commands the firmware holds at once
QUEUE_SIZE = 20


@dataclass
class _Queued:
    """A synchronous command: its number, its parsed form, its result once executed."""

    seq: int | None
    command: Command | None
    fault: FaultRule | None
    transport: FaultRule | None
    result: list[str] | None = None


class UarmFirmware:
    """The uArm V4 firmware's command handling, driving an `ArmMachine`."""

    def __init__(self, arm: ArmMachine) -> None:
        self.arm = arm
        self.dialect = arm.dialect
        self._queue: deque[_Queued] = deque()  # received, not yet executed
        self._reports: deque[_Queued] = deque()  # executed, reply not yet printed
        self._delay_until: float | None = None
        self._feed_mm_per_min = arm.config.speed_mm_per_s * 60.0  # grbl's modal F

    # ------------------------------------------------------------------ receive_cmd_line
    def receive(self, line: str) -> None:
        """Answer a query now, queue a G/M command, or drop the line."""
        # protocol_main_loop drops whitespace and upcases before receive_cmd_line sees the line
        text = "".join(line.split()).upper()
        if not text or text[0] not in "#$GMP":
            return  # receive_cmd_line: "else { return; }", no reply at all
        if text[0] == "$":
            return  # grbl system commands: not modelled (the driver sends none)
        command = codec.parse_command(self.dialect, line)
        seq = command.seq if command is not None else _seq_of(text)
        body = text.lstrip("#0123456789")
        fault, transport = self.arm.claim_fault()
        if body.startswith("P"):
            result = self._error(fault) if _is_error(fault) else self._query(command)
            self.arm.send_reply(_report(self.dialect, seq, result), transport)
            return
        if len(self._queue) >= QUEUE_SIZE:  # syn_pack_remain counts unexecuted commands
            self.arm.send_reply(["E23 buffer full"])
            return
        self._queue.append(_Queued(seq, command, fault, transport))

    # ------------------------------------------------------------------ main loop
    def service(self) -> None:
        """Execute what the delay lets through; print results once the arm is idle."""
        now = self.arm.clock.now()
        while self._queue:
            if self._delay_until is not None and now < self._delay_until:
                break  # parse_cmd_line: "if( !uarm.gcode_delay_flag && syn_pack_remain )"
            self._delay_until = None
            queued = self._queue.popleft()
            queued.result = (
                self._error(queued.fault) if _is_error(queued.fault) else self._execute(queued)
            )
            self._reports.append(queued)
        if not self.arm.idle:
            return  # report_parse_result: "if( sys.state == STATE_IDLE )"
        while self._reports:
            done = self._reports.popleft()
            assert done.result is not None
            self.arm.send_reply(_report(self.dialect, done.seq, done.result), done.transport)

    def next_due(self) -> float | None:
        """When a running G2004 delay ends, if queued commands wait for it."""
        return self._delay_until if self._queue else None

    # ------------------------------------------------------------------ commands
    def _execute(self, queued: _Queued) -> list[str]:
        command = queued.command
        if command is None:
            return []  # gc_execute_line failed to read a word: STATUS_BAD_NUMBER_FORMAT
        code, params = command.code, command.params
        if any(not math.isfinite(v) for v in params.values()):
            return []  # read_float fails on "nan"/"inf": a bare `$n`, no ok and no E code
        if code in ("G0", "G1"):
            return self._move(params)
        if code == "G2004":
            # uarm_cmd_g2004: the delay holds the *next* queued command, not this reply
            delay_s = max(0.0, params.get("P", 0.0)) / 1000.0
            self._delay_until = self.arm.clock.record(self.arm.name, "dwell", delay_s)
            return ["ok"]
        if code == "M2231":
            if params.get("V") not in (0.0, 1.0):
                return [f"E{self.dialect.parameter_code}"]
            self.arm.switch_suction(params["V"] == 1.0)  # uarm_cmd_m2231: pump_on / pump_off
            return ["ok"]
        if code == "M2400":
            ok = params.get("S") in (0.0, 1.0, 2.0, 3.0)
            return ["ok"] if ok else [f"E{self.dialect.parameter_code}"]
        # M2200 (the V3 "is moving" query) and anything else: STATUS_GCODE_UNSUPPORTED_COMMAND
        return [f"E{self.dialect.unknown_command_code}"]

    def _move(self, params: dict[str, float]) -> list[str]:
        here = codec.to_native(self.dialect, self.arm.planned_xyz)
        native = (params.get("X", here[0]), params.get("Y", here[1]), params.get("Z", here[2]))
        self._feed_mm_per_min = params.get("F", self._feed_mm_per_min)
        if self._feed_mm_per_min <= 0:
            return []  # grbl: STATUS_NEGATIVE_VALUE / UNDEFINED_FEED_RATE print nothing
        if not uarm_reachable(native):
            return [f"E{self.dialect.unreachable_code}"]  # mc_line: UARM_COORD_ERROR
        target = codec.from_native(self.dialect, native)
        self.arm.plan_move(target, self._feed_mm_per_min / 60.0)
        return ["ok"]

    def _query(self, command: Command | None) -> list[str]:
        code = command.code if command is not None else ""
        if code == "P2220":
            # uarm_cmd_p2220: the angle sensors' position, mid-move included
            xyz = self.arm.xyz_mm
            return ["ok", codec.format_position(self.dialect, xyz)]
        if code == "P2203":
            return ["ok", self.dialect.info_reply]
        return [f"E{self.dialect.unknown_command_code}"]

    def _error(self, fault: FaultRule | None) -> list[str]:
        # an injected "alarm" carries GRBL's alarm number (the presets share it): the uArm has
        # no E1..E19, so it reports its own device error; an "error" may name its E code
        code = fault.code if fault is not None and fault.kind == "error" else None
        return [f"E{code if code is not None else self.dialect.fault_code}"]


def _is_error(fault: FaultRule | None) -> bool:
    return fault is not None and fault.kind in ("error", "alarm")


def _seq_of(text: str) -> int | None:
    """The `#n` of a line the codec could not parse (sscanf "#%[0-9]" in receive_cmd_line)."""
    match = re.match(r"#(\d+)", text)
    return int(match.group(1)) if match else None


def _report(d: codec.Dialect, seq: int | None, words: list[str]) -> list[str]:
    """add_result_to_report: `$n`, then the status word and any data, on one line."""
    prefix = [f"${seq}"] if seq is not None else []
    return [" ".join(prefix + words)] if prefix or words else []
