"""Find what is attached: serial ports, Basler (pylon) cameras, OpenCV cameras.

Used by `rig devices`. Every function returns plain dataclasses and prints nothing; a scan that
cannot run (pypylon missing, say) returns an empty list together with the reason.
"""

from __future__ import annotations

import glob
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2

from rig.camera.opencv import open_capture, quiet_opencv, resolve_source
from rig.errors import RigError
from rig.transport import list_serial_ports


@dataclass(frozen=True)
class SerialPortInfo:
    """A serial port the OS knows: its path and the description the OS gives it."""

    device: str
    description: str


@dataclass(frozen=True)
class PylonCameraInfo:
    """A camera pylon enumerated (real, or pylon's emulation when PYLON_CAMEMU is set)."""

    model: str
    serial: str
    device_class: str
    friendly_name: str
    emulated: bool


@dataclass(frozen=True)
class PylonScan:
    """The pylon cameras found; `reason` says why the list is empty when the scan failed."""

    cameras: list[PylonCameraInfo]
    available: bool
    reason: str = ""


@dataclass(frozen=True)
class OpenCvCameraInfo:
    """A source OpenCV could open and read a frame from."""

    source: int | str
    backend: str
    width: int
    height: int


@dataclass(frozen=True)
class Discovery:
    """Everything `rig devices` shows."""

    serial_ports: list[SerialPortInfo]
    pylon: PylonScan
    opencv_cameras: list[OpenCvCameraInfo] = field(default_factory=list)


def find_serial_ports() -> list[SerialPortInfo]:
    """Every serial port the OS reports, sorted by path."""
    return sorted(
        (SerialPortInfo(device, description) for device, description in list_serial_ports()),
        key=lambda port: port.device,
    )


def find_pylon_cameras() -> PylonScan:
    """Enumerate pylon cameras; an empty scan with a reason when pylon is unavailable."""
    # Imported here so a machine without pylon can still list serial ports and webcams.
    from rig.camera.basler import EMULATION_DEVICE_CLASS, load_pylon, pylon_errors

    try:
        pylon, _ = load_pylon(emulated=False)
        with pylon_errors("pylon", "enumerating cameras"):
            infos = list(pylon.TlFactory.GetInstance().EnumerateDevices())
            cameras = [
                PylonCameraInfo(
                    model=str(info.GetModelName()),
                    serial=str(info.GetSerialNumber()),
                    device_class=str(info.GetDeviceClass()),
                    friendly_name=str(info.GetFriendlyName()),
                    emulated=info.GetDeviceClass() == EMULATION_DEVICE_CLASS,
                )
                for info in infos
            ]
    except RigError as exc:
        return PylonScan(cameras=[], available=False, reason=str(exc))
    reason = "" if cameras else "pylon found no cameras"
    return PylonScan(cameras=cameras, available=True, reason=reason)


def default_opencv_sources(max_index: int = 8) -> list[int]:
    """Indices worth probing: those with a /dev/videoN node on Linux, else 0..max_index-1."""
    if os.path.isdir("/dev") and os.name == "posix" and not _is_macos():
        indices = sorted(
            int(match.group(1))
            for path in glob.glob("/dev/video*")
            if (match := re.fullmatch(r"/dev/video(\d+)", path))
        )
        # Probing an index without a node only makes V4L2 complain; skip those outright.
        return [i for i in indices if i < max_index]
    return list(range(max_index))


def _is_macos() -> bool:
    return os.uname().sysname == "Darwin"


def find_opencv_cameras(
    sources: Sequence[int | str] | None = None, *, timeout_s: float = 2.0
) -> list[OpenCvCameraInfo]:
    """Open each source quietly, read one frame, and list those that delivered one.

    `sources` defaults to default_opencv_sources(). Each probe is bounded by `timeout_s` where the
    backend honours open/read timeouts; the whole scan stops once 4 × `timeout_s` have passed, so
    a misbehaving device cannot make `rig devices` hang for long.
    """
    candidates = default_opencv_sources() if sources is None else list(sources)
    found: list[OpenCvCameraInfo] = []
    give_up = time.monotonic() + 4 * timeout_s
    for raw in candidates:
        if time.monotonic() > give_up:
            break
        source = resolve_source(raw)
        capture = open_capture(source, timeout_s)
        if capture is None:
            continue
        try:
            with quiet_opencv():
                ok, image = capture.read()
            if ok and image is not None:
                found.append(
                    OpenCvCameraInfo(
                        source=source,
                        backend=capture.getBackendName(),
                        width=int(image.shape[1]),
                        height=int(image.shape[0]),
                    )
                )
        except cv2.error:
            # A node that opens but cannot stream (a metadata node of a UVC camera) is not a camera.
            continue
        finally:
            capture.release()
    return found


def discover(*, opencv_timeout_s: float = 2.0) -> Discovery:
    """Run every scan: serial ports, pylon cameras, OpenCV cameras."""
    return Discovery(
        serial_ports=find_serial_ports(),
        pylon=find_pylon_cameras(),
        opencv_cameras=find_opencv_cameras(timeout_s=opencv_timeout_s),
    )
