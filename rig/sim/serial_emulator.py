"""Base for line-protocol emulators behind a pseudo-terminal.

The emulator owns the pty's master side; the driver opens the slave path with pyserial exactly
as it would open /dev/ttyUSB0. Subclasses implement `handle_line` (and optionally
`handle_realtime` for single-byte commands such as GRBL's `?`, `!`, `~` and 0x18) and answer with
`send_line`. Fault injection (lost reply, late reply, garbage, disconnect) is applied here, so
every emulator misbehaves the same way.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import threading
import time
import tty

from rig.config import FaultRule
from rig.sim.clock import SimClock
from rig.sim.faults import FaultInjector


class SerialEmulator:
    """Serve a line protocol on a pty until `stop()`; `port` is the path a driver opens."""

    #: bytes handled immediately, outside the line buffer (GRBL real-time commands)
    realtime_bytes: frozenset[int] = frozenset()
    #: how long a "late" reply is held back, in wall seconds (past a driver's timeout)
    late_reply_s: float = 3.0

    def __init__(
        self, *, name: str, clock: SimClock | None = None, faults: FaultInjector | None = None
    ) -> None:
        self.name = name
        self.clock = clock or SimClock(0.0)
        self.faults = faults or FaultInjector()
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)  # no echo, no newline translation: bytes pass as on a USB serial
        self.port = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()
        self._pending_fault: FaultRule | None = None
        self._late: list[threading.Timer] = []  # held-back replies, cancelled by stop()
        self.connected = True
        self.received: list[bytes] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> SerialEmulator:
        """Start serving in a daemon thread; returns self."""
        self._thread = threading.Thread(target=self._serve, name=f"emu-{self.name}", daemon=True)
        self._thread.start()
        self.on_start()
        return self

    def on_start(self) -> None:
        """Hook: called once serving has started (send a banner here)."""

    def stop(self) -> None:
        """Stop serving and close both pty ends."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        # A late reply still pending would outlive the emulator by up to late_reply_s: a thread
        # left running after stop() (and a write to a closed pty). Nobody is listening now.
        for timer in self._late:
            timer.cancel()
            timer.join(timeout=1.0)
        self._late.clear()
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._master = self._slave = -1

    def __enter__(self) -> SerialEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ output
    def send_line(self, text: str | bytes) -> None:
        """Send one reply line (CRLF-terminated as GRBL and the arms do), honouring faults."""
        data = text.encode("ascii") if isinstance(text, str) else text
        fault = self._pending_fault
        self._pending_fault = None
        if not self.connected:
            return
        if fault is not None:
            if fault.kind == "lost_reply":
                return
            if fault.kind == "garbage":
                # line noise instead of the reply: bytes no parser should accept
                self._write(b"\xfe\x00\xa5<|" + bytes([0x80 | (len(data) & 0x7F)]) + b"\r\n")
                return
            if fault.kind == "late_reply":
                timer = threading.Timer(self.late_reply_s, self._write, args=(data + b"\r\n",))
                timer.daemon = True
                timer.name = f"emu-{self.name}-late"
                self._late = [t for t in self._late if t.is_alive()]
                self._late.append(timer)
                timer.start()
                return
            if fault.kind == "disconnect":
                self.disconnect()
                return
        self._write(data + b"\r\n")

    def send_raw(self, data: bytes) -> None:
        """Send raw bytes, bypassing fault injection."""
        if self.connected:
            self._write(data)

    def _write(self, data: bytes) -> None:
        if self._master < 0:
            return
        with self._write_lock, contextlib.suppress(OSError):
            os.write(self._master, data)

    def disconnect(self) -> None:
        """Simulate an unplugged cable: stop answering and hang up the line."""
        self.connected = False
        # closing the master makes the driver's reads fail as a USB unplug does
        with contextlib.suppress(OSError):
            os.close(self._master)
        self._master = -1

    # ------------------------------------------------------------------ input
    def take_fault(
        self, allowed: tuple[str, ...] = ("lost_reply", "late_reply", "garbage", "disconnect")
    ) -> FaultRule | None:
        """Draw the fault for the command being handled; transport faults apply to its reply."""
        fault = self.faults.next_fault()
        if fault is not None and fault.kind in allowed:
            self._pending_fault = fault
            return None
        return fault  # protocol-level faults (error:N, ALARM) are the subclass's to act on

    def handle_line(self, line: str) -> None:
        """Handle one received command line (without line ending)."""
        raise NotImplementedError

    def handle_realtime(self, byte: int) -> None:
        """Handle one real-time byte."""

    def _serve(self) -> None:
        buffer = bytearray()
        while not self._stop.is_set():
            if self._master < 0:
                time.sleep(0.01)
                continue
            try:
                ready, _, _ = select.select([self._master], [], [], self.next_tick_s())
            except (OSError, ValueError):
                return
            if not ready:
                self.tick()
                continue
            try:
                chunk = os.read(self._master, 1024)
            except OSError:
                continue
            for byte in chunk:
                if byte in self.realtime_bytes:
                    self.handle_realtime(byte)
                elif byte in (0x0A, 0x0D):
                    if buffer:
                        line = bytes(buffer)
                        buffer.clear()
                        self.received.append(line)
                        self.handle_line(line.decode("ascii", errors="replace"))
                else:
                    buffer.append(byte)
            self.tick()

    def tick(self) -> None:
        """Hook: called regularly; advance motions here."""

    def next_tick_s(self) -> float:
        """Hook: how long the serving loop may wait for input before the next tick()."""
        return 0.02
