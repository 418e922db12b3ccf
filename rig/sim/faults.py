"""Fault injection for emulators: per-command draws from the configured rules, seeded."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable

from rig.config import FaultKind, FaultRule


class FaultInjector:
    """Decides, command by command, whether an emulator misbehaves and how.

    Rules with `after_commands` fire exactly once at that command count (deterministic, for
    tests); rules with a probability fire at random with the given seed. Tests can also `arm`
    a one-shot fault for the next command.
    """

    def __init__(self, rules: Iterable[FaultRule] = (), seed: int = 0) -> None:
        self._rules = list(rules)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._count = 0
        self._armed: list[FaultRule] = []
        self.fired: list[tuple[int, FaultKind]] = []

    def arm(self, kind: FaultKind, code: int | None = None, times: int = 1) -> None:
        """Make the next `times` commands fail with this fault."""
        with self._lock:
            self._armed.extend(FaultRule(kind=kind, code=code) for _ in range(times))

    def clear(self) -> None:
        """Drop armed faults and stop random ones."""
        with self._lock:
            self._armed.clear()
            self._rules.clear()

    def next_fault(self, allowed: Iterable[FaultKind] | None = None) -> FaultRule | None:
        """Count one command and return the fault to inject for it, if any."""
        allowed_set = set(allowed) if allowed is not None else None
        with self._lock:
            self._count += 1
            chosen: FaultRule | None = None
            if self._armed and (allowed_set is None or self._armed[0].kind in allowed_set):
                chosen = self._armed.pop(0)
            else:
                for rule in self._rules:
                    if allowed_set is not None and rule.kind not in allowed_set:
                        continue
                    if rule.after_commands is not None:
                        if rule.after_commands == self._count:
                            chosen = rule
                            break
                    elif rule.probability > 0 and self._random.random() < rule.probability:
                        chosen = rule
                        break
            if chosen is not None:
                self.fired.append((self._count, chosen.kind))
            return chosen


FAULT_PRESETS: dict[str, tuple[FaultRule, ...]] = {
    "none": (),
    "light": (
        FaultRule(kind="lost_reply", probability=0.01),
        FaultRule(kind="garbage", probability=0.01),
    ),
    "heavy": (
        FaultRule(kind="lost_reply", probability=0.04),
        FaultRule(kind="late_reply", probability=0.02),
        FaultRule(kind="garbage", probability=0.03),
        FaultRule(kind="alarm", probability=0.01, code=1),
        FaultRule(kind="modbus_exception", probability=0.03, code=4),
    ),
}
