"""The GRBL 1.1 line protocol over a serial transport: one `ok`/`error:N` per line, `?` reports.

GRBL answers every command line with exactly one `ok` or `error:N`, in order; real-time bytes
(`?`, `!`, `~`, 0x18) get no `ok`. A line whose reply timed out may still be answered later, so
the link counts such owed replies and, before it is used again, drains the stragglers and
re-synchronises with a `$G` handshake (anything before its `[GC:…]` line is stale).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from rig.errors import DeviceAlarm, DeviceFault, DeviceTimeout
from rig.retry import with_retries
from rig.transport import SerialLineTransport
from rig.turntable.grbl_codec import (
    SOFT_RESET,
    STATUS_QUERY,
    Alarm,
    Banner,
    ErrorReply,
    Message,
    Ok,
    ParseError,
    Reply,
    Status,
    alarm_meaning,
    parse_line,
)

log = logging.getLogger(__name__)

#: An Arduino resets when the port opens and prints its banner ~1-2 s later; a controller that
#: stays silent this long is already running, so ask it for a banner with a soft reset (a reset
#: byte that reaches the bootloader instead is ignored, and the banner still comes).
_SPONTANEOUS_BANNER_S = 0.5


class GrblLink:
    """Commands and replies with one GRBL 1.1 controller; knows nothing about axes or degrees."""

    def __init__(
        self,
        transport: SerialLineTransport,
        *,
        name: str,
        reply_timeout_s: float,
        banner_timeout_s: float,
        retries: int,
    ) -> None:
        self.transport = transport
        self.name = name
        self.reply_timeout_s = reply_timeout_s
        self.banner_timeout_s = banner_timeout_s
        self.retries = retries
        self.banner: Banner | None = None
        self.owed_replies = 0  # line replies that timed out but may still arrive
        self.in_alarm = False
        # the code of the last ALARM:N line read (None: none since the last recover)
        self.last_alarm: int | None = None

    def write(self, data: bytes) -> None:
        """Send raw bytes (a real-time command).

        Raises:
            TransportError: the link dropped.
        """
        self.transport.write(data)

    def await_banner(self, *, send_reset: bool) -> Banner:
        """Wait for `Grbl 1.1x […]`; with send_reset, soft-reset a controller that stays silent.

        Raises:
            DeviceTimeout: no banner within banner_timeout_s.
            DeviceFault: the banner names a GRBL other than 1.1.
            TransportError: the link dropped.
        """
        start = time.monotonic()
        deadline = start + self.banner_timeout_s
        reset_at = start + min(_SPONTANEOUS_BANNER_S, self.banner_timeout_s / 4)
        reset_sent = not send_reset
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise DeviceTimeout(
                    f"{self.name}: no GRBL banner within {self.banner_timeout_s:g} s "
                    "(is it a GRBL controller?)"
                )
            try:
                raw = self.transport.read_line((deadline if reset_sent else reset_at) - now)
            except DeviceTimeout:
                if not reset_sent:
                    log.debug("%s: no spontaneous banner; sending soft reset", self.name)
                    self.transport.write(SOFT_RESET)
                    reset_sent = True
                continue
            reply = parse_line(raw)
            if isinstance(reply, Banner):
                if not reply.version.startswith("1.1"):
                    raise DeviceFault(
                        f"{self.name}: firmware {reply.firmware} is not supported "
                        "(this driver speaks GRBL 1.1)"
                    )
                self.banner = reply
                # a reset empties GRBL's line buffer: no reply to an earlier line will come
                self.owed_replies = 0
                return reply
            if isinstance(reply, ParseError):
                log.warning("%s: skipping unreadable line %r", self.name, reply.raw)
            else:
                log.debug("%s: before the banner, discarding %r", self.name, reply)

    def prepare(self) -> None:
        """Before an operation: re-synchronise if an earlier reply is still owed.

        Raises:
            DeviceTimeout: the `$G` handshake got no reply.
            DeviceAlarm: an `ALARM:N` line arrived.
            TransportError: the link dropped.
        """
        if self.owed_replies > 0:
            self.resync()

    def resync(self) -> None:
        """Drain straggling replies, then `$G` until its `[GC:…]` shows the replies line up.

        Raises:
            DeviceTimeout: the `$G` handshake got no reply.
            DeviceAlarm: an `ALARM:N` line arrived during the handshake.
            TransportError: the link dropped.
        """
        for raw in self.transport.drain(self.reply_timeout_s):
            stale = parse_line(raw)
            if isinstance(stale, Alarm):
                self.in_alarm = True
                self.last_alarm = stale.code
            log.warning("%s: discarding stale reply %r", self.name, raw)
        self.owed_replies = 0
        self.transport.write(b"$G\n")
        deadline = time.monotonic() + self.reply_timeout_s
        synced = False
        while True:
            try:
                reply = self.next_reply(deadline, "$G")
            except DeviceTimeout:
                self.owed_replies += 1  # the `$G` reply itself may still come
                raise
            if isinstance(reply, Message) and reply.kind == "GC":
                synced = True
            elif isinstance(reply, Ok | ErrorReply) and synced:
                return
            elif isinstance(reply, Ok | ErrorReply):
                log.warning("%s: discarding stale %r", self.name, reply)

    def retry_line(self, line: str) -> None:
        """Send an idempotent line, resending it after a timeout (up to `retries` times).

        Raises:
            DeviceFault: `error:N`; DeviceAlarm on `ALARM:N`.
            DeviceTimeout: no reply after every attempt.
            TransportError: the link dropped.
        """

        def attempt() -> None:
            self.prepare()
            self.command(line)

        with_retries(attempt, attempts=self.retries + 1, retry_on=(DeviceTimeout,))

    def command(
        self, line: str, *, timeout_s: float | None = None, collect: list[Reply] | None = None
    ) -> None:
        """Send one line and wait for its `ok` (never resent here: a motion must not repeat).

        `collect` receives the lines that came before the `ok` (a `$$` dump), status reports
        and line noise excepted.

        Raises:
            DeviceFault: `error:N` (with GRBL's meaning); DeviceAlarm on `ALARM:N`.
            DeviceTimeout: no reply (the reply is then owed and drained before the next use).
            TransportError: the link dropped.
        """
        self.transport.write(line.encode("ascii") + b"\n")
        deadline = time.monotonic() + (timeout_s or self.reply_timeout_s)
        while True:
            try:
                reply = self.next_reply(deadline, line)
            except DeviceTimeout:
                self.owed_replies += 1
                raise
            if isinstance(reply, Ok):
                return
            if isinstance(reply, ErrorReply):
                raise DeviceFault(
                    f"{self.name}: {line!r} rejected with error:{reply.code} ({reply.meaning})",
                    code=reply.code,
                )
            if collect is not None and not isinstance(reply, Status):
                collect.append(reply)

    def query(self, line: str) -> list[Reply]:
        """Send a read-only line answered by several lines (`$$`, `$#`) and return them all.

        Idempotent, so a timeout is retried (after re-synchronising).

        Raises:
            DeviceFault: `error:N`; DeviceAlarm on `ALARM:N`.
            DeviceTimeout: no `ok` after every attempt.
            TransportError: the link dropped.
        """

        def attempt() -> list[Reply]:
            self.prepare()
            replies: list[Reply] = []
            self.command(line, collect=replies)
            return replies

        return with_retries(attempt, attempts=self.retries + 1, retry_on=(DeviceTimeout,))

    def await_ok(
        self,
        line: str,
        *,
        deadline: float,
        poll_s: float,
        watch: Callable[[Status | None], bool],
    ) -> None:
        """Send a line whose `ok` comes only once the controller is done (a `G4` dwell).

        Meanwhile `?` goes out every poll_s and `watch` sees each report (and None at each poll,
        so it can give up even when reports are lost). When `watch` says a report alone shows the
        work done, the `ok` gets one reply timeout more; if it is lost it is left owed and the
        next operation re-synchronises. A lost report thus costs one poll, not the deadline.

        Raises:
            DeviceTimeout: no `ok` by the deadline (it is then owed).
            DeviceFault: `error:N`; DeviceAlarm on `ALARM:N`.
            TransportError: the link dropped.
            Exception: whatever `watch` raises (the `ok` is then owed).
        """
        self.transport.write(line.encode("ascii") + b"\n")
        next_poll = time.monotonic() + poll_s
        settled_by: float | None = None
        try:
            while True:
                now = time.monotonic()
                if settled_by is not None and now >= settled_by:
                    log.warning("%s: no `ok` for %r, but the controller is done", self.name, line)
                    self.owed_replies += 1
                    return
                if now >= next_poll:
                    self.transport.write(STATUS_QUERY)
                    next_poll = now + poll_s
                    watch(None)
                until = min(deadline, next_poll, settled_by or deadline)
                if now >= deadline:
                    raise DeviceTimeout(f"{self.name}: {line!r} not done by its deadline")
                try:
                    reply = self.next_reply(until, line)
                except DeviceTimeout:
                    continue
                if isinstance(reply, Ok):
                    return
                if isinstance(reply, ErrorReply):
                    raise DeviceFault(
                        f"{self.name}: {line!r} rejected with error:{reply.code} ({reply.meaning})",
                        code=reply.code,
                    )
                if isinstance(reply, Status) and watch(reply) and settled_by is None:
                    settled_by = time.monotonic() + self.reply_timeout_s
        except DeviceFault:
            raise  # an error:N answered the line: nothing is owed (an ALARM leaves it to a reset)
        except BaseException:
            self.owed_replies += 1
            raise

    def query_status(self) -> Status:
        """Ask `?` (always safe to repeat, so retried) and return the report.

        Raises:
            DeviceTimeout: no report after every attempt.
            DeviceAlarm: an `ALARM:N` line arrived.
            TransportError: the link dropped.
        """
        status = with_retries(
            self._status_once, attempts=self.retries + 1, retry_on=(DeviceTimeout,)
        )
        if status.state == "Alarm":
            self.in_alarm = True
        return status

    def _status_once(self) -> Status:
        self.transport.write(STATUS_QUERY)
        deadline = time.monotonic() + self.reply_timeout_s
        while True:
            reply = self.next_reply(deadline, "status query '?'")
            if isinstance(reply, Status):
                return reply
            if isinstance(reply, Ok | ErrorReply):
                self._settle_owed(reply)

    def listen(self, timeout_s: float) -> None:
        """Wait up to timeout_s for unsolicited lines, so an ALARM is raised the moment it comes.

        Raises:
            DeviceAlarm: an `ALARM:N` line arrived.
            TransportError: the link dropped.
        """
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            try:
                reply = self.next_reply(deadline, "unsolicited lines")
            except DeviceTimeout:
                return
            if isinstance(reply, Ok | ErrorReply):
                self._settle_owed(reply)

    def _settle_owed(self, reply: Ok | ErrorReply) -> None:
        if self.owed_replies > 0:
            self.owed_replies -= 1
            log.warning("%s: late reply %r to a timed-out command", self.name, reply)
        else:
            log.warning("%s: unexpected reply %r ignored", self.name, reply)

    def next_reply(self, deadline: float, waiting_for: str) -> Reply:
        """The next readable line before the deadline; line noise is logged and skipped.

        Raises:
            DeviceAlarm: an `ALARM:N` line arrived.
            DeviceTimeout: nothing readable before the deadline.
            TransportError: the link dropped.
        """
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeviceTimeout(
                    f"{self.name}: no reply to {waiting_for} within {self.reply_timeout_s:g} s"
                )
            try:
                raw = self.transport.read_line(remaining)
            except DeviceTimeout:
                continue  # re-check the deadline above, which builds the message
            reply = parse_line(raw)
            if isinstance(reply, ParseError):
                # garbage still counts against the deadline: the loop keeps the same one
                log.warning("%s: skipping unreadable line %r (%s)", self.name, raw, reply.reason)
                continue
            if isinstance(reply, Alarm):
                self.in_alarm = True
                self.last_alarm = reply.code
                raise DeviceAlarm(
                    f"{self.name}: ALARM:{reply.code} ({alarm_meaning(reply.code)}) while "
                    f"waiting for {waiting_for}; call recover()",
                    code=reply.code,
                )
            if isinstance(reply, Banner):
                log.warning("%s: controller restarted unexpectedly (%s)", self.name, reply.text)
                self.banner = reply
            return reply
