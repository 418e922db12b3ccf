"""Turntable drivers: GRBL (serial G-code) and Modbus drives."""
