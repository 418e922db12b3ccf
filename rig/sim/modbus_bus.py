"""A serial line made of pseudo-terminals, for Modbus RTU emulators (an RS-485 bus in software).

A driver opens `SerialBus.port` with pyserial exactly as it would open /dev/ttyUSB0; each
emulator `attach()`es and serves its own pty path with pymodbus's serial server. A forwarding
thread copies bytes between the ptys' master sides, as `socat` or a null-modem cable would:
what the driver sends reaches every attached device (a multi-drop bus, where each device
answers only its own unit id), and what a device sends reaches the driver. Bytes that nobody
reads are dropped, as on a real line, so a closed port never blocks the bus.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import threading
import time
import tty
from collections import deque
from dataclasses import dataclass

#: how long a blocked write waits for its reader before the rest of the bytes is dropped
WRITE_WAIT_S = 0.02


class BusStopped(RuntimeError):
    """The line was stopped: its ptys are closed, it cannot forward again (make a new one)."""


@dataclass
class _PtyEnd:
    """One pseudo-terminal: the master side the bus reads and writes, and the slave's path."""

    master: int
    slave: int  # held open so the master never reads EIO while nobody has the path open
    path: str

    @classmethod
    def open(cls) -> _PtyEnd:
        master, slave = pty.openpty()
        tty.setraw(slave)  # no echo, no CR/LF translation, no XON/XOFF: every byte passes
        os.set_blocking(master, False)
        return cls(master=master, slave=slave, path=os.ttyname(slave))

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class SerialBus:
    """Pseudo-terminals joined into one serial line: `port` for the driver, `attach()` per device."""

    #: how long stop() waits for the forwarding thread (a late one closes the ptys itself)
    join_timeout_s = 2.0

    def __init__(self, name: str = "rtu-bus") -> None:
        self.name = name
        self._host = _PtyEnd.open()
        self._devices: dict[str, _PtyEnd] = {}
        self._retired: list[_PtyEnd] = []  # detached, closed by the forwarding thread
        self._lock = threading.Lock()
        self._wake_read, self._wake_write = os.pipe()  # interrupts select() on attach and stop
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._handoff = threading.Lock()  # who closes the ptys: stop(), or a late thread
        self._finished = False  # the forwarding thread has ended
        self._orphaned = False  # stop() gave up waiting for it
        self._traffic: deque[tuple[str, bytes]] = deque(maxlen=1024)

    @property
    def port(self) -> str:
        """The path a driver opens (the host side of the line)."""
        return self._host.path

    def attach(self) -> str:
        """Add a device to the line; returns the pty path the device's server opens."""
        end = _PtyEnd.open()
        with self._lock:
            self._devices[end.path] = end
        self._wake()
        return end.path

    def detach(self, path: str) -> None:
        """Take a device off the line (idempotent); its pty is closed."""
        with self._lock:
            end = self._devices.pop(path, None)
            if end is not None:
                self._retired.append(end)
            forwarding = self._thread is not None
        if forwarding:
            # the thread may be inside select() on this pty: it closes it between two rounds,
            # so no descriptor is closed (and its number reused) under its feet
            self._wake()
        else:
            self._close_retired()

    def _close_retired(self) -> None:
        with self._lock:
            retired, self._retired = self._retired, []
        for end in retired:
            end.close()

    def traffic(self) -> list[tuple[str, bytes]]:
        """The latest chunks seen on the line: ("host", bytes) sent by the driver, ("device", ...)."""
        with self._lock:
            return list(self._traffic)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> SerialBus:
        """Start forwarding in a daemon thread; returns self.

        Raises:
            BusStopped: stop() was called: the ptys are closed.
        """
        if self._closed:
            raise BusStopped(f"serial line {self.name} was stopped; start a new one")
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"emu-{self.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop forwarding and close every pty (idempotent)."""
        if self._closed:
            return  # the wake-up pipe is closed: its descriptor number may be someone else's
        self._closed = True
        self._stop.set()
        self._wake()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=self.join_timeout_s)
            with self._handoff:
                if not self._finished:
                    # it may still be using the descriptors: it closes them as it ends
                    self._orphaned = True
                    return
        self._close_all()

    def _close_all(self) -> None:
        with self._lock:
            ends, self._devices = list(self._devices.values()), {}
        self._close_retired()
        for end in (*ends, self._host):
            end.close()
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> SerialBus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ forwarding
    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"\0")

    def _run(self) -> None:
        try:
            self._forward()
        finally:
            # stop() closes the ptys only once this thread is done with them; if it gave up
            # waiting, they are closed here. Exactly one of the two closes them: a descriptor
            # closed twice may by then be another file's.
            with self._handoff:
                self._finished = True
                if self._orphaned:
                    self._close_all()

    def _forward(self) -> None:
        while not self._stop.is_set():
            self._close_retired()
            with self._lock:
                devices = list(self._devices.values())
            watched = [self._wake_read, self._host.master, *(d.master for d in devices)]
            try:
                ready, _, _ = select.select(watched, [], [], 0.5)
            except (OSError, ValueError):  # only stop() closes descriptors under us
                time.sleep(0.01)  # never spin, should a descriptor go bad some other way
                continue
            for fd in ready:
                if fd == self._wake_read:
                    with contextlib.suppress(OSError):
                        os.read(fd, 64)
                    continue
                data = _read(fd)
                if not data:
                    continue
                with self._lock:
                    self._traffic.append(("host" if fd == self._host.master else "device", data))
                if fd == self._host.master:
                    with self._lock:  # now, not at select time: a device may just have joined
                        targets = [d.master for d in self._devices.values()]
                    for target in targets:  # multi-drop: every device hears the master
                        _write(target, data)
                else:
                    _write(self._host.master, data)


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # EAGAIN (raced), or EIO while a pty is being closed
        return b""


def _write(fd: int, data: bytes) -> None:
    """Write all of `data` (a pty takes what fits in its queue: the rest goes in later writes)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            # a full input queue: give the reader a moment; if it does not read, nobody
            # does, and the rest is lost, as on a line (the bus must not stall on one end)
            with contextlib.suppress(OSError, ValueError):
                if select.select([], [fd], [], WRITE_WAIT_S)[1]:
                    continue
            return
        except OSError:  # EIO: the pty is being closed
            return
