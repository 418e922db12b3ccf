"""Benches for the G-code arm tests: a driver on its pty emulator, per dialect, on the twin."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from rig.arm.gcode_arm import GcodeArm
from rig.config import EmulatorConfig, GcodeArmConfig, Pose, TrayConfig
from rig.sim.arm_emulator import GcodeArmEmulator
from rig.sim.clock import SimClock
from rig.sim.faults import FaultInjector
from rig.sim.world import CoinPlacement, World

ROOT = Path(__file__).resolve().parents[1]
DIALECTS = ["uarm-swift-pro", "dexarm"]
COIN = CoinPlacement(coin_id="SAW-0107", side_up="obverse")
# The default poses suit the uArm; a DexArm reaches less close to its base (its firmware's
# ARMLIMIT table), so its benches use the shipped DexArm rig's poses and tray.
DEXARM_RIG = yaml.safe_load(
    (ROOT / "rig" / "config" / "presets" / "modbus-dexarm-webcam.yaml").read_text()
)
DEXARM_POSES = {
    key: DEXARM_RIG["arm"][key]
    for key in ("workspace", "safe_pose", "turntable_pose", "flip_station")
}
TRAYS = {"uarm-swift-pro": TrayConfig(), "dexarm": TrayConfig.model_validate(DEXARM_RIG["tray"])}
TRAY = TRAYS["uarm-swift-pro"]
#: a pose inside each dialect's workspace that its firmware cannot reach
UNREACHABLE = {
    "uarm-swift-pro": Pose(x_mm=0.0, y_mm=60.0, z_mm=0.0),
    "dexarm": Pose(x_mm=0.0, y_mm=160.0, z_mm=150.0),
}


def arm_config(dialect: str, **overrides: object) -> GcodeArmConfig:
    # short timeouts keep the fault tests fast; the emulator's late replies come after them
    settings: dict[str, object] = {
        "driver": "gcode-arm",
        "dialect": dialect,
        "emulate": EmulatorConfig(),
        "reply_timeout_s": 0.3,
        "banner_timeout_s": 0.5,
        "retries": 2,
    }
    if dialect == "dexarm":
        settings.update(DEXARM_POSES)
    settings.update(overrides)
    return GcodeArmConfig.model_validate(settings)


@dataclass
class Bench:
    arm: GcodeArm
    emulator: GcodeArmEmulator
    world: World
    clock: SimClock


@contextmanager
def bench(
    dialect: str,
    *,
    scale: float = 0.0,
    faults: FaultInjector | None = None,
    real_sleep: bool = False,
    homed: bool = True,
    **overrides: object,
) -> Iterator[Bench]:
    config = arm_config(dialect, **overrides)
    tray = TRAYS[dialect]
    world, clock = World(), SimClock(scale)
    safe = config.safe_pose
    world.set_arm_xyz((safe.x_mm, safe.y_mm, safe.z_mm))  # the arm stands at its safe pose
    # homed: a DexArm homed earlier in its power cycle (opening its USB port does not reset it)
    emulator = GcodeArmEmulator(
        config=config,
        tray=tray,
        world=world,
        clock=clock,
        faults=faults or FaultInjector(),
        homed=homed,
    )
    emulator.late_reply_s = 0.45  # past the 0.3 s reply timeout, as on a congested link
    # retry back-offs need no real waiting here; motion polling does when time is scaled
    arm = GcodeArm(
        config, tray=tray, port=emulator.port, sleep=time.sleep if real_sleep else lambda s: None
    )
    with emulator:
        try:
            arm.connect()
            yield Bench(arm, emulator, world, clock)
        finally:
            arm.close()
