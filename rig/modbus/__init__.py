"""Modbus, shared by every Modbus device: the link (TCP/RTU client), shared serial lines, the device base."""
