"""Capture: plans, the session runner, calibration procedures and the crash-safe dataset writer.

Imports `rig` (devices) and `dataset` (the on-disk format), never `training` or `pipeline`
(docs/design.md).
"""
