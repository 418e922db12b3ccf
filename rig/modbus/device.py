"""What every Modbus driver shares: endpoint choice, register link, connect and identity.

`ModbusDevice` resolves the endpoint (an explicit `link=` or the config's), builds the
`ModbusRegisterLink` with the config's unit, timeout and retries, opens it and reads the
optional device identification at connect, and reports that identification as a
`DeviceIdentity`. The drivers (`rig.turntable.modbus`, `rig.lightbox.modbus`) add the
device's own registers and behaviour.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar, Generic, Protocol, TypeVar

from rig.config import ModbusRtu, ModbusTcp
from rig.devices import DeviceIdentity
from rig.errors import ConfigError, DeviceFault, NotConnected
from rig.modbus.link import ModbusRegisterLink, describe_endpoint


class ModbusDeviceSettings(Protocol):
    """The link settings every Modbus device config carries."""

    @property
    def link(self) -> ModbusTcp | ModbusRtu | None:
        """The configured endpoint, if any."""
        ...

    @property
    def unit_id(self) -> int:
        """The Modbus unit (slave) id."""
        ...

    @property
    def timeout_s(self) -> float:
        """How long to wait for a reply."""
        ...

    @property
    def retries(self) -> int:
        """How many times to retry a request that got no (valid) reply."""
        ...


SettingsT = TypeVar("SettingsT", bound=ModbusDeviceSettings)


class ModbusDevice(Generic[SettingsT]):
    """Base of the Modbus drivers: owns the config, the register link and the identification."""

    #: the device kind, as in `DeviceIdentity.kind` and in error messages
    kind: ClassVar[str]
    #: the model reported when the device has no identification
    default_model: ClassVar[str]

    def __init__(
        self,
        config: SettingsT,
        *,
        link: ModbusTcp | ModbusRtu | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Create the driver; `link` overrides config.link, `sleep` waits (between polls, LEDs).

        Raises:
            ConfigError: neither `link` nor config.link names an endpoint.
        """
        endpoint = link or config.link
        if endpoint is None:
            raise ConfigError(f"modbus {self.kind}: no link given (config.link or link=)")
        self.config = config
        self.endpoint = endpoint
        self._sleep = sleep
        self._link = ModbusRegisterLink(
            endpoint,
            unit_id=config.unit_id,
            timeout_s=config.timeout_s,
            retries=config.retries,
            name=self.kind,
        )
        self._identification: dict[str, str] = {}

    def close(self) -> None:
        """Close the link (idempotent); the device keeps its state (lights, drive enable)."""
        self._link.close()

    def identity(self) -> DeviceIdentity:
        """Vendor/product/revision as the device reports them (read at connect)."""
        info = self._identification
        return DeviceIdentity(
            kind=self.kind,
            driver="modbus",
            model=" ".join(v for v in (info.get("vendor"), info.get("product_code")) if v)
            or self.default_model,
            firmware=info.get("revision", ""),
            endpoint=f"{describe_endpoint(self.endpoint)} unit {self.config.unit_id}",
        )

    def _open(self, setup: Callable[[], None]) -> None:
        """Open the link, read the identification, run `setup`; close again if any step fails."""
        self._link.open()
        try:
            self._identification = self._read_identification()
            setup()
        except BaseException:
            self._link.close()
            raise

    def _read_identification(self) -> dict[str, str]:
        # identification is optional in Modbus: a device without it answers "illegal function"
        try:
            return self._link.read_identification()
        except DeviceFault:
            return {}

    def _require_open(self) -> None:
        if not self._link.is_open:
            raise NotConnected(f"{self.kind}: not connected (call connect() first)")
