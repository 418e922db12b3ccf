"""Faults chosen in the rig config (`emulate.faults`) reach the emulators the backend starts.

Each device may only name faults its wire can carry (a GRBL board has no Modbus exception
code); a drive's latched fault is an alarm that the capture layer clears with recover().
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from capture.engine import CaptureEngine
from rig.assembly import open_rig
from rig.config import parse_config
from rig.errors import ConfigError, DeviceAlarm, DeviceFault, DeviceTimeout, DeviceUnreachable

ROOT = Path(__file__).resolve().parents[1]


def sim_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(
        (ROOT / "rig" / "config" / "presets" / "sim.yaml").read_text()
    )
    return data


@pytest.mark.parametrize(
    ("device", "kind", "choices"),
    [
        ("turntable", "modbus_exception", "'alarm'"),  # GRBL: serial faults only
        ("lightbox", "alarm", "'modbus_exception'"),  # an LED controller latches nothing
        ("arm", "modbus_exception", "'error'"),
    ],
)
def test_a_fault_the_wire_cannot_carry_is_a_config_error(
    device: str, kind: str, choices: str
) -> None:
    data = sim_data()
    data[device]["emulate"] = {"faults": [{"kind": kind, "probability": 0.5}]}
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    message = str(caught.value)
    assert "\n" not in message
    assert f"{device}" in message and repr(kind) in message and choices in message


def test_a_configured_modbus_exception_fires_at_its_command() -> None:
    data = sim_data()
    # request 1 is the identification at connect, request 2 the first write (all lights off)
    data["lightbox"]["emulate"] = {
        "faults": [{"kind": "modbus_exception", "code": 2, "after_commands": 2}]
    }
    with pytest.raises(DeviceFault) as caught, open_rig(parse_config(data)):
        pass
    assert caught.value.code == 2


def test_a_configured_grbl_alarm_fires_on_the_first_move() -> None:
    data = sim_data()
    data["turntable"]["emulate"] = {"faults": [{"kind": "alarm", "code": 1, "probability": 1.0}]}
    with open_rig(parse_config(data)) as rig:
        with pytest.raises(DeviceAlarm) as caught:
            rig.turntable.move_to_deg(90.0)
        assert caught.value.code == 1


def test_a_configured_lost_reply_makes_the_arm_time_out() -> None:
    data = sim_data()
    data["arm"]["emulate"] = {"faults": [{"kind": "lost_reply", "probability": 1.0}]}
    data["arm"].update(reply_timeout_s=0.05, banner_timeout_s=0.1, retries=0)
    # open_rig retries the connect (rig.connect), then gives up naming the timeout
    with pytest.raises(DeviceUnreachable) as caught, open_rig(parse_config(data)):
        pass
    assert isinstance(caught.value.__cause__, DeviceTimeout)


def test_a_drive_fault_is_an_alarm_the_capture_engine_recovers() -> None:
    data = sim_data()
    data["turntable"] = {"driver": "modbus", "emulate": {}, "timeout_s": 0.2}
    with open_rig(parse_config(data)) as rig:
        assert rig.twin is not None
        drive = rig.twin.emulators["turntable"]
        drive.faults.arm("alarm", code=9)  # the drive latches its fault bit on the next request
        engine = CaptureEngine(rig, types.SimpleNamespace(retries=2))  # type: ignore[arg-type]
        assert engine.call(lambda: rig.turntable.move_to_deg(90.0)) == pytest.approx(90.0)
        assert not drive.faulted
        assert rig.twin.world.snapshot().turntable_deg == pytest.approx(90.0)
