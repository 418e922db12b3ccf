"""A G-code arm with a suction cup behind a pty, speaking the uArm Swift Pro or DexArm dialect.

The machine (serial line, planner, pump, twin) is `rig.sim.arm_machine.ArmMachine`; how each
firmware reads its commands and when it answers them lives in `rig.sim.arm_uarm` (uArm Swift Pro
V4) and `rig.sim.arm_dexarm` (Marlin on the DexArm), each citing the firmware source it follows;
docs/fidelity-arm-modbus.md lists every behaviour with its reference and its test.
"""

from __future__ import annotations

from rig.sim.arm_dexarm import DexarmFirmware
from rig.sim.arm_machine import ArmMachine, Firmware
from rig.sim.arm_uarm import UarmFirmware


class GcodeArmEmulator(ArmMachine):
    """Emulated uArm Swift Pro / DexArm on a pty; `port` is the path the driver opens."""

    def make_firmware(self, homed: bool) -> Firmware:
        """The uArm's V4 firmware or the DexArm's Marlin, by the config's dialect."""
        if self.dialect.name == "uarm-swift-pro":
            return UarmFirmware(self)
        return DexarmFirmware(self, homed=homed)
