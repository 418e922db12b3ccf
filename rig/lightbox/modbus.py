"""Lightbox on a Modbus LED/PWM controller: one holding register (or coil) per channel.

A channel's level is `round(intensity * full_scale)` in its holding register, or on/off in its
coil. Light switching is the capture's inner loop, so channels whose registers are contiguous
are written (and read back) in one request per run; every change is read back and verified.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from rig.config import LightChannel, ModbusLightboxConfig, ModbusRtu, ModbusTcp
from rig.devices import DeviceStatus, LightGeometry
from rig.errors import ConfigError, DeviceFault, SafetyError
from rig.modbus.device import ModbusDevice
from rig.modbus.link import MAX_READ_REGISTERS, MAX_WRITE_REGISTERS


@dataclass(frozen=True)
class _Run:
    """Channels of one kind at consecutive addresses: one request reads or writes them all."""

    kind: str
    address: int
    channels: tuple[LightChannel, ...]


def contiguous_runs(channels: Iterable[LightChannel], *, longest: int) -> list[_Run]:
    """Group channels by kind into runs of consecutive addresses (at most `longest` each)."""
    runs: list[_Run] = []
    for kind in ("holding", "coil"):
        members = sorted((c for c in channels if c.kind == kind), key=lambda c: c.address)
        current: list[LightChannel] = []
        for channel in members:
            if current and (channel.address != current[-1].address + 1 or len(current) >= longest):
                runs.append(_Run(kind, current[0].address, tuple(current)))
                current = []
            current.append(channel)
        if current:
            runs.append(_Run(kind, current[0].address, tuple(current)))
    return runs


def intensity_to_raw(channel: LightChannel, intensity: float) -> int:
    """The register value (or 0/1 coil state) for an intensity 0..1."""
    if channel.kind == "coil":
        return int(intensity > 0.0)
    return round(intensity * channel.full_scale)


def raw_to_intensity(channel: LightChannel, raw: int) -> float:
    """The intensity a register value (or coil state) stands for."""
    if channel.kind == "coil":
        return 1.0 if raw else 0.0
    return raw / channel.full_scale


class ModbusLightbox(ModbusDevice[ModbusLightboxConfig]):
    """Named LED channels on a Modbus controller; implements `rig.devices.Lightbox`."""

    kind = "lightbox"
    default_model = "Modbus LED controller"

    def __init__(
        self,
        config: ModbusLightboxConfig,
        *,
        link: ModbusTcp | ModbusRtu | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Create the driver; `link` overrides config.link, `sleep` waits out LED settling.

        Raises:
            ConfigError: neither `link` nor config.link names an endpoint.
        """
        super().__init__(config, link=link, sleep=sleep)
        self._runs = contiguous_runs(
            config.channels, longest=min(MAX_READ_REGISTERS, MAX_WRITE_REGISTERS)
        )
        self._last_raw: dict[str, int] | None = None

    # ------------------------------------------------------------------ Device
    def connect(self) -> None:
        """Open the link, read the controller's identity and switch every channel off.

        Raises:
            TransportError: the controller cannot be reached.
            DeviceTimeout: the controller does not answer.
            DeviceFault: the controller refuses a channel's register (wrong map?).
        """
        self._open(self.all_off)

    def close(self) -> None:
        """Close the link (idempotent); lights stay as they are."""
        super().close()
        self._last_raw = None

    def status(self) -> DeviceStatus:
        """`lit` or `dark`, with every channel's level.

        Raises:
            NotConnected: connect() has not been called.
            DeviceFault: the controller answered with a Modbus exception.
            DeviceTimeout: the controller does not answer.
            TransportError: the link broke.
        """
        levels = self.levels()
        return DeviceStatus(
            state="lit" if any(v > 0 for v in levels.values()) else "dark",
            details={"levels": levels},
        )

    # ------------------------------------------------------------------ Lightbox
    def channels(self) -> list[LightGeometry]:
        """Every channel with its direction (or diffuse)."""
        return [
            LightGeometry(c.name, c.azimuth_deg, c.elevation_deg, c.diffuse)
            for c in self.config.channels
        ]

    def patterns(self) -> dict[str, dict[str, float]]:
        """The configured patterns: name → channel → intensity (a copy)."""
        return {name: dict(levels) for name, levels in self.config.patterns.items()}

    def set_levels(self, levels: Mapping[str, float]) -> dict[str, float]:
        """Set the named channels, switch the others off, read back, verify, return the levels.

        Raises:
            ConfigError: a channel name is unknown (the valid ones are listed).
            SafetyError: an intensity is outside 0..1 or not a number (nothing is sent).
            NotConnected: connect() has not been called.
            DeviceFault: the controller refused a write, or reads back other levels.
            DeviceTimeout: the controller does not answer.
            TransportError: the link broke.
        """
        names = [c.name for c in self.config.channels]
        unknown = sorted(set(levels) - set(names))
        if unknown:
            raise ConfigError(f"lightbox: unknown channel(s) {unknown}; channels are {names}")
        checked: dict[str, float] = {}
        for name, value in levels.items():
            try:
                intensity = float(value)
            except (TypeError, ValueError):
                intensity = math.nan
            if not (math.isfinite(intensity) and 0.0 <= intensity <= 1.0):
                raise SafetyError(
                    f"lightbox: intensity {value!r} for channel {name!r} is outside [0, 1]"
                )
            checked[name] = intensity
        wanted = {
            c.name: intensity_to_raw(c, checked.get(c.name, 0.0)) for c in self.config.channels
        }
        for run in self._runs:
            values = [wanted[c.name] for c in run.channels]
            if run.kind == "holding":
                self._link.write_registers(run.address, values)
            else:
                self._link.write_coils(run.address, [bool(v) for v in values])
        reported = self._read_raw()
        wrong = {n: (wanted[n], reported[n]) for n in names if wanted[n] != reported[n]}
        if wrong:
            detail = ", ".join(f"{n}: wrote {w}, reads {r}" for n, (w, r) in wrong.items())
            raise DeviceFault(f"lightbox: read-back differs from what was written ({detail})")
        if reported != self._last_raw and self.config.settle_ms > 0:
            # LEDs and their drivers need a moment to reach the new level; there is no
            # status to poll for it, so this is the one place the driver waits a fixed time.
            self._sleep(self.config.settle_ms / 1000.0)
        self._last_raw = reported
        return self._to_levels(reported)

    def set_pattern(self, name: str) -> dict[str, float]:
        """Set a configured pattern (every other channel off) and return the verified levels.

        Raises:
            ConfigError: no pattern of that name (the valid ones are listed).
            NotConnected: connect() has not been called.
            DeviceFault: the controller refused a write, or reads back other levels.
            DeviceTimeout: the controller does not answer.
            TransportError: the link broke.
        """
        pattern = self.config.patterns.get(name)
        if pattern is None:
            raise ConfigError(
                f"lightbox: no light pattern {name!r}; patterns are {sorted(self.config.patterns)}"
            )
        return self.set_levels(pattern)

    def levels(self) -> dict[str, float]:
        """Every channel's intensity as the controller reports it.

        Raises:
            NotConnected: connect() has not been called.
            DeviceFault: the controller answered with a Modbus exception.
            DeviceTimeout: the controller does not answer.
            TransportError: the link broke.
        """
        return self._to_levels(self._read_raw())

    def all_off(self) -> None:
        """Switch every channel off (and verify).

        Raises:
            NotConnected: connect() has not been called.
            DeviceFault: the controller refused a write, or reads back other levels.
            DeviceTimeout: the controller does not answer.
            TransportError: the link broke.
        """
        self.set_levels({})

    # ------------------------------------------------------------------ internals
    def _read_raw(self) -> dict[str, int]:
        raw: dict[str, int] = {}
        for run in self._runs:
            count = len(run.channels)
            if run.kind == "holding":
                values = self._link.read_holding(run.address, count)
            else:
                values = [int(b) for b in self._link.read_coils(run.address, count)]
            for channel, value in zip(run.channels, values, strict=True):
                raw[channel.name] = value
        return raw

    def _to_levels(self, raw: Mapping[str, int]) -> dict[str, float]:
        return {c.name: raw_to_intensity(c, raw[c.name]) for c in self.config.channels}
