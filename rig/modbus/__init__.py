"""Modbus for every Modbus device: the client link (TCP/RTU), shared serial lines, the device base.

Imports only within `rig`.
"""
