"""Where things live in a dataset folder: format name and version, coin ids, file names.

A file name in the metadata is relative to the dataset root and must stay inside it; a coin id
becomes a folder name, so it is restricted before anything is written or read under it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path, PurePosixPath

FORMAT = "coinrig-dataset"
VERSION = 1
SIDES = ("obverse", "reverse")
ROLES = ("capture", "catalog")
_COIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class DatasetError(Exception):
    """A problem with a dataset folder: locked, wrong format, a write that failed."""


class DatasetFormatError(DatasetError):
    """A file of a dataset that breaks the format: unreadable, not JSON, a value of the wrong type.

    Its message is one line naming the file (and line) and what is wrong with it.
    """


class InvalidCoinId(DatasetError, ValueError):
    """A coin id that could escape the dataset folder or is not allowed by the format."""


def validate_coin_id(coin_id: str) -> str:
    """Return the id if it matches the format's pattern (ASCII, no separators, no `..`).

    Raises:
        InvalidCoinId: with the reason, before anything is written or moved.
    """
    # fullmatch, not match with `$`: `$` would accept a trailing newline.
    if not isinstance(coin_id, str) or not _COIN_ID.fullmatch(coin_id) or ".." in coin_id:
        raise InvalidCoinId(
            f"invalid coin id {coin_id!r}: use 1-64 ASCII letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..'"
        )
    return coin_id


def image_name(coin_id: str, side: str, shot: int, ext: str = "png") -> str:
    """The file name of a capture, relative to the dataset root."""
    validate_coin_id(coin_id)
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    return f"images/{coin_id}/{side}/{shot:04d}.{ext}"


def catalog_name(coin_id: str, side: str, ext: str = "jpg") -> str:
    """The file name of a coin side's reference image (role catalog), relative to the root."""
    validate_coin_id(coin_id)
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    return f"catalog/{coin_id}/{side}.{ext}"


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def safe_relative(file_name: str) -> bool:
    """Whether a metadata file_name is a relative POSIX path that cannot leave the root."""
    path = PurePosixPath(file_name)
    return not path.is_absolute() and ".." not in path.parts and "\\" not in file_name


def resolve(root: Path, file_name: str) -> Path:
    """The path of a metadata file_name under the dataset root.

    Raises:
        DatasetError: the name is absolute, climbs out with `..`, uses a backslash, or leads
            out of the root through a symlink.
    """
    if not safe_relative(file_name):
        raise DatasetError(f"{file_name!r} is not a safe path inside the dataset {root}")
    path = root / file_name
    # A safe name can still pass through a symlink that points anywhere (/etc, /dev/zero).
    if not path.resolve().is_relative_to(root.resolve()):
        raise DatasetError(f"{file_name!r} leads out of the dataset {root} through a symlink")
    return path
