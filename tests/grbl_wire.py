"""A GRBL emulator with a bare serial line to it: what a host would see byte for byte."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import pytest

from rig.errors import DeviceTimeout
from rig.sim.clock import SimClock
from rig.sim.grbl_emulator import GrblEmulator
from rig.sim.world import World
from rig.transport import SerialLineTransport
from rig.turntable.grbl_codec import Reply, Status, parse_line


@dataclass
class Wire:
    """The emulator, its clock and world, and a line to it."""

    emulator: GrblEmulator
    link: SerialLineTransport
    clock: SimClock
    world: World
    log: list[bytes] = field(default_factory=list)

    def send(self, data: bytes) -> None:
        """Write bytes as they are: real-time characters and lines alike."""
        self.link.write(data)

    def read(self, count: int = 1, timeout_s: float = 2.0) -> list[Reply]:
        """The next `count` lines, parsed."""
        lines = [self.link.read_line(timeout_s) for _ in range(count)]
        self.log.extend(lines)
        return [parse_line(line) for line in lines]

    def raw(self, count: int = 1, timeout_s: float = 2.0) -> list[bytes]:
        """The next `count` lines, as bytes."""
        lines = [self.link.read_line(timeout_s) for _ in range(count)]
        self.log.extend(lines)
        return lines

    def ask(self, data: bytes, count: int = 1) -> list[Reply]:
        """Send, then read `count` lines."""
        self.send(data)
        return self.read(count)

    def status(self) -> Status:
        """Ask `?` and return the next report (other lines before it are an error)."""
        (report,) = self.ask(b"?")
        assert isinstance(report, Status), report
        return report

    def silent(self, quiet_s: float = 0.15) -> bool:
        """Whether nothing arrives for quiet_s."""
        try:
            line = self.link.read_line(quiet_s)
        except DeviceTimeout:
            return True
        self.log.append(line)
        return False

    def wait_for(self, state: str, timeout_s: float = 5.0) -> Status:
        """Poll `?` (at 20 Hz) until the report's state (with substate) is `state`."""
        deadline = time.monotonic() + timeout_s
        while True:
            report = self.status()
            shown = report.state + (f":{report.substate}" if report.substate is not None else "")
            if shown == state or time.monotonic() > deadline:
                assert shown == state, report
                return report
            time.sleep(0.05)


WireFactory = Callable[..., Wire]


@pytest.fixture(name="make_wire")
def wire_fixture() -> Iterator[WireFactory]:
    """Start an emulator with `settings` at time `scale`; the line is open and past a reset."""
    started: list[Wire] = []

    def build(
        settings: Mapping[int, float] | None = None, *, scale: float = 0.0, **kw: object
    ) -> Wire:
        world, clock = World(), SimClock(scale)
        emulator = GrblEmulator(settings=settings, world=world, clock=clock, **kw)  # type: ignore[arg-type]
        emulator.start()
        link = SerialLineTransport(emulator.port, name="host")
        link.open()
        wire = Wire(emulator, link, clock, world)
        started.append(wire)
        # the power-up banner may go out before the line is open: reset, and start from there
        wire.send(b"\x18")
        assert wire.raw()[-1].startswith(b"Grbl 1.1h")
        link.drain(0.05)
        return wire

    yield build
    for wire in started:
        wire.link.close()
        wire.emulator.stop()
