"""Basler cameras through pypylon, one frame per software trigger.

The camera is opened by serial number, or the first one found. Emulated cameras (pylon's
`PYLON_CAMEMU`, device class BaslerCamEmu) are used only when the config says `emulated: true`,
and are never picked up by a real rig's config by accident.

GenICam feature names differ between camera generations: SFNC 2 cameras (ace USB, ace 2, boost)
have `ExposureTime` and `Gain` in dB; older GigE ace cameras have `ExposureTimeAbs` and, on some
models, `GainAbs` in dB next to `GainRaw` (camera-specific units). The driver uses whichever dB/µs
feature the camera offers and never guesses a GainRaw→dB conversion.

Images follow rig.camera.pixels: RGB order, uint8 for 8-bit formats, uint16 MSB-aligned for 12-bit
ones, Bayer mosaics demosaiced. Every pypylon exception is re-raised as a rig.errors error.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from typing import Any, get_args

from rig.camera.pixels import to_image
from rig.camera.settings import check_exposure_gain, require_open
from rig.config import BaslerCameraConfig, PixelFormat
from rig.devices import DeviceIdentity, DeviceStatus, Frame
from rig.errors import (
    ConfigError,
    DeviceFault,
    DeviceTimeout,
    NotConnected,
    RigError,
    SafetyError,
    TransportError,
)

EMULATION_DEVICE_CLASS = "BaslerCamEmu"

# First match wins: SFNC 2 names, then the GigE ace (pre-SFNC 2) names. Both are in µs / dB.
_EXPOSURE_FEATURES = ("ExposureTime", "ExposureTimeAbs")
_GAIN_FEATURES = ("Gain", "GainAbs")

# coinrig pixel-format names → the device's enumeration entries to try, in order. Older cameras
# and the emulator still call RGB8 "RGB8Packed".
_DEVICE_FORMATS: dict[str, tuple[str, ...]] = {
    "Mono8": ("Mono8",),
    "Mono12": ("Mono12",),
    "RGB8": ("RGB8", "RGB8Packed"),
    "BayerRG8": ("BayerRG8",),
    "BayerRG12": ("BayerRG12",),
}


def load_pylon(*, emulated: bool) -> tuple[Any, Any]:
    """Import pypylon (enabling pylon's camera emulation first when asked) → (pylon, genicam).

    Raises:
        NotConnected: pypylon (or the pylon runtime under it) cannot be imported.
    """
    if emulated:
        # pylon reads PYLON_CAMEMU once, when it is loaded; later changes have no effect.
        os.environ.setdefault("PYLON_CAMEMU", "1")
    try:
        from pypylon import genicam, pylon
    except ImportError as exc:
        raise NotConnected(f"basler camera: pypylon is not available ({exc})") from exc
    return pylon, genicam


@contextlib.contextmanager
def pylon_errors(device: str, action: str) -> Iterator[None]:
    """Re-raise pypylon/GenICam exceptions raised inside the block as rig.errors errors.

    Raises:
        DeviceTimeout: pylon timed out.
        DeviceFault: the camera refused the request (value out of range, feature not writable).
        TransportError: anything else pylon reports (device removed, driver error).
    """
    _, genicam = load_pylon(emulated=False)
    try:
        yield
    except RigError:
        raise
    except genicam.TimeoutException as exc:
        raise DeviceTimeout(f"{device}: timed out while {action}: {_first_line(exc)}") from exc
    except (
        genicam.OutOfRangeException,
        genicam.InvalidArgumentException,
        genicam.AccessException,
    ) as exc:
        raise DeviceFault(f"{device}: camera refused {action}: {_first_line(exc)}") from exc
    except genicam.GenericException as exc:
        raise TransportError(f"{device}: pylon error while {action}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    # GenICam messages append ": XxxException thrown in node … (file 'FloatT.h', line 91)".
    return str(exc).split(" : ", 1)[0].strip()


class BaslerCamera:
    """A Basler camera (or pylon's emulation of one) implementing the rig Camera protocol."""

    def __init__(self, config: BaslerCameraConfig) -> None:
        self.config = config
        self._name = f"basler camera {config.serial or '(first found)'}"
        self._camera: Any = None
        self._model = ""
        self._serial = ""
        self._firmware = ""
        self._device_class = ""
        self._pixel_format: str = config.pixel_format
        self._exposure_us = math.nan
        self._gain_db = math.nan
        self._gain_feature: str | None = None

    # ------------------------------------------------------------------ lifecycle

    def connect(self) -> None:
        """Open the camera, set software trigger, and apply the configured format/exposure/gain.

        Raises:
            SafetyError: the configured exposure or gain is outside the configured limits.
            NotConnected: pypylon is missing, no camera is attached, or none has the serial asked
                for (the message lists the serials seen).
            DeviceFault: the camera refused a setting.
            TransportError: pylon failed to open or talk to the camera.
        """
        if self._camera is not None:
            return
        check_exposure_gain(
            self.config,
            self.config.exposure_us,
            self.config.gain_db,
            name=self._name,
            max_gain_db=self.config.max_gain_db,
        )
        pylon, _ = load_pylon(emulated=self.config.emulated)
        with pylon_errors(self._name, "enumerating cameras"):
            factory = pylon.TlFactory.GetInstance()
            info = self._select(list(factory.EnumerateDevices()))
            camera = pylon.InstantCamera(factory.CreateDevice(info))
            camera.Open()
        self._camera = camera
        self._model = str(info.GetModelName())
        self._serial = str(info.GetSerialNumber())
        self._device_class = str(info.GetDeviceClass())
        self._name = f"basler camera {self._model} {self._serial}"
        try:
            with pylon_errors(self._name, "setting up software trigger"):
                self._firmware = _read_string(camera, "DeviceFirmwareVersion", "DeviceVersion")
                self._setup_trigger(camera)
            self.configure(
                exposure_us=self.config.exposure_us,
                gain_db=self.config.gain_db,
                pixel_format=self.config.pixel_format,
            )
        except BaseException:
            self.close()
            raise

    def _select(self, infos: list[Any]) -> Any:
        wanted_class = self.config.emulated
        usable = [
            i for i in infos if (i.GetDeviceClass() == EMULATION_DEVICE_CLASS) == wanted_class
        ]
        seen = [f"{i.GetModelName()} {i.GetSerialNumber()}" for i in infos]
        kind = "emulated" if self.config.emulated else "real (non-emulated)"
        if self.config.serial is None:
            if not usable:
                hint = (
                    " (pylon emulation needs PYLON_CAMEMU set before pypylon is first imported)"
                    if self.config.emulated
                    else ""
                )
                raise NotConnected(f"basler camera: no {kind} camera found; seen: {seen}{hint}")
            return usable[0]
        for info in usable:
            if info.GetSerialNumber() == self.config.serial:
                return info
        raise NotConnected(
            f"basler camera: no {kind} camera with serial {self.config.serial!r}; seen: {seen}"
        )

    def _setup_trigger(self, camera: Any) -> None:
        # One frame per ExecuteSoftwareTrigger: FrameStart on SFNC cameras, AcquisitionStart on
        # some older models that have no FrameStart trigger.
        selectors = camera.TriggerSelector.Symbolics
        camera.TriggerSelector.Value = (
            "FrameStart" if "FrameStart" in selectors else "AcquisitionStart"
        )
        camera.TriggerMode.Value = "On"
        camera.TriggerSource.Value = "Software"
        camera.AcquisitionMode.Value = "Continuous"
        # Auto exposure/gain would silently overwrite the values written into the dataset.
        for auto in ("ExposureAuto", "GainAuto"):
            node = camera.GetNodeMap().GetNode(auto)
            if node.IsValid() and node.IsWritable():
                node.Value = "Off"

    def close(self) -> None:
        """Stop grabbing and release the camera (idempotent; errors while closing are ignored)."""
        camera, self._camera = self._camera, None
        if camera is None:
            return
        _, genicam = load_pylon(emulated=False)
        # Closing must always succeed: a camera unplugged mid-session still has to be released.
        with contextlib.suppress(genicam.GenericException):
            if camera.IsGrabbing():
                camera.StopGrabbing()
        with contextlib.suppress(genicam.GenericException):
            camera.Close()
        with contextlib.suppress(genicam.GenericException):
            camera.DestroyDevice()

    # ------------------------------------------------------------------ who and how

    def identity(self) -> DeviceIdentity:
        """Model, serial and firmware as the camera reports them.

        Raises:
            NotConnected: the camera is not open.
        """
        require_open(self._camera, self._name)
        return DeviceIdentity(
            kind="camera",
            driver="basler",
            model=self._model,
            serial=self._serial,
            firmware=self._firmware,
            endpoint=self._device_class,
        )

    def status(self) -> DeviceStatus:
        """Open/closed, and the current format, size, exposure and gain."""
        if self._camera is None:
            return DeviceStatus("closed", {"camera": self.config.serial or "(first found)"})
        camera = self._camera
        with pylon_errors(self._name, "reading status"):
            details: dict[str, Any] = {
                "camera": f"{self._model} {self._serial}",
                "pixel_format": self._pixel_format,
                "device_pixel_format": camera.PixelFormat.Value,
                "width": int(camera.Width.Value),
                "height": int(camera.Height.Value),
                "exposure_us": self._exposure_us,
                "gain_db": self._gain_db if self._gain_feature else "unsupported (no dB gain)",
                "trigger": f"{camera.TriggerSelector.Value}/{camera.TriggerSource.Value}",
            }
            state = "grabbing" if camera.IsGrabbing() else "ready"
        return DeviceStatus(state, details)

    # ------------------------------------------------------------------ settings

    def configure(
        self,
        *,
        exposure_us: float | None = None,
        gain_db: float | None = None,
        pixel_format: str | None = None,
    ) -> None:
        """Set pixel format, exposure and gain (each only when given), and read them back.

        The configured limits are checked before anything is written; each value is then checked
        against the camera's own range (which can depend on the pixel format) just before it is
        written, so a refused value leaves that feature untouched.

        Raises:
            NotConnected: the camera is not open.
            SafetyError: a value is outside the configured limits or the camera's own range.
            ConfigError: unknown pixel format, or one the camera lacks; gain asked of a camera
                without a dB gain feature.
            DeviceFault: the camera refused a value.
            TransportError: pylon failed to talk to the camera.
        """
        camera = require_open(self._camera, self._name)
        check_exposure_gain(
            self.config, exposure_us, gain_db, name=self._name, max_gain_db=self.config.max_gain_db
        )
        with pylon_errors(self._name, "configuring"):
            if pixel_format is not None:
                # Before exposure and gain: their ranges can depend on the pixel format.
                self._set_pixel_format(camera, pixel_format)
            exposure_feature = _first_writable(camera, _EXPOSURE_FEATURES)
            if exposure_feature is None:
                raise ConfigError(f"{self._name}: camera has no writable exposure feature")
            if exposure_us is not None:
                _set_checked(self._name, camera, exposure_feature, exposure_us, "exposure", "µs")
            # Frames carry what the camera reports, after its own rounding, not what was asked.
            self._exposure_us = _read_float(camera, exposure_feature)
            self._gain_feature = _first_writable(camera, _GAIN_FEATURES)
            if gain_db is not None:
                self._set_gain(camera, gain_db)
            if self._gain_feature is not None:
                self._gain_db = _read_float(camera, self._gain_feature)

    def _set_pixel_format(self, camera: Any, pixel_format: str) -> None:
        choices = get_args(PixelFormat)
        if pixel_format not in choices:
            raise ConfigError(
                f"{self._name}: pixel format {pixel_format!r} is not one of {list(choices)}"
            )
        offered = camera.PixelFormat.Symbolics
        device_name = next((n for n in _DEVICE_FORMATS[pixel_format] if n in offered), None)
        if device_name is None:
            raise ConfigError(
                f"{self._name}: camera does not offer {pixel_format}; it offers {list(offered)}"
            )
        if camera.PixelFormat.Value == device_name:
            self._pixel_format = pixel_format
            return
        # PixelFormat is locked while the stream runs.
        was_grabbing = camera.IsGrabbing()
        if was_grabbing:
            camera.StopGrabbing()
        camera.PixelFormat.Value = device_name
        self._pixel_format = pixel_format
        if was_grabbing:
            self._start_grabbing(camera)

    def _set_gain(self, camera: Any, gain_db: float) -> None:
        if self._gain_feature is None:
            if gain_db == 0.0:
                # No dB gain to set (GainRaw only); 0 dB is "leave the gain alone", not an error.
                return
            raise ConfigError(
                f"{self._name}: camera has no gain feature in dB (only camera-specific GainRaw); "
                f"cannot set {gain_db} dB"
            )
        selector = camera.GetNodeMap().GetNode("GainSelector")
        if selector.IsValid() and selector.IsWritable() and "All" in selector.Symbolics:
            selector.Value = "All"
        _set_checked(self._name, camera, self._gain_feature, gain_db, "gain", "dB")

    # ------------------------------------------------------------------ grabbing

    def _start_grabbing(self, camera: Any) -> None:
        pylon, _ = load_pylon(emulated=False)
        # OneByOne with a software trigger: the only frame in the queue is the one we triggered.
        camera.StartGrabbing(pylon.GrabStrategy_OneByOne)

    def _flush(self, camera: Any) -> None:
        # A frame that arrives after we gave up must not be handed to the next grab() as fresh:
        # restarting the stream discards every queued and in-flight buffer.
        _, genicam = load_pylon(emulated=False)
        with contextlib.suppress(genicam.GenericException):
            camera.StopGrabbing()

    def default_timeout_s(self) -> float:
        """The grab timeout used when none is given: the configured one plus the exposure time."""
        exposure_s = 0.0 if math.isnan(self._exposure_us) else self._exposure_us / 1e6
        return self.config.grab_timeout_s + exposure_s

    def grab(self, timeout_s: float | None = None) -> Frame:
        """Fire one software trigger and return the frame it produced.

        Raises:
            NotConnected: the camera is not open.
            ConfigError: a negative timeout.
            DeviceTimeout: the camera was not ready for a trigger, or no frame came, in time.
            TransportError: the frame arrived damaged (incomplete transfer), or pylon failed.
        """
        camera = require_open(self._camera, self._name)
        timeout = self.default_timeout_s() if timeout_s is None else timeout_s
        if timeout < 0:
            raise ConfigError(f"{self._name}: grab timeout must be >= 0 s, got {timeout}")
        pylon, _ = load_pylon(emulated=False)
        deadline = time.monotonic() + timeout
        with pylon_errors(self._name, "grabbing"):
            if not camera.IsGrabbing():
                self._start_grabbing(camera)
            if not camera.WaitForFrameTriggerReady(_ms(timeout), pylon.TimeoutHandling_Return):
                self._flush(camera)
                raise DeviceTimeout(
                    f"{self._name}: not ready for a software trigger within {timeout:.3f} s"
                )
            camera.ExecuteSoftwareTrigger()
            result = camera.RetrieveResult(
                _ms(deadline - time.monotonic()), pylon.TimeoutHandling_Return
            )
            arrived_s = time.time()
            if not result.IsValid():
                self._flush(camera)
                raise DeviceTimeout(f"{self._name}: no frame within {timeout:.3f} s of trigger")
            try:
                if not result.GrabSucceeded():
                    raise TransportError(
                        f"{self._name}: grab failed: {result.GetErrorDescription()} "
                        f"(code 0x{result.GetErrorCode():08x})"
                    )
                image = to_image(result.Array, self._pixel_format)
            finally:
                result.Release()
        return Frame(
            image=image,
            exposure_us=self._exposure_us,
            gain_db=self._gain_db,
            pixel_format=self._pixel_format,
            camera=f"{self._model} {self._serial}",
            timestamp_s=arrived_s,
        )


def _ms(seconds: float) -> int:
    return max(0, int(seconds * 1000))


def _first_writable(camera: Any, names: tuple[str, ...]) -> str | None:
    nodemap = camera.GetNodeMap()
    for name in names:
        node = nodemap.GetNode(name)
        if node.IsValid() and node.IsWritable():
            return name
    return None


def _read_string(camera: Any, *names: str) -> str:
    nodemap = camera.GetNodeMap()
    for name in names:
        node = nodemap.GetNode(name)
        if node.IsValid() and node.IsReadable():
            return str(node.ToString())
    return ""


def _read_float(camera: Any, name: str) -> float:
    return float(camera.GetNodeMap().GetNode(name).Value)


def _set_checked(device: str, camera: Any, name: str, value: float, what: str, unit: str) -> None:
    """Write a float feature after checking it against the camera's own range.

    Raises:
        SafetyError: the value is outside the feature's current min/max; nothing was written.
    """
    node = camera.GetNodeMap().GetNode(name)
    low, high = float(node.Min), float(node.Max)
    if not low <= value <= high:
        raise SafetyError(
            f"{device}: {what} {value} {unit} is outside the camera's range "
            f"{low}..{high} {unit} ({name}); nothing was sent"
        )
    node.Value = value
