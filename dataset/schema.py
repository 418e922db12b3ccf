"""The schema of every file of a dataset (format version 1) as pydantic models.

Each model allows extra fields: the writer adds fields over time (`flatfield`, catalog
`source`) and users add their own, and a dataset written before a field existed must still read.
Fields are optional where some line of the format lacks them (a catalog line has no shot or
angle); which keys each role must carry is `CAPTURE_KEYS` and `CATALOG_KEYS`. Numbers are
accepted where text is expected (a coin id written as 7 reads as "7"), as readers always did;
NaN and infinities are not numbers of the format (JSON has none, the writer writes none).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from dataset.layout import FORMAT, VERSION

#: the keys a capture's metadata line carries (docs/dataset-format.md)
CAPTURE_KEYS: tuple[str, ...] = (
    "file_name",
    "coin_id",
    "side",
    "role",
    "session_id",
    "shot",
    "turntable_deg",
    "tilt_deg",
    "light",
    "lights",
    "exposure_us",
    "gain_db",
    "camera",
    "width",
    "height",
    "pixel_format",
    "captured_at",
    "sha256",
)
#: the keys a reference image's (role catalog) metadata line carries
CATALOG_KEYS: tuple[str, ...] = ("file_name", "coin_id", "side", "role", "sha256")


class _Line(BaseModel):
    """Base of the format's records: extra fields kept, numbers read as text where text is due."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True, allow_inf_nan=False)


class DatasetInfo(_Line):
    """dataset.json: which format and version the folder holds, when and by what it was made."""

    format: str = FORMAT
    version: int = VERSION
    created: str | None = None
    software: str | None = None
    # the collection its coins belong to unless their coins.jsonl line names one (see
    # dataset.reader.collection_of): coin ids are unique within a collection, not across
    collection: str | None = None


class CoinLine(_Line):
    """A coins.jsonl line: one physical coin and what is known of it."""

    coin_id: str
    collection: str | None = None
    ruler: str | None = None
    type: str | None = None
    catalog_ref: str | None = None
    notes: str | None = None
    ruler_index: int | None = None  # simulated coins: integer labels, names can repeat
    type_index: int | None = None


class FlatFieldNote(_Line):
    """A capture's note on flat-field correction: applied or why not, and which calibration."""

    applied: bool
    calibration: str | None = None
    gamma: float | None = None
    reason: str | None = None


class SimTruth(_Line):
    """The digital twin's ground truth at the moment of a simulated grab."""

    coin: str | None = None
    side: str | None = None
    true_angle_deg: float | None = None
    turntable_deg: float | None = None
    lights: dict[str, float] | None = None
    tilt_deg: float | None = None
    target: str | None = None


class MetadataLine(_Line):
    """A metadata.jsonl line: one image file, what it shows and how it was taken."""

    file_name: str
    coin_id: str
    side: str | None = None
    role: str | None = None
    session_id: str | None = None
    shot: int | None = None
    turntable_deg: float | None = None
    tilt_deg: float | None = None
    light: str | None = None
    lights: dict[str, float] | None = None
    exposure_us: float | None = None
    gain_db: float | None = None
    camera: str | None = None
    width: int | None = None
    height: int | None = None
    pixel_format: str | None = None
    captured_at: str | None = None
    reference: bool | None = None
    flatfield: FlatFieldNote | None = None
    sim: SimTruth | None = None
    source: str | None = None  # catalog images: what made or supplied the picture
    catalog_ref: str | None = None
    sha256: str | None = None


class TurntableCalibration(_Line):
    """The turntable calibration a session used: where the axis is in the image, which way."""

    centre_px: tuple[float, float]
    rotation_sign: int = 1
    zero_offset_deg: float | None = None
    px_per_mm: float | None = None
    width: int | None = None
    height: int | None = None
    file: str | None = None
    created: str | None = None
    age_days: float | None = None

    @property
    def sense(self) -> int:
        """+1 when positive turntable angles turn the coin counter-clockwise in the image."""
        return -1 if self.rotation_sign < 0 else 1


class SessionCalibration(_Line):
    """A session record's calibration: per kind (camera, turntable, ...) the record used."""

    turntable: TurntableCalibration | None = None


class SessionCoin(_Line):
    """A coin of a session record's `coins`: which coin, from which tray slot."""

    coin_id: str
    slot: int | None = None


class MissingShot(_Line):
    """A shot of a session record's `missing`: planned, not on disk, and why."""

    file_name: str
    coin_id: str | None = None
    shot: int | None = None
    reason: str | None = None


class SessionRecord(_Line):
    """The part of sessions/SESSION_ID.json a dataset reader relies on; the rest stays as is.

    Its `plan` is a capture.plan.Plan, which only capture can check (verify does).
    """

    session_id: str | None = None
    status: str | None = None
    calibration: SessionCalibration | None = None
    image_format: str | None = None
    coins: list[SessionCoin] | None = None
    missing: list[MissingShot] | None = None


def field_errors(exc: ValidationError, *, absent: bool = True) -> list[str]:
    """A validation error as one short text per field (`turntable_deg: Input should be ...`).

    `absent=False` leaves out the keys that are missing (a role's required keys are checked
    apart, with the role in mind).
    """
    return [
        f"{'.'.join(str(part) for part in error['loc']) or 'line'}: {error['msg']}"
        for error in exc.errors()
        if absent or error["type"] != "missing"
    ]


def type_errors(line: dict[str, Any]) -> list[str]:
    """What is of the wrong type in a metadata line, one text per field (absent keys aside)."""
    try:
        MetadataLine.model_validate(line)
    except ValidationError as exc:
        return field_errors(exc, absent=False)
    return []
