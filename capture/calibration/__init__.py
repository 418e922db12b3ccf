"""Rig calibration: camera intrinsics, turntable centre, light directions and flat fields.

Each `rig calibrate ...` command captures its own frames through the rig's drivers, fits a model
and writes a versioned JSON record (plus .npy arrays) to the calibration folder, keyed by the
rig's name and the camera's serial number (see store.py).
"""
