"""Where the emulated arms can reach: the firmware's own math, kept in `rig.arm.reach`.

The emulators refuse a move exactly where the firmware would (E22 on the uArm, "beyond limit" on
the DexArm). The host checks a whole layout with the same functions before a session sends a byte
(capture.kinematics.reach_problems), so the model lives beside the driver and is re-exported here
for the emulators and the fidelity tests.
"""

from __future__ import annotations

from rig.arm.reach import (
    DEXARM_ARMLIMIT,
    DEXARM_OFFSET_ROT_MM,
    DEXARM_PEN_MODULE_OFFSET_MM,
    DEXARM_PUMP_MODULE_OFFSET_MM,
    DEXARM_Z_MM,
    UARM_ARM_A_MM,
    UARM_ARM_B_MM,
    UARM_FRONT_OFFSET_MM,
    UARM_HEIGHT_OFFSET_MM,
    dexarm_refusal,
    uarm_joint_angles,
    uarm_reachable,
)

__all__ = [
    "DEXARM_ARMLIMIT",
    "DEXARM_OFFSET_ROT_MM",
    "DEXARM_PEN_MODULE_OFFSET_MM",
    "DEXARM_PUMP_MODULE_OFFSET_MM",
    "DEXARM_Z_MM",
    "UARM_ARM_A_MM",
    "UARM_ARM_B_MM",
    "UARM_FRONT_OFFSET_MM",
    "UARM_HEIGHT_OFFSET_MM",
    "dexarm_refusal",
    "uarm_joint_angles",
    "uarm_reachable",
]
