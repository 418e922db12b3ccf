"""Rig configuration: pydantic v2 models, one per device, a `driver` field choosing the class.

Units are in field names. Bounds are validated at load, unknown keys are errors, and
`load_config` turns any problem into one ConfigError line naming the field and the bad value.

The models live in `rig.config.common` (base model, faults, transports), `rig.config.devices`
(one model per device), `rig.config.rig_config` (the whole rig) and `rig.config.loading`
(files → RigConfig); import them from `rig.config`.
"""

from __future__ import annotations

from rig.config.common import (
    MODBUS_FAULTS,
    SERIAL_FAULTS,
    EmulatorConfig,
    FaultKind,
    FaultRule,
    ModbusEmulatorConfig,
    ModbusLink,
    ModbusRtu,
    ModbusTcp,
    RegisterAddress,
    SerialPort,
    StrictModel,
)
from rig.config.devices import (
    ArmConfig,
    BaslerCameraConfig,
    CameraConfig,
    CameraSettings,
    FlipStation,
    GcodeArmConfig,
    GrblEmulatorConfig,
    GrblTurntableConfig,
    Intensity,
    LightboxConfig,
    LightChannel,
    ModbusLightboxConfig,
    ModbusTurntableConfig,
    ModbusTurntableRegisters,
    OpenCvCameraConfig,
    PixelFormat,
    Pose,
    SimCameraConfig,
    Staging,
    TiltAxis,
    TrayConfig,
    TurntableConfig,
    TurntableLimits,
    Workspace,
    xy_distance_mm,
)
from rig.config.loading import (
    config_json_schema,
    describe_validation_error,
    load_config,
    parse_config,
)
from rig.config.rig_config import (
    CalibrationPolicy,
    RigConfig,
    SimulationConfig,
    StorageConfig,
)

__all__ = [
    "MODBUS_FAULTS",
    "SERIAL_FAULTS",
    "ArmConfig",
    "BaslerCameraConfig",
    "CalibrationPolicy",
    "CameraConfig",
    "CameraSettings",
    "EmulatorConfig",
    "FaultKind",
    "FaultRule",
    "FlipStation",
    "GcodeArmConfig",
    "GrblEmulatorConfig",
    "GrblTurntableConfig",
    "Intensity",
    "LightChannel",
    "LightboxConfig",
    "ModbusEmulatorConfig",
    "ModbusLightboxConfig",
    "ModbusLink",
    "ModbusRtu",
    "ModbusTcp",
    "ModbusTurntableConfig",
    "ModbusTurntableRegisters",
    "OpenCvCameraConfig",
    "PixelFormat",
    "Pose",
    "RegisterAddress",
    "RigConfig",
    "SerialPort",
    "SimCameraConfig",
    "SimulationConfig",
    "Staging",
    "StorageConfig",
    "StrictModel",
    "TiltAxis",
    "TrayConfig",
    "TurntableConfig",
    "TurntableLimits",
    "Workspace",
    "config_json_schema",
    "describe_validation_error",
    "load_config",
    "parse_config",
    "xy_distance_mm",
]
