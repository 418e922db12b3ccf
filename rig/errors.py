"""One error tree for the whole rig: every driver raises these, never a library's own exception.

RigError
├── ConfigError          bad or inconsistent configuration, caught before any device is touched
├── NotConnected         a method was called on a device that is not open
├── SafetyError          a move or setting outside the configured limits; nothing was sent
├── TransportError       what the host detected: a bad frame, a broken link
│   └── DeviceTimeout    no (complete) reply within the timeout
├── DeviceFault          what the device said: GRBL error:N / ALARM:N, a Modbus exception code
└── DeviceUnreachable    a device could not be connected after every retry (a rerun may work)
"""

from __future__ import annotations


class RigError(Exception):
    """Base of every error coinrig raises about devices, configuration or safety."""


class ConfigError(RigError):
    """The configuration is invalid or inconsistent."""


class NotConnected(RigError):
    """A device method was called before connect() or after close()."""


class SafetyError(RigError):
    """A requested pose, angle or setting is outside the configured limits; nothing was sent."""


LimitError = SafetyError


class TransportError(RigError):
    """The host detected a problem on the link: unparseable bytes, a closed port."""


class DeviceTimeout(TransportError):
    """The device did not answer (or finish a motion) within the allowed time."""


class DeviceFault(RigError):
    """The device reported an error: GRBL `error:N` or `ALARM:N`, a Modbus exception code.

    Attributes:
        code: the device's numeric error or alarm code, when it gave one.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


DeviceReportedError = DeviceFault


class DeviceAlarm(DeviceFault):
    """The device is in an alarm state (GRBL `ALARM:N`) and needs a reset/unlock to move again."""


class DeviceUnreachable(RigError):
    """A device kept failing to connect with transient errors until the retries ran out.

    Attributes:
        device: which device ("turntable", "lightbox", "camera", "arm").
        attempts: how many connects were tried; the last error is the `__cause__`.
    """

    def __init__(self, message: str, device: str, attempts: int) -> None:
        super().__init__(message)
        self.device = device
        self.attempts = attempts
