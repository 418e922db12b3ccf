"""Calibration accuracy on the twin: every `rig calibrate` procedure against the hidden truth.

Runs the four procedures exactly as the commands do (real drivers against the emulators, the
twin placing and rendering the targets), then compares each fit with what the twin knows:

    .venv/bin/python benchmarks/calibration.py
    .venv/bin/python benchmarks/calibration.py --twin clockwise   # other axis, zero and sense

Targets (issue 8): camera RMS < 0.5 px; turntable centre within 1 px and zero offset within
0.5°; light directions within 2°; flat-field residual non-uniformity < 2 %.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from rig.backend import open_rig
from rig.calibration.camera import calibrate_camera, undistort_px
from rig.calibration.flatfield import calibrate_flatfield
from rig.calibration.lights import calibrate_lights
from rig.calibration.models import CalibrationRecord, DeviceKey, utc_now
from rig.calibration.staging import stager_for
from rig.calibration.store import StoredCalibration
from rig.calibration.turntable import calibrate_turntable
from rig.config import load_config
from rig.sim.shading import LED_WHITE, SENSOR_RESPONSE, Optics
from rig.sim.targets import TwinRig, truth_intrinsics, truth_turntable

TWINS = {
    "default": TwinRig(),
    "clockwise": TwinRig(axis_offset_mm=(-2.0, 1.5), zero_offset_deg=-100.0, rotation_sense=-1),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/sim.yaml")
    parser.add_argument("--twin", choices=sorted(TWINS), default="default")
    args = parser.parse_args()
    config = load_config(args.config)
    twin = TWINS[args.twin]
    assert config.camera.driver == "sim"
    width, height = config.camera.width, config.camera.height
    optics = Optics(config.camera.field_of_view_mm, 20.0, 0.0)
    with open_rig(config) as rig:
        stage = stager_for(rig, twin)
        assert stage is not None

        started = time.perf_counter()
        camera = calibrate_camera(rig, config, stage)
        took = time.perf_counter() - started
        fit = camera.fit.result
        matrix, distortion = truth_intrinsics(width, height, optics, twin)
        fitted = np.array(fit.camera_matrix)
        corners = np.array([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]])
        lens_error = np.abs(
            undistort_px(corners, fitted, np.array(fit.distortion))
            - undistort_px(corners, matrix, distortion)
        ).max()
        print(f"camera     ({took:4.1f} s, {fit.views_used} views, {fit.corners_used} corners)")
        print(f"  RMS reprojection      {fit.rms_px:.3f} px   (target < 0.5)")
        print(
            f"  fx, fy                {fitted[0, 0]:.1f}, {fitted[1, 1]:.1f}  truth {matrix[0, 0]:.1f}"
        )
        print(
            f"  principal point       ({fitted[0, 2]:.2f}, {fitted[1, 2]:.2f})  "
            f"truth ({matrix[0, 2]:.2f}, {matrix[1, 2]:.2f})"
        )
        print(f"  k1                    {fit.distortion[0]:.4f}  truth {distortion[0]:.4f}")
        print(f"  corner correction     {lens_error:.3f} px worst difference from the true lens")
        lens = StoredCalibration(
            Path("benchmark/camera.json"),
            CalibrationRecord(
                kind="camera",
                created=utc_now(),
                device=DeviceKey(rig=config.name, camera_serial=config.camera.serial),
                result=fit,
            ),
        )

        started = time.perf_counter()
        turntable = calibrate_turntable(rig, config, stage, camera=lens).result
        took = time.perf_counter() - started
        truth = truth_turntable(width, height, optics, twin)
        centre_error = math.hypot(
            turntable.centre_px[0] - truth["centre_x_px"],
            turntable.centre_px[1] - truth["centre_y_px"],
        )
        offset_error = (turntable.zero_offset_deg - truth["zero_offset_deg"] + 180) % 360 - 180
        print(f"turntable  ({took:4.1f} s, {len(turntable.angles_deg)} angles)")
        print(
            f"  centre                ({turntable.centre_px[0]:.2f}, {turntable.centre_px[1]:.2f}) "
            f"truth ({truth['centre_x_px']:.2f}, {truth['centre_y_px']:.2f}): "
            f"{centre_error:.3f} px   (target < 1)"
        )
        print(
            f"  zero offset           {turntable.zero_offset_deg:.3f}° truth "
            f"{truth['zero_offset_deg']:.3f}°: {abs(offset_error):.3f}°   (target < 0.5)"
        )
        print(
            f"  sense                 {turntable.rotation_sign:+d}  truth {truth['rotation_sign']:+.0f}"
        )
        print(
            f"  px/mm                 {turntable.px_per_mm:.3f}  truth {truth['px_per_mm']:.3f} "
            f"({100 * (turntable.px_per_mm / truth['px_per_mm'] - 1):+.2f} %)"
        )

        for label, used in (("with camera calibration", lens), ("orthographic", None)):
            started = time.perf_counter()
            lights = calibrate_lights(rig, config, stage, camera=used).result
            took = time.perf_counter() - started
            worst = max(c.error_deg for c in lights.channels)
            print(f"lights     ({took:4.1f} s, {label}): worst {worst:.3f}°   (target < 2)")
            for c in lights.channels:
                print(
                    f"  {c.name:<8} azimuth {c.azimuth_deg:7.2f}° (true {c.configured_azimuth_deg:g}°) "
                    f"elevation {c.elevation_deg:6.2f}° (true {c.configured_elevation_deg:g}°) "
                    f"error {c.error_deg:.3f}°"
                )

        started = time.perf_counter()
        flat = calibrate_flatfield(rig, config, stage, stem="benchmark").result
        took = time.perf_counter() - started
        response = np.array(LED_WHITE) * np.array(SENSOR_RESPONSE)
        gains = response[1] / response
        print(f"flatfield  ({took:4.1f} s, {len(flat.patterns)} patterns)")
        print(f"  gamma                 {flat.gamma:.4f}  truth {1 / 2.2:.4f}")
        for name, p in flat.patterns.items():
            wb = max(abs(a / b - 1) for a, b in zip(p.white_balance, gains, strict=True))
            print(
                f"  {name:<10} non-uniformity {p.nonuniformity_before_pct:5.2f} % → "
                f"{p.nonuniformity_after_pct:4.2f} % (target < 2); "
                f"white balance off by {100 * wb:.2f} %"
            )


if __name__ == "__main__":
    main()
