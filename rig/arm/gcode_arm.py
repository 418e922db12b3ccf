"""G-code arm driver with a suction cup: uFactory uArm Swift Pro and Rotrics DexArm dialects.

Three layers, as every driver here: `SerialLineTransport` moves lines, `rig.arm.codec` formats
and parses them for the configured dialect, and `GcodeArm` adds safety, timeouts, retries and
performs the pick-and-place sequences the capture layer asks for, step by step as
`rig.arm.choreography` defines them.

Safety: every pose of a sequence is checked against `config.workspace` before a byte of it is
written, and every sequence moves between points at clearance height above them. The workspace
is a box, hence convex, so a straight move between two checked poses never leaves it. (The
DexArm's G1 is straight; the uArm's G0 interpolates its joints, so its path bends between the
two poses: a known gap, listed in docs/fidelity-arm-modbus.md.)

When a move is over differs by firmware (docs/fidelity-arm-modbus.md): the uArm answers a move
only once the arm has stopped, the DexArm answers at once and `M400` waits for the stop. A
uArm dwell answers at once and holds the next command instead, so that command gets the dwell
added to its timeout. The DexArm refuses an unreachable move, or any move before it was homed,
with a line of text and still answers `ok`: that text is turned into a `DeviceFault`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from itertools import count

from rig.arm import choreography, codec
from rig.arm.choreography import MoveTo, Rise, Step, Suction
from rig.arm.codec import Data, ErrorReply, Event, Garbage, Ok
from rig.config import GcodeArmConfig, Pose, TrayConfig
from rig.devices import DeviceIdentity, DeviceStatus, Spot
from rig.errors import (
    ConfigError,
    DeviceFault,
    DeviceTimeout,
    NotConnected,
    TransportError,
)
from rig.motion import motion_timeout_s
from rig.retry import with_retries
from rig.transport import SerialLineTransport

log = logging.getLogger(__name__)

#: how far the reported pose may lie from the commanded one after a move (reports round to 0.01)
ARRIVAL_TOLERANCE_MM = 1.0


def _show(pose: Pose) -> str:
    return f"({pose.x_mm:.2f}, {pose.y_mm:.2f}, {pose.z_mm:.2f}) mm"


class _NotHomed(DeviceFault):
    """The DexArm refused a move because it has not been homed (M1112) since power-on."""


class GcodeArm:
    """A G-code pick-and-place arm with a suction cup (implements `rig.devices.Arm`)."""

    def __init__(
        self,
        config: GcodeArmConfig,
        *,
        tray: TrayConfig,
        port: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.tray = tray
        self.dialect = codec.dialect(config.dialect)
        self._url = port if port is not None else (config.link.port if config.link else None)
        self._baudrate = config.link.baudrate if config.link is not None else 115200
        self._sleep = sleep
        self._transport: SerialLineTransport | None = None
        self._seq = count(1)
        self._firmware = ""
        self._pose: Pose | None = None
        self._suction = False
        self._owed = False  # a command timed out: its reply may still be on its way
        # monotonic time until which the firmware holds the next command (a uArm dwell)
        self._held_until = 0.0

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """Open the port, read the firmware version, set the work mode, read the pose.

        Raises:
            ConfigError: no port configured (neither `link` nor a `port` override).
            TransportError: the port cannot be opened or the arm answers with garbage.
            DeviceTimeout: the arm does not answer.
            DeviceFault: the arm refuses a setup command.
        """
        if self._url is None:
            raise ConfigError("arm: no serial port (give `link` in the config or a port)")
        self.close()  # reconnecting: never leave a second reader on the same port
        transport = SerialLineTransport(self._url, baudrate=self._baudrate, name="arm")
        transport.open()
        self._transport = transport
        try:
            # a freshly opened Arduino-based arm resets and boots first: allow the banner time
            texts = self._request(self.dialect.info_query, timeout_s=self.config.banner_timeout_s)
            self._firmware = codec.parse_firmware(self.dialect, texts) or ""
            for command in self.dialect.setup:
                self._request(command)
            self._pose = self.position()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the port (idempotent); the suction state is left as it is, not to drop a coin."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._pose = None

    def __enter__(self) -> GcodeArm:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def identity(self) -> DeviceIdentity:
        """Model, firmware version and port."""
        return DeviceIdentity(
            kind="arm",
            driver="gcode-arm",
            model=self.dialect.model,
            firmware=self._firmware,
            endpoint=self._url or "",
        )

    def status(self) -> DeviceStatus:
        """Current pose and suction state, read from the arm.

        Raises:
            TransportError: the link failed.
            DeviceTimeout: the arm does not answer.
        """
        if self._transport is None:
            return DeviceStatus(state="closed", details={"dialect": self.dialect.name})
        pose = self.position()
        return DeviceStatus(
            state="ready",
            details={
                "dialect": self.dialect.name,
                "pose_mm": (pose.x_mm, pose.y_mm, pose.z_mm),
                "suction": self._suction,
                "firmware": self._firmware,
            },
        )

    # ------------------------------------------------------------------ wire exchange
    def _link(self) -> SerialLineTransport:
        if self._transport is None:
            raise NotConnected("arm: not connected (call connect() first)")
        return self._transport

    def _exchange(self, command: str, timeout_s: float) -> list[str]:
        """Send one command, return its data lines; stale and unsolicited lines are skipped."""
        link = self._link()
        seq = next(self._seq) if self.dialect.numbered else None
        if not self.dialect.numbered:
            # without sequence numbers a late reply to an earlier command is indistinguishable
            # from this one's: drop whatever is already queued before asking, and after a
            # timeout first give the overdue reply a reply timeout's time to arrive (as the
            # GRBL link does), so its `ok` is not taken for this command's
            quiet_s = self.config.reply_timeout_s if self._owed else 0.0
            for stale in link.drain(quiet_s):
                log.debug("arm: dropped stale line %r", stale)
        self._owed = False
        # a running uArm dwell holds this command: its reply comes that much later
        timeout_s += max(0.0, self._held_until - time.monotonic())
        link.write(codec.encode_command(self.dialect, command, seq))
        deadline = time.monotonic() + timeout_s
        data: list[str] = []
        error: ErrorReply | None = None
        while True:
            try:
                raw = link.read_line(deadline - time.monotonic())
            except DeviceTimeout as exc:
                self._owed = True
                if error is not None:  # Marlin's closing `ok` got lost; the error stands
                    raise self._fault(command, error) from exc
                raise DeviceTimeout(
                    f"arm: no reply to {command!r} within {timeout_s:.2f} s on {self._url}"
                ) from exc
            reply = codec.parse_line(self.dialect, raw)
            if isinstance(reply, Garbage):
                raise TransportError(f"arm: unreadable reply {reply.raw!r} to {command!r}")
            if isinstance(reply, Event):
                log.debug("arm event: %s", reply.text)
                continue
            if isinstance(reply, Data):
                data.append(reply.text)
                continue
            if seq is not None and reply.seq != seq:
                log.debug("arm: skipped reply %r (waiting for $%d)", reply, seq)
                continue
            if isinstance(reply, ErrorReply):
                if not self.dialect.error_then_ok:
                    raise self._fault(command, reply)
                error = reply
                continue
            assert isinstance(reply, Ok)
            if error is not None:
                raise self._fault(command, error)
            self._check_refusal(command, data)
            return [*data, reply.data] if reply.data else data

    def _check_refusal(self, command: str, data: list[str]) -> None:
        """Raise if the firmware said in text that it refused a command it still acknowledged."""
        refused = codec.refusal(self.dialect, data)
        if refused is None:
            return
        if re.search(self.dialect.not_homed_re, refused):
            raise _NotHomed(
                f"arm ({self.dialect.model}) is not homed, refused {command!r}: {refused}"
            )
        raise DeviceFault(f"arm ({self.dialect.model}) refused {command!r}: {refused}")

    def _fault(self, command: str, reply: ErrorReply) -> DeviceFault:
        code = f" E{reply.code}" if reply.code is not None else ""
        return DeviceFault(
            f"arm ({self.dialect.model}) refused {command!r}:{code} {reply.message}".rstrip(),
            code=reply.code,
        )

    def _request(self, command: str, *, timeout_s: float | None = None) -> list[str]:
        """Exchange a command, retrying lost or garbled replies (never a device error).

        Only idempotent commands go through here: queries, and absolute set-points (a move to
        an absolute pose, pump on/off, a mode), which land in the same state if sent twice.
        """
        timeout = self.config.reply_timeout_s if timeout_s is None else timeout_s
        return with_retries(
            lambda: self._exchange(command, timeout),
            attempts=self.config.retries + 1,
            sleep=self._sleep,
        )

    # ------------------------------------------------------------------ primitives
    def position(self) -> Pose:
        """The tool pose the arm reports.

        Raises:
            NotConnected: connect() was not called.
            TransportError: no position in the reply, or the link failed.
            DeviceTimeout: the arm does not answer.
        """

        def ask() -> Pose:
            texts = self._exchange(self.dialect.position_query, self.config.reply_timeout_s)
            pose = codec.parse_position(self.dialect, texts)
            if pose is None:
                raise TransportError(f"arm: no position in the reply to a query: {texts!r}")
            return pose

        pose = with_retries(ask, attempts=self.config.retries + 1, sleep=self._sleep)
        self._pose = pose
        return pose

    def move_to(self, pose: Pose) -> None:
        """Move the tool to a pose and wait until the arm reports it there.

        Raises:
            SafetyError: the pose lies outside the workspace (nothing was sent).
            NotConnected: connect() was not called.
            DeviceFault: the arm refused the pose (unreachable) or stopped short of it.
            DeviceTimeout: the arm did not answer or finish in time.
            TransportError: the link failed.
        """
        codec.check_pose(self.config.workspace, pose)
        self._link()
        start = self._pose if self._pose is not None else self.position()
        feed = self.config.speed_mm_per_s * 60.0
        timeout = self._motion_timeout_s(choreography.distance_mm(start, pose))
        self._pose = None  # unknown until the arm confirms where it stopped
        move = codec.format_move(self.dialect, pose, feed)
        # a uArm answers a move once the arm has stopped: its reply waits the motion out
        self._request(move, timeout_s=timeout if self.dialect.ack_on_completion else None)
        self._wait_until_still(pose, timeout)

    def _motion_timeout_s(self, distance_mm: float) -> float:
        return motion_timeout_s(
            distance_mm, self.config.speed_mm_per_s, self.config.accel_mm_per_s2
        )

    def _wait_until_still(self, target: Pose, timeout_s: float) -> None:
        """Wait for the motion to end (if the move's reply did not mark it), then verify the pose."""
        if not self.dialect.ack_on_completion and self.dialect.wait_command is not None:
            self._request(self.dialect.wait_command, timeout_s=timeout_s)
        reached = self.position()
        off = choreography.distance_mm(reached, target)
        if off > ARRIVAL_TOLERANCE_MM:
            raise DeviceFault(
                f"arm stopped at {_show(reached)}, {off:.1f} mm from the commanded {_show(target)}"
            )

    def suction(self, on: bool) -> None:
        """Switch the suction cup and let the firmware dwell while vacuum builds or vents.

        Raises:
            NotConnected: connect() was not called.
            DeviceFault: the arm refused the command.
            DeviceTimeout: the arm did not answer.
            TransportError: the link failed.
        """
        self._switch_suction(Suction(on))

    def _switch_suction(self, step: Suction) -> None:
        self._request(self.dialect.suction_on if step.on else self.dialect.suction_off)
        self._suction = step.on
        # the firmware waits, not the host: no guessing on the host side
        dwell = codec.format_dwell(self.dialect, step.settle_ms)
        if self.dialect.dwell_holds_next:
            # uArm G2004: `ok` at once; the firmware holds the next command for the dwell
            self._request(dwell)
            self._held_until = time.monotonic() + step.settle_ms / 1000
        else:
            # Marlin G4: `ok` once the dwell is over
            self._request(dwell, timeout_s=self.config.reply_timeout_s + step.settle_ms / 1000)

    # ------------------------------------------------------------------ sequences
    def _lift_to(self, z_mm: float) -> None:
        """Rise (or stay) straight up to at least z_mm before travelling sideways."""
        # the last confirmed pose, or ask: an interrupted move leaves the pose unknown
        here = self._pose if self._pose is not None else self.position()
        target = choreography.rise_target(here, z_mm)
        if target is not None:
            self.move_to(target)

    def _perform(self, steps: tuple[Step, ...]) -> None:
        """Check every pose of a choreography against the workspace, then perform its steps."""
        # all up front: a sequence refused halfway could leave a coin hanging on the cup
        for pose in choreography.moves(steps):
            codec.check_pose(self.config.workspace, pose)
        for step in steps:
            if isinstance(step, Rise):
                self._lift_to(step.z_mm)
            elif isinstance(step, MoveTo):
                self.move_to(step.pose)
            else:
                self._switch_suction(step)

    def pick_from_slot(self, slot: int) -> None:
        """Approach the slot from above, descend, switch suction on, lift.

        Raises:
            ConfigError: the tray has no such slot (nothing was sent).
            SafetyError: the slot or its clearance lies outside the workspace (nothing was sent).
            DeviceFault, DeviceTimeout, TransportError: as `move_to` and `suction`.
        """
        self._perform(choreography.pick_from_slot(self.config, self.tray.slot_pose(slot)))

    def place_on_turntable(self) -> None:
        """Put the held coin on the turntable: approach, descend, release, lift.

        Raises:
            DeviceFault, DeviceTimeout, TransportError: as `move_to` and `suction`.
        """
        self._perform(choreography.place_on_turntable(self.config))

    def flip_on_turntable(self) -> None:
        """Turn the coin on the turntable over through the flip station's chute.

        Picks it from the turntable, drops it into the chute (which turns it over), picks it at
        the chute's exit and puts it back on the turntable.

        Raises:
            DeviceFault, DeviceTimeout, TransportError: as `move_to` and `suction`.
        """
        self._perform(choreography.flip_on_turntable(self.config))

    def return_to_slot(self, slot: int) -> None:
        """Pick the coin from the turntable and put it back in its tray slot.

        Raises:
            ConfigError: the tray has no such slot (checked before anything moves).
            SafetyError: the slot or its clearance lies outside the workspace (nothing was sent).
            DeviceFault, DeviceTimeout, TransportError: as `move_to` and `suction`.
        """
        self._perform(choreography.return_to_slot(self.config, self.tray.slot_pose(slot)))

    # staging pads beside the turntable (rig.devices.StagingArm; issue 16)
    def pick(self, spot: Spot) -> None:
        """Take the coin at a spot: a tray slot, the turntable or a staging pad.

        Raises:
            ConfigError: no such slot, or no staging pads configured (nothing was sent).
            SafetyError: the spot or its clearance lies outside the workspace (nothing was sent).
            DeviceFault, DeviceTimeout, TransportError: as `move_to` and `suction`.
        """
        self._perform(choreography.pick_at(self.config, self._spot(spot)))

    def place(self, spot: Spot) -> None:
        """Put the held coin down at a spot (raises as `pick`)."""
        self._perform(choreography.place_at(self.config, self._spot(spot)))

    def wait_clear(self) -> None:
        """Go to the waiting pose above the incoming pad, clear of the camera (raises as `pick`)."""
        self._perform(choreography.wait_clear(self.config))

    def _spot(self, spot: Spot) -> Pose:
        return choreography.spot_pose(self.config, self.tray, spot)

    def park(self) -> None:
        """Rise straight up, then go to the safe pose; suction is left as it is.

        Raises:
            DeviceFault, DeviceTimeout, TransportError: as `move_to`.
        """
        self._perform(choreography.park(self.config))

    def home(self) -> None:
        """Home the arm with the firmware's homing command (if it has one), then park.

        Raises:
            SafetyError: the firmware's home pose lies outside the workspace (nothing was sent).
            DeviceFault, DeviceTimeout, TransportError: as `move_to`.
        """
        d = self.dialect
        if d.home is not None and d.home_pose_mm is not None:
            x, y, z = d.home_pose_mm
            home_pose = Pose(x_mm=x, y_mm=y, z_mm=z)
            # the firmware drives there on its own: check it like any commanded pose
            codec.check_pose(self.config.workspace, home_pose, device="arm home pose")
            try:
                self._lift_to(self.config.safe_pose.z_mm)
            except _NotHomed:
                # a DexArm moves only once homed: M1112 itself is the first motion it takes
                log.warning("arm: not homed since power-on, homing without lifting first")
            start = self._pose if self._pose is not None else self.position()
            timeout = self._motion_timeout_s(choreography.distance_mm(start, home_pose))
            self._request(d.home, timeout_s=timeout)
            self._wait_until_still(home_pose, timeout)
        self.park()
