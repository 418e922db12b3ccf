"""Connecting a rig's devices as fault-tolerantly as a session shoots: retries, backoff, a verdict.

`rig.assembly.open_rig` connects each device through `connect_with_retries`. A connect that
fails with a transient error (a lost or garbled reply, a broken link, a device that says it is
busy or failed internally) is closed and tried again after an exponential backoff; once the
attempts run out the device is `DeviceUnreachable` (the commands exit 3: rerun). An error that
says the request itself is wrong (a register the device does not have, a command its firmware
does not know) fails at once: retrying cannot change the answer.

Every connect step of every driver is idempotent (a reset, queries, absolute set-points;
nothing moves), which is what makes the whole connect safe to repeat.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from rig.config import (
    GcodeArmConfig,
    ModbusLightboxConfig,
    ModbusTurntableConfig,
    RigConfig,
)
from rig.devices import Device
from rig.errors import DeviceAlarm, DeviceFault, DeviceUnreachable, TransportError

log = logging.getLogger(__name__)

# Modbus Application Protocol Specification V1.1b3, section 7 (MODBUS Exception Responses):
# 04 server device failure, 05 acknowledge (still processing), 06 server device busy ("the
# client should retransmit the message later") and 0B gateway target device failed to respond
# are states of the device or the line; 01-03 (illegal function, data address, data value) say
# the request does not fit the device (a wrong register map): the same answer every time.
MODBUS_TRANSIENT_CODES = frozenset({4, 5, 6, 11})

# uArm Swift Pro Developer Guide v1.0.6, "Error codes": E20 command not exist, E21 parameter
# error, E22 address out of range describe the command; E23 buffer full, E24 power
# disconnected, E25 operation failure describe the arm's state and can clear.
UARM_PERMANENT_CODES = frozenset({20, 21, 22})


@dataclass(frozen=True)
class ConnectPolicy:
    """How often a device's connect is tried, and how long to wait between tries (doubling)."""

    attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 4.0

    def wait_s(self, attempt: int) -> float:
        """The pause after failed attempt `attempt` (1-based)."""
        return float(min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))


#: the policy open_rig uses unless given one (on hardware: 0.5 + 1 + 2 + 4 s of backoff)
DEFAULT_POLICY = ConnectPolicy()


def transient(config: RigConfig, device: str, exc: BaseException) -> bool:
    """Whether a connect error of `device` may clear on its own, so a new connect may work."""
    settings = getattr(config, device, None)
    if isinstance(exc, TransportError):  # lost, late, garbled replies; a dropped link
        # but a device path that does not exist names no device (a typo, an unplugged
        # adapter): no retry within seconds mends it, and it is the config's to fix
        return not (_no_such_device(exc) or _port_missing(settings))
    if not isinstance(exc, DeviceFault):
        return False  # ConfigError, SafetyError, a bug: never worth a retry
    if isinstance(exc, DeviceAlarm):
        # gnea/grbl doc/markdown/commands.md (`$X` - Kill alarm lock, `$H`): an alarm locks
        # GRBL until it is unlocked or homed; the driver's connect soft-resets, then does one.
        return True
    if isinstance(settings, ModbusTurntableConfig | ModbusLightboxConfig):
        return exc.code in MODBUS_TRANSIENT_CODES
    if isinstance(settings, GcodeArmConfig):
        # Marlin (DexArm) errors carry no code; most say the line was garbled (checksum, line
        # number) or the firmware halted, which a reconnect (an Arduino reset) clears.
        return exc.code is None or exc.code not in UARM_PERMANENT_CODES
    return False  # a GRBL `error:N` at connect: the controller refuses its setup (wrong settings)


def _no_such_device(exc: BaseException) -> bool:
    """Whether an error was caused by opening a path that does not exist (ENOENT)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno == errno.ENOENT:
            return True
        cause = cause.__cause__
    return False


def _port_missing(settings: object) -> bool:
    """Whether a device's configured serial port is a path that does not exist.

    pymodbus' serial client logs the ENOENT and only answers "not connected", so the error
    itself cannot tell; pyserial URLs (socket://, rfc2217://) are not paths and never missing.
    """
    port = getattr(getattr(settings, "link", None), "port", None)
    return isinstance(port, str) and port.startswith("/") and not os.path.exists(port)


def connect_with_retries(
    device: Device,
    name: str,
    *,
    is_transient: Callable[[BaseException], bool],
    policy: ConnectPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Connect `device`, retrying transient failures with backoff.

    Raises:
        DeviceUnreachable: every attempt failed with a transient error (the last is the cause).
        RigError: a failure retrying cannot change, raised as the driver raised it.
    """
    policy = policy or DEFAULT_POLICY
    for attempt in range(1, policy.attempts + 1):
        try:
            device.connect()
            return
        except Exception as exc:
            device.close()  # a half-open link must not hold the port for the next try
            if not is_transient(exc):
                raise
            if attempt == policy.attempts:
                raise DeviceUnreachable(
                    f"{name} unreachable after {attempt} connect attempts: {exc}",
                    device=name,
                    attempts=attempt,
                ) from exc
            wait = policy.wait_s(attempt)
            log.warning(
                "%s: connect attempt %d/%d failed: %s; retrying in %.2f s",
                name,
                attempt,
                policy.attempts,
                exc,
                wait,
            )
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
