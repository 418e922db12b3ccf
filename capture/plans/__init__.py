"""Capture plans shipped inside the package, found by name (`--plan quick`, `--plan standard`).

Resolved by rig.config.presets; imports nothing.
"""
