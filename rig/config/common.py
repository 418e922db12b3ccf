"""Shared pieces of the rig configuration: the strict base model, fault rules, transports."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors, instances are immutable.

    NaN and infinities are refused in every float field, bounded or not: unbounded ones (the
    arm's workspace box, a tray origin, a reference tilt) took them, and a box from -inf to
    inf contains every pose.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# ---------------------------------------------------------------- fault injection (emulators)

FaultKind = Literal[
    "lost_reply", "late_reply", "garbage", "error", "alarm", "modbus_exception", "disconnect"
]


#: the faults a serial G-code emulator (GRBL, arms) can inject; `alarm` is GRBL's ALARM:N (an
#: arm answers it as a refused command)
SERIAL_FAULTS: tuple[FaultKind, ...] = (
    "lost_reply",
    "late_reply",
    "garbage",
    "error",
    "alarm",
    "disconnect",
)
#: the faults a Modbus emulator can inject (a drive adds `alarm`: it latches its fault bit)
MODBUS_FAULTS: tuple[FaultKind, ...] = (
    "lost_reply",
    "late_reply",
    "garbage",
    "modbus_exception",
    "disconnect",
)


class FaultRule(StrictModel):
    """One injected fault: what, how often, and (for codes) which code."""

    kind: FaultKind
    probability: float = Field(0.0, ge=0.0, le=1.0, description="chance per command")
    after_commands: int | None = Field(
        None, ge=0, description="fire once, deterministically, at this command count"
    )
    code: int | None = Field(None, ge=0, le=255, description="error:N / ALARM:N / Modbus code")


class EmulatorConfig(StrictModel):
    """Start an emulator for this device in-process and connect the real driver to it."""

    faults: tuple[FaultRule, ...] = ()
    seed: int = 0


class ModbusEmulatorConfig(EmulatorConfig):
    """An emulated Modbus device: its faults, and which framing its emulator speaks."""

    framing: Literal["tcp", "rtu"] = Field(
        "tcp",
        description="tcp: a Modbus TCP server on 127.0.0.1; rtu: Modbus RTU on a pseudo-terminal "
        "(emulated RTU devices of one rig share one serial line when their unit ids differ)",
    )


# ---------------------------------------------------------------- transports


class SerialPort(StrictModel):
    """A serial line: a device path, a pty, or any pyserial URL (socket://, loop://)."""

    kind: Literal["serial"] = "serial"
    port: str = Field(min_length=1)
    baudrate: int = Field(115200, ge=300, le=4_000_000)


class ModbusTcp(StrictModel):
    """Modbus TCP endpoint."""

    kind: Literal["tcp"] = "tcp"
    host: str = Field(min_length=1)
    port: int = Field(502, ge=1, le=65535)


class ModbusRtu(StrictModel):
    """Modbus RTU over a serial line."""

    kind: Literal["rtu"] = "rtu"
    port: str = Field(min_length=1)
    baudrate: int = Field(19200, ge=300, le=4_000_000)
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1


ModbusLink = Annotated[ModbusTcp | ModbusRtu, Field(discriminator="kind")]

RegisterAddress = Annotated[int, Field(ge=0, le=65535)]


def check_fault_kinds(
    emulate: EmulatorConfig | None, allowed: tuple[FaultKind, ...], device: str
) -> None:
    """Check that every configured fault is one this device's emulator can inject.

    Raises:
        ValueError: a rule names another wire's fault (pydantic reports it as a validation error).
    """
    if emulate is None:
        return
    for rule in emulate.faults:
        if rule.kind not in allowed:
            raise ValueError(
                f"emulate.faults: {rule.kind!r} does not apply to {device}; "
                f"choose from {list(allowed)}"
            )


def require_one_endpoint(link: object, emulate: object) -> None:
    """Check that a device names exactly one of a real link and an emulator.

    Raises:
        ValueError: both or neither are given (pydantic reports it as a validation error).
    """
    if (link is None) == (emulate is None):
        raise ValueError("give exactly one of `link` (real hardware) or `emulate` (simulation)")
