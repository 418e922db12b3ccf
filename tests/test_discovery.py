"""Device discovery: well-typed results, pylon's emulated camera, a video file as an OpenCV source."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from rig.discovery import (
    Discovery,
    OpenCvCameraInfo,
    PylonScan,
    SerialPortInfo,
    default_opencv_sources,
    discover,
    find_opencv_cameras,
    find_pylon_cameras,
    find_serial_ports,
)


def test_serial_ports_are_typed_and_sorted() -> None:
    ports = find_serial_ports()
    assert all(isinstance(p, SerialPortInfo) for p in ports)
    assert [p.device for p in ports] == sorted(p.device for p in ports)


def test_pylon_scan_lists_the_emulated_camera() -> None:
    scan = find_pylon_cameras()
    assert isinstance(scan, PylonScan)
    assert scan.available, scan.reason
    emulated = [c for c in scan.cameras if c.emulated]
    assert [c.serial for c in emulated][:1] == ["0815-0000"]
    assert emulated[0].device_class == "BaslerCamEmu"
    assert emulated[0].model == "Emulation"


def test_opencv_probe_reads_a_real_source_and_skips_bad_ones(tmp_path: Path) -> None:
    image = np.full((24, 40, 3), 200, np.uint8)
    assert cv2.imwrite(str(tmp_path / "f_000.png"), image)
    good = str(tmp_path / "f_%03d.png")
    found = find_opencv_cameras([good, str(tmp_path / "missing_%03d.png")], timeout_s=1.0)
    assert found == [OpenCvCameraInfo(source=good, backend=found[0].backend, width=40, height=24)]


def test_default_probe_is_quick_and_typed() -> None:
    sources = default_opencv_sources()
    assert all(isinstance(s, int) for s in sources)
    started = time.monotonic()
    found = find_opencv_cameras(timeout_s=0.5)
    assert time.monotonic() - started < 10
    assert all(isinstance(c, OpenCvCameraInfo) for c in found)


def test_discover_bundles_every_scan() -> None:
    result = discover(opencv_timeout_s=0.5)
    assert isinstance(result, Discovery)
    assert isinstance(result.pylon, PylonScan)
    assert all(isinstance(p, SerialPortInfo) for p in result.serial_ports)
