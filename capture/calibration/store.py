"""The calibration folder: one sub-folder per device, one JSON record (+ .npy) per fit.

Layout: `FOLDER/RIG_SERIAL/KIND-YYYYMMDDTHHMMSSZ.json`, arrays beside it as
`KIND-YYYYMMDDTHHMMSSZ.NAME.npy`, and an optional overlay PNG showing what was fitted. Files are
written to a temporary name and renamed, arrays first, so a record never points at a missing
array. The newest record of a kind is the one in use; it is stale after `max_age_days`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
from pydantic import ValidationError

from capture.calibration.models import KINDS, CalibrationRecord, DeviceKey, Kind
from rig.config import RigConfig
from rig.devices import DeviceIdentity
from rig.errors import ConfigError


class CalibrationError(ConfigError):
    """A calibration that cannot be made, read or trusted (one line, names the file or fit)."""


@dataclass(frozen=True)
class StoredCalibration:
    """A record as found on disk, with its path."""

    path: Path
    record: CalibrationRecord

    @property
    def name(self) -> str:
        """The record's path relative to the calibration folder (`RIG_SERIAL/KIND-STAMP.json`)."""
        return f"{self.path.parent.name}/{self.path.name}"

    def array(self, name: str) -> np.ndarray:
        """Load an array stored beside the record.

        Raises:
            CalibrationError: the array file is missing or unreadable.
        """
        path = self.path.parent / name
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CalibrationError(f"{path}: cannot read calibration array: {exc}") from exc


def device_key(config: RigConfig, camera: DeviceIdentity) -> DeviceKey:
    """The key of this rig's calibrations: rig name and the camera's identity."""
    return DeviceKey(
        rig=config.name,
        camera_serial=camera.serial or camera.endpoint or "unknown",
        camera_model=camera.model,
        camera_driver=camera.driver,
    )


class CalibrationStore:
    """Reads and writes calibration records under one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def save(
        self,
        record: CalibrationRecord,
        arrays: dict[str, np.ndarray] | None = None,
        overlay: np.ndarray | None = None,
    ) -> StoredCalibration:
        """Write a record (and its arrays and overlay) atomically; returns where it went.

        Arrays are keyed by the file names the result refers to them by (e.g.
        `flatfield-STAMP.diffuse.npy`), so the record and its arrays always agree.

        Raises:
            CalibrationError: a record of this kind and second already exists.
        """
        folder = self.folder / record.device.folder_name
        folder.mkdir(parents=True, exist_ok=True)
        stem = self.stem(record)
        if (folder / f"{stem}.json").exists():
            # file names carry the second: never overwrite a calibration someone may be using
            raise CalibrationError(f"{folder / stem}.json exists; wait a second and run it again")
        for name, array in (arrays or {}).items():
            _atomic(folder / name, _npy_writer(array))
        if overlay is not None:
            ok, png = cv2.imencode(".png", overlay)
            if ok:
                data = png.tobytes()
                _atomic(folder / f"{stem}.overlay.png", lambda path: path.write_bytes(data))
        text = record.model_dump_json(indent=2)
        path = folder / f"{stem}.json"
        _atomic(path, lambda p: p.write_text(text + "\n", encoding="utf-8"))
        return StoredCalibration(path, record)

    @staticmethod
    def stem(record: CalibrationRecord) -> str:
        """File stem of a record: `KIND-YYYYMMDDTHHMMSSZ`."""
        return f"{record.kind}-{record.created.strftime('%Y%m%dT%H%M%SZ')}"

    def read(self, path: Path) -> StoredCalibration:
        """Read and validate one record.

        Raises:
            CalibrationError: unreadable, not JSON, or not a calibration record of this version.
        """
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CalibrationError(f"{path}: cannot read calibration record: {exc}") from exc
        try:
            return StoredCalibration(path, CalibrationRecord.model_validate(data))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise CalibrationError(
                f"{path}: not a valid calibration record ({where}: {first['msg']})"
            ) from exc

    def list(
        self, *, device: DeviceKey | None = None, kind: Kind | None = None
    ) -> list[StoredCalibration]:
        """Every readable record, oldest first; unreadable files are skipped."""
        if not self.folder.is_dir():
            return []
        folders = (
            [self.folder / device.folder_name]
            if device is not None
            else sorted(p for p in self.folder.iterdir() if p.is_dir())
        )
        found: list[StoredCalibration] = []
        for folder in folders:
            pattern = f"{kind}-*.json" if kind is not None else "*.json"
            for path in sorted(folder.glob(pattern)) if folder.is_dir() else []:
                try:
                    found.append(self.read(path))
                except CalibrationError:
                    continue
        return sorted(found, key=lambda s: (s.record.created, s.path.name))

    def latest(self, device: DeviceKey, kind: Kind) -> StoredCalibration | None:
        """The newest record of a kind for a device, or None."""
        records = self.list(device=device, kind=kind)
        return records[-1] if records else None


@dataclass(frozen=True)
class CalibrationUse:
    """Which calibrations a capture session uses, how old they are, and what is wrong."""

    records: dict[str, StoredCalibration]
    ages_days: dict[str, float]
    warnings: list[str]

    def summary(self) -> dict[str, object]:
        """The JSON for a session record: per kind the file, its date, age and staleness."""
        out: dict[str, object] = {}
        for kind in KINDS:
            stored = self.records.get(kind)
            if stored is None:
                out[kind] = None
                continue
            out[kind] = {
                "file": stored.name,
                "created": stored.record.created.isoformat(),
                "age_days": round(self.ages_days[kind], 3),
                **_inline(stored.record),
            }
        return out


def calibration_in_use(
    store: CalibrationStore, device: DeviceKey, max_age_days: float, now: datetime | None = None
) -> CalibrationUse:
    """The newest record of each kind for a device, with a warning per missing or stale kind."""
    records: dict[str, StoredCalibration] = {}
    ages: dict[str, float] = {}
    warnings: list[str] = []
    for kind in KINDS:
        stored = store.latest(device, kind)
        if stored is None:
            warnings.append(
                f"no {kind} calibration for rig {device.rig!r} camera {device.camera_serial!r} "
                f"in {store.folder}"
            )
            continue
        records[kind] = stored
        ages[kind] = stored.record.age_days(now)
        if ages[kind] > max_age_days:
            warnings.append(
                f"{kind} calibration {stored.name} is {ages[kind]:.1f} days old "
                f"(older than {max_age_days:g} days)"
            )
    return CalibrationUse(records, ages, warnings)


def _inline(record: CalibrationRecord) -> dict[str, object]:
    """Values a dataset reader needs without reading the calibration folder (training)."""
    result = record.result
    if result.kind == "turntable":
        return {
            "centre_px": list(result.centre_px),
            "rotation_sign": result.rotation_sign,
            "zero_offset_deg": result.zero_offset_deg,
            "px_per_mm": result.px_per_mm,
            "width": result.width,
            "height": result.height,
        }
    if result.kind == "camera":
        return {"rms_px": result.rms_px}
    return {}


def _npy_writer(array: np.ndarray) -> Callable[[Path], object]:
    return lambda path: np.save(path, array, allow_pickle=False)


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file in the same folder, then rename into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if path.suffix == ".npy":
        tmp = tmp.with_suffix(".npy")  # np.save appends .npy to names without it
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def calibration_for_rig(config: RigConfig, camera: DeviceIdentity) -> CalibrationUse:
    """The calibrations a capture on this rig uses, from the config's calibration policy."""
    store = CalibrationStore(config.calibration.folder)
    return calibration_in_use(store, device_key(config, camera), config.calibration.max_age_days)
