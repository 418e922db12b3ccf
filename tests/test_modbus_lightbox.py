"""The Modbus lightbox driver against its pymodbus emulator: loopback TCP, and (for setting a
pattern and every injected fault) Modbus RTU on a pseudo-terminal line as well."""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Iterator

import pytest
from modbus_support import (
    LIGHT_CHANNELS,
    LIGHT_PATTERNS,
    PERSISTENT,
    RETRIES,
    TRANSIENT_FAULTS,
    LightboxBench,
    attempts,
    lightbox_bench,
    lightbox_config,
    on_each_wire,
)

from rig.config import ModbusTcp
from rig.devices import Lightbox, LightGeometry
from rig.errors import ConfigError, DeviceFault, DeviceTimeout, SafetyError, TransportError
from rig.lightbox.modbus import ModbusLightbox, contiguous_runs
from rig.sim.world import LightState


@pytest.fixture
def bench(request: pytest.FixtureRequest) -> Iterator[LightboxBench]:
    """A connected driver over TCP, or over each wire for a test marked `on_each_wire`."""
    yield from lightbox_bench(getattr(request, "param", "tcp"))


def all_off() -> dict[str, float]:
    return {str(c["name"]): 0.0 for c in LIGHT_CHANNELS}


# ---------------------------------------------------------------- happy path


@on_each_wire
def test_pattern_is_set_verified_and_reaches_the_world(bench: LightboxBench) -> None:
    assert isinstance(bench.driver, Lightbox)
    levels = bench.driver.set_pattern("top")
    expected = all_off() | {"top": round(0.8 * 4095) / 4095, "dome": 1.0}
    assert levels == pytest.approx(expected)
    assert bench.emulator.levels() == pytest.approx(expected)
    assert bench.driver.levels() == pytest.approx(expected)
    lights = bench.world.snapshot().lights
    assert lights["top"] == LightState(
        intensity=expected["top"], azimuth_deg=135.0, elevation_deg=60.0, diffuse=False
    )
    assert lights["dome"].diffuse and lights["dome"].intensity == 1.0
    assert lights["north"].intensity == 0.0


def test_switching_patterns_turns_the_others_off(bench: LightboxBench) -> None:
    bench.driver.set_pattern("mixed")
    levels = bench.driver.set_pattern("raking_n")
    assert levels == all_off() | {"north": 1.0}
    assert bench.emulator.raw_levels() == {n: 0 for n in all_off()} | {"north": 1000}


def test_one_request_per_contiguous_run(bench: LightboxBench) -> None:
    before = len(bench.emulator.requests())
    bench.driver.set_pattern("mixed")
    new = bench.emulator.requests()[before:]
    writes = [(r.function_code, r.address, r.values) for r in new if r.is_write]
    assert writes == [
        (16, 0, (0, 250, 0, 500)),  # north..west in one write
        (6, 5, (0,)),  # top stands alone
        (15, 0, (0, 1)),  # both coils in one write
    ]
    reads = [(r.function_code, r.address, r.count) for r in new if not r.is_write]
    assert reads == [(3, 0, 4), (3, 5, 1), (1, 0, 2)]


def test_intensities_are_quantised_to_the_register(bench: LightboxBench) -> None:
    levels = bench.driver.set_levels({"north": 1 / 3, "ring": 0.01})
    assert levels["north"] == 0.333
    assert levels["ring"] == 1.0  # a coil is on or off
    assert bench.emulator.raw_levels()["north"] == 333


def test_settling_wait_only_after_a_change(bench: LightboxBench) -> None:
    bench.waits.clear()
    bench.driver.set_pattern("raking_n")
    bench.driver.set_pattern("raking_n")
    bench.driver.set_pattern("top")
    assert bench.waits == [0.02, 0.02]


@on_each_wire
def test_all_off_and_geometry(bench: LightboxBench) -> None:
    bench.driver.set_pattern("mixed")
    bench.driver.all_off()
    assert bench.emulator.levels() == all_off()
    assert all(s.intensity == 0.0 for s in bench.world.snapshot().lights.values())
    assert LightGeometry("dome", None, None, True) in bench.driver.channels()
    assert bench.driver.patterns() == LIGHT_PATTERNS
    assert bench.driver.status().state == "dark"
    assert bench.driver.identity().model == "coinrig-sim SIM-LED-PWM"


def test_contiguous_runs_split_at_gaps_and_at_the_request_limit() -> None:
    config = lightbox_config()
    runs = contiguous_runs(config.channels, longest=3)
    assert [(r.kind, r.address, len(r.channels)) for r in runs] == [
        ("holding", 0, 3),
        ("holding", 3, 1),
        ("holding", 5, 1),
        ("coil", 0, 2),
    ]


# ---------------------------------------------------------------- refusals before any write


@pytest.mark.parametrize("value", [1.5, -0.1, math.nan, math.inf, "bright"])
def test_bad_intensity_is_a_safety_error_and_nothing_is_written(
    bench: LightboxBench, value: object
) -> None:
    bench.driver.set_pattern("mixed")
    before = len(bench.emulator.requests())
    with pytest.raises(SafetyError, match="outside"):
        bench.driver.set_levels({"east": 0.5, "north": value})  # type: ignore[dict-item]
    assert len(bench.emulator.requests()) == before
    assert bench.emulator.levels()["west"] == 0.5


def test_unknown_channel_and_pattern_list_the_valid_names(bench: LightboxBench) -> None:
    before = len(bench.emulator.requests())
    with pytest.raises(ConfigError, match=r"channels are .*'north'"):
        bench.driver.set_levels({"nroth": 1.0})
    with pytest.raises(ConfigError, match=r"patterns are \['mixed', 'raking_n', 'top'\]"):
        bench.driver.set_pattern("raking_x")
    assert len(bench.emulator.requests()) == before


# ---------------------------------------------------------------- injected faults, over each wire


@on_each_wire
@pytest.mark.parametrize(("kind", "code"), TRANSIENT_FAULTS)
def test_transient_fault_is_retried_and_levels_verified(
    bench: LightboxBench, kind: str, code: int | None
) -> None:
    bench.faults.arm(kind, code=code)  # type: ignore[arg-type]
    levels = bench.driver.set_pattern("mixed")
    assert [k for _, k in bench.faults.fired] == [kind]
    assert levels == bench.emulator.levels()
    assert levels["west"] == 0.5 and levels["ring"] == 1.0


@on_each_wire
@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("lost_reply", None),
        ("late_reply", None),
        ("garbage", None),
        ("disconnect", None),
        ("modbus_exception", 4),  # server device failure
        ("modbus_exception", 2),  # illegal data address
    ],
)
def test_persistent_fault_raises_typed_error_then_recovers(
    bench: LightboxBench, kind: str, code: int | None
) -> None:
    expected = PERSISTENT[bench.framing][kind]
    bench.faults.arm(kind, code=code, times=RETRIES + 1)  # type: ignore[arg-type]
    before = len(bench.emulator.requests())
    if expected.error is None:
        # RTU, late replies: each identical retry takes its predecessor's reply, a reply to
        # another request is refused and asked again: the pattern is set and verified; late
        # replies may still be on their way, so the line is left alone from here
        assert bench.driver.set_pattern("raking_n") == bench.emulator.levels()
        assert [k for _, k in bench.faults.fired] == [kind] * (RETRIES + 1)
        return
    with pytest.raises(expected.error, match=expected.match) as caught:
        bench.driver.set_pattern("raking_n")
    if expected.error is TransportError:
        assert not isinstance(caught.value, DeviceTimeout)
    if code is not None:
        assert isinstance(caught.value, DeviceFault) and caught.value.code == code
    assert len(bench.emulator.requests()) - before == attempts(code)
    bench.faults.clear()
    assert bench.driver.set_pattern("raking_n") == bench.emulator.levels()
    assert bench.emulator.levels()["north"] == 1.0


def test_readback_mismatch_is_a_device_fault(bench: LightboxBench) -> None:
    bench.emulator.stick_channel("north", 0)  # a dead LED driver ignores its register
    with pytest.raises(DeviceFault, match="north: wrote 1000, reads 0"):
        bench.driver.set_pattern("raking_n")
    bench.emulator.stick_channel("north", None)
    assert bench.driver.set_pattern("raking_n")["north"] == 1.0


def test_unreachable_port_is_a_quick_transport_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    driver = ModbusLightbox(lightbox_config(), link=ModbusTcp(host="127.0.0.1", port=port))
    started = time.monotonic()
    with pytest.raises(TransportError):
        driver.connect()
    assert time.monotonic() - started < 1.0
