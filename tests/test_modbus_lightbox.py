"""The Modbus lightbox driver against its pymodbus emulator over loopback TCP."""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Iterator

import pytest

from rig.config import ModbusEmulatorConfig, ModbusLightboxConfig, ModbusTcp
from rig.devices import Lightbox, LightGeometry
from rig.errors import ConfigError, DeviceFault, DeviceTimeout, SafetyError, TransportError
from rig.lightbox.modbus import ModbusLightbox, contiguous_runs
from rig.sim.clock import SimClock
from rig.sim.faults import FaultInjector
from rig.sim.modbus_lights import ModbusLightboxEmulator
from rig.sim.world import LightState, World

RETRIES = 2
CHANNELS = [
    {"name": "north", "address": 0, "azimuth_deg": 90, "elevation_deg": 20},
    {"name": "east", "address": 1, "azimuth_deg": 0, "elevation_deg": 20},
    {"name": "south", "address": 2, "azimuth_deg": 270, "elevation_deg": 20},
    {"name": "west", "address": 3, "azimuth_deg": 180, "elevation_deg": 20},
    {"name": "top", "address": 5, "azimuth_deg": 135, "elevation_deg": 60, "full_scale": 4095},
    {"name": "dome", "address": 0, "kind": "coil", "diffuse": True},
    {"name": "ring", "address": 1, "kind": "coil", "diffuse": True},
]
PATTERNS = {
    "raking_n": {"north": 1.0},
    "top": {"top": 0.8, "dome": 0.2},
    "mixed": {"east": 0.25, "west": 0.5, "ring": 1.0},
}


def make_config(**overrides: object) -> ModbusLightboxConfig:
    settings: dict[str, object] = {
        "driver": "modbus",
        "emulate": ModbusEmulatorConfig(),
        "channels": CHANNELS,
        "patterns": PATTERNS,
        "timeout_s": 0.15,
        "retries": RETRIES,
        "settle_ms": 20.0,
    }
    settings.update(overrides)
    return ModbusLightboxConfig.model_validate(settings)


class Bench:
    """An emulator, its world, and a connected driver whose settling waits are recorded."""

    def __init__(self) -> None:
        self.config = make_config()
        self.world = World()
        self.clock = SimClock(0)
        self.faults = FaultInjector()
        self.emulator = ModbusLightboxEmulator(
            self.config, world=self.world, clock=self.clock, faults=self.faults
        )
        self.emulator.start()
        self.waits: list[float] = []
        self.driver = ModbusLightbox(
            self.config, link=self.emulator.endpoint, sleep=self.waits.append
        )
        self.driver.connect()

    def close(self) -> None:
        self.driver.close()
        self.emulator.stop()


@pytest.fixture
def bench() -> Iterator[Bench]:
    rig = Bench()
    yield rig
    rig.close()


def all_off() -> dict[str, float]:
    return {str(c["name"]): 0.0 for c in CHANNELS}


# ---------------------------------------------------------------- happy path


def test_pattern_is_set_verified_and_reaches_the_world(bench: Bench) -> None:
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


def test_switching_patterns_turns_the_others_off(bench: Bench) -> None:
    bench.driver.set_pattern("mixed")
    levels = bench.driver.set_pattern("raking_n")
    assert levels == all_off() | {"north": 1.0}
    assert bench.emulator.raw_levels() == {n: 0 for n in all_off()} | {"north": 1000}


def test_one_request_per_contiguous_run(bench: Bench) -> None:
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


def test_intensities_are_quantised_to_the_register(bench: Bench) -> None:
    levels = bench.driver.set_levels({"north": 1 / 3, "ring": 0.01})
    assert levels["north"] == 0.333
    assert levels["ring"] == 1.0  # a coil is on or off
    assert bench.emulator.raw_levels()["north"] == 333


def test_settling_wait_only_after_a_change(bench: Bench) -> None:
    bench.waits.clear()
    bench.driver.set_pattern("raking_n")
    bench.driver.set_pattern("raking_n")
    bench.driver.set_pattern("top")
    assert bench.waits == [0.02, 0.02]


def test_all_off_and_geometry(bench: Bench) -> None:
    bench.driver.set_pattern("mixed")
    bench.driver.all_off()
    assert bench.emulator.levels() == all_off()
    assert all(s.intensity == 0.0 for s in bench.world.snapshot().lights.values())
    assert LightGeometry("dome", None, None, True) in bench.driver.channels()
    assert bench.driver.patterns() == PATTERNS
    assert bench.driver.status().state == "dark"
    assert bench.driver.identity().model == "coinrig-sim SIM-LED-PWM"


def test_contiguous_runs_split_at_gaps_and_at_the_request_limit() -> None:
    config = make_config()
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
    bench: Bench, value: object
) -> None:
    bench.driver.set_pattern("mixed")
    before = len(bench.emulator.requests())
    with pytest.raises(SafetyError, match="outside"):
        bench.driver.set_levels({"east": 0.5, "north": value})  # type: ignore[dict-item]
    assert len(bench.emulator.requests()) == before
    assert bench.emulator.levels()["west"] == 0.5


def test_unknown_channel_and_pattern_list_the_valid_names(bench: Bench) -> None:
    before = len(bench.emulator.requests())
    with pytest.raises(ConfigError, match=r"channels are .*'north'"):
        bench.driver.set_levels({"nroth": 1.0})
    with pytest.raises(ConfigError, match=r"patterns are \['mixed', 'raking_n', 'top'\]"):
        bench.driver.set_pattern("raking_x")
    assert len(bench.emulator.requests()) == before


# ---------------------------------------------------------------- injected faults


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("lost_reply", None),
        ("late_reply", None),
        ("garbage", None),
        ("disconnect", None),
        ("modbus_exception", 6),
    ],
)
def test_transient_fault_is_retried_and_levels_verified(
    bench: Bench, kind: str, code: int | None
) -> None:
    bench.faults.arm(kind, code=code)  # type: ignore[arg-type]
    levels = bench.driver.set_pattern("mixed")
    assert [k for _, k in bench.faults.fired] == [kind]
    assert levels == bench.emulator.levels()
    assert levels["west"] == 0.5 and levels["ring"] == 1.0


@pytest.mark.parametrize(
    ("kind", "code", "error"),
    [
        ("lost_reply", None, DeviceTimeout),
        ("late_reply", None, DeviceTimeout),
        ("garbage", None, TransportError),
        ("disconnect", None, TransportError),
        ("modbus_exception", 4, DeviceFault),
    ],
)
def test_persistent_fault_raises_typed_error_then_recovers(
    bench: Bench, kind: str, code: int | None, error: type[Exception]
) -> None:
    bench.faults.arm(kind, code=code, times=RETRIES + 1)  # type: ignore[arg-type]
    with pytest.raises(error) as caught:
        bench.driver.set_pattern("raking_n")
    if code is not None:
        assert getattr(caught.value, "code", None) == code
    bench.faults.clear()
    assert bench.driver.set_pattern("raking_n")["north"] == 1.0


def test_readback_mismatch_is_a_device_fault(bench: Bench) -> None:
    bench.emulator.stick_channel("north", 0)  # a dead LED driver ignores its register
    with pytest.raises(DeviceFault, match="north: wrote 1000, reads 0"):
        bench.driver.set_pattern("raking_n")
    bench.emulator.stick_channel("north", None)
    assert bench.driver.set_pattern("raking_n")["north"] == 1.0


def test_unreachable_port_is_a_quick_transport_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    driver = ModbusLightbox(make_config(), link=ModbusTcp(host="127.0.0.1", port=port))
    started = time.monotonic()
    with pytest.raises(TransportError):
        driver.connect()
    assert time.monotonic() - started < 1.0
