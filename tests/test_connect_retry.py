"""Connecting a rig retries transient faults with backoff, and gives up with DeviceUnreachable.

The policy (rig.connect) is tested on fake devices; `open_rig` against the emulators over the
real wire (Modbus TCP on loopback, GRBL and the arm on ptys), with faults fired at connect.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
import serial
import yaml
from simulate_support import SIM
from typer.testing import CliRunner

from pipeline.rig_cli.app import app
from rig import connect
from rig.assembly import open_rig
from rig.config import parse_config
from rig.connect import ConnectPolicy, connect_with_retries, transient
from rig.errors import (
    ConfigError,
    DeviceAlarm,
    DeviceFault,
    DeviceTimeout,
    DeviceUnreachable,
    TransportError,
)

SIM_CONFIG = parse_config(yaml.safe_load(SIM.read_text()))


class FlakyDevice:
    """Fails connect() with the queued errors, then connects; counts closes."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.connects = self.closes = 0

    def connect(self) -> None:
        self.connects += 1
        if self.errors:
            raise self.errors.pop(0)

    def close(self) -> None:
        self.closes += 1

    def identity(self) -> Any:
        raise NotImplementedError

    def status(self) -> Any:
        raise NotImplementedError


def test_transient_errors_are_retried_with_doubling_backoff() -> None:
    device = FlakyDevice(DeviceTimeout("no reply"), TransportError("garbled"), DeviceTimeout("x"))
    waits: list[float] = []
    connect_with_retries(
        device,
        "lightbox",
        is_transient=lambda exc: True,
        policy=ConnectPolicy(attempts=5, backoff_s=0.5, max_backoff_s=1.5),
        sleep=waits.append,
    )
    assert device.connects == 4
    assert device.closes == 3  # every failed attempt released its link before the next
    assert waits == [0.5, 1.0, 1.5]  # doubling, capped


def test_giving_up_raises_device_unreachable_with_the_last_error() -> None:
    last = DeviceTimeout("lightbox: no reply within 1 s")
    device = FlakyDevice(*[DeviceTimeout("no reply")] * 4, last)
    with pytest.raises(DeviceUnreachable) as caught:
        connect_with_retries(
            device,
            "lightbox",
            is_transient=lambda exc: True,
            policy=ConnectPolicy(attempts=5),
            sleep=lambda s: None,
        )
    assert caught.value.device == "lightbox" and caught.value.attempts == 5
    assert caught.value.__cause__ is last
    assert "lightbox unreachable after 5 connect attempts" in str(caught.value)


def test_a_permanent_error_is_raised_at_once() -> None:
    refusal = DeviceFault("illegal data address", code=2)
    device = FlakyDevice(refusal)
    with pytest.raises(DeviceFault) as caught:
        connect_with_retries(device, "lightbox", is_transient=lambda exc: False, sleep=print)
    assert caught.value is refusal and device.connects == 1 and device.closes == 1


def test_default_policy_backs_off_half_a_second_doubling_to_four() -> None:
    policy = ConnectPolicy()
    assert [policy.wait_s(n) for n in range(1, policy.attempts)] == [0.5, 1.0, 2.0, 4.0]


def _missing_port_error() -> TransportError:
    try:
        serial.serial_for_url("/nonexistent/ttyUSB9")
    except serial.SerialException as exc:
        error = TransportError("cannot open serial port")
        error.__cause__ = exc
        return error
    raise AssertionError("the port exists")


@pytest.mark.parametrize(
    ("device", "error", "expected"),
    [
        ("lightbox", DeviceTimeout("no reply"), True),
        ("lightbox", TransportError("connection refused"), True),
        ("lightbox", DeviceFault("server device failure", code=4), True),
        ("lightbox", DeviceFault("acknowledge", code=5), True),
        ("lightbox", DeviceFault("server device busy", code=6), True),
        ("lightbox", DeviceFault("illegal function", code=1), False),
        ("lightbox", DeviceFault("illegal data address", code=2), False),
        ("lightbox", DeviceFault("illegal data value", code=3), False),
        ("turntable", DeviceAlarm("ALARM:1", code=1), True),
        ("turntable", DeviceFault("error:3", code=3), False),
        ("arm", DeviceFault("E25 operation failure", code=25), True),
        ("arm", DeviceFault("E23 buffer full", code=23), True),
        ("arm", DeviceFault("E20 command not exist", code=20), False),
        ("arm", DeviceFault("E21 parameter error", code=21), False),
        ("arm", DeviceFault("E22 address out of range", code=22), False),
        ("camera", ConfigError("bad pixel format"), False),
        ("turntable", _missing_port_error(), False),
    ],
)
def test_which_connect_errors_are_transient(
    device: str, error: BaseException, expected: bool
) -> None:
    assert transient(SIM_CONFIG, device, error) is expected


def test_missing_port_error_is_enoent() -> None:
    cause = _missing_port_error().__cause__
    assert isinstance(cause, OSError) and cause.errno == errno.ENOENT


def _config(**emulate: dict[str, Any]) -> Any:
    """The sim rig with fault rules on some emulators (device → emulate section)."""
    data = yaml.safe_load(SIM.read_text())
    for device, section in emulate.items():
        data[device]["emulate"] = section
    data["lightbox"]["timeout_s"] = 0.2
    return data


def test_open_rig_rides_out_faults_while_connecting() -> None:
    # Fired at the first commands each device gets: on the landed code any of these ended
    # the run before the first shot (a Modbus exception 4 at once, with exit 2).
    data = _config(
        # request 1 is the (optional) identification, request 2 the first write (lights off)
        lightbox={"faults": [{"kind": "modbus_exception", "code": 4, "after_commands": 2}]},
        turntable={"faults": [{"kind": "garbage", "after_commands": 1}]},
        arm={"faults": [{"kind": "alarm", "code": 25, "after_commands": 1}]},
    )
    with open_rig(parse_config(data)) as rig:
        assert rig.twin is not None
        emulators = rig.twin.emulators
        assert emulators["lightbox"].faults.fired[0] == (2, "modbus_exception")
        assert emulators["arm"].faults.fired[0] == (1, "alarm")
        assert set(rig.lightbox.levels().values()) == {0.0}  # connected: every channel off


def test_unreachable_after_retries_exits_3_and_keeps_pymodbus_chatter_off_the_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "rig.log"
    monkeypatch.setenv("COINRIG_LOG", str(log))
    monkeypatch.setattr(connect, "DEFAULT_POLICY", ConnectPolicy(attempts=3, backoff_s=0.01))
    # every request to the LED controller is carried out and never answered
    data = _config(lightbox={"faults": [{"kind": "lost_reply", "probability": 1.0}]})
    data["lightbox"]["retries"] = 0
    config = tmp_path / "rig.yaml"
    config.write_text(yaml.safe_dump(data))
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: one\nsides: [obverse]\nangles_deg: [0]\nlights: [raking_n]\n")
    result = CliRunner().invoke(
        app,
        [
            *("capture", "--coin", "SIM-0000", "--slot", "0", "--config", str(config)),
            *("--plan", str(plan), "--out", str(tmp_path / "data")),
        ],
    )
    assert result.exit_code == 3, result.output
    assert "lightbox unreachable after 3 connect attempts" in result.output
    assert "rerun the same command" in result.output
    assert "connect attempt 1/3 failed" in result.output  # our own warning: on the terminal
    assert ">>>>>" not in result.output and "No response received" not in result.output
    text = log.read_text()
    assert "No response received" in text  # pymodbus' own lines: in the log file


def test_a_configured_port_that_does_not_exist_is_not_retried(tmp_path: Path) -> None:
    # pymodbus' serial client only says "not connected": the config's path tells
    data = yaml.safe_load(SIM.read_text())
    data["lightbox"].pop("emulate")
    data["lightbox"]["link"] = {"kind": "rtu", "port": str(tmp_path / "ttyUSB7")}
    config = parse_config(data)
    refused = TransportError("lightbox: cannot connect to rtu port")
    assert not transient(config, "lightbox", refused)
    (tmp_path / "ttyUSB7").touch()  # the adapter is back: a connect may work again
    assert transient(config, "lightbox", refused)
