"""Output paths, checked before any long work starts and before anything is written.

An output folder is new, empty, or already holds output of the same kind (a run to resume or
retrain, an index to extend); anything else (a dataset, a home folder, another command's
output) is refused, so a typo in `--out` cannot scatter files into it. Writability is checked
up front, so an unwritable `--out` is refused before an hour of image loading, not after.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

from training.errors import OutputPathError


def check_output_folder(
    path: Path, what: str, holds_kind: Callable[[Path], bool] | None = None
) -> None:
    """Refuse an output folder that is not new, empty or `holds_kind`, or cannot be written.

    `what` names the kind for the message ("a training run", "an index").

    Raises:
        OutputPathError: a file (or a broken link) is in the way, the folder holds other
            things, or it (or the nearest existing folder above it) is not writable.
    """
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise OutputPathError(f"{path} exists and is not a folder")
        if any(path.iterdir()) and not (holds_kind is not None and holds_kind(path)):
            raise OutputPathError(
                f"{path} is not empty and does not hold {what}; give a new or empty folder"
            )
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputPathError(f"cannot write in {path}")
        return
    _check_creatable(path)


def _check_creatable(path: Path) -> None:
    """Refuse a path whose nearest existing ancestor is not a writable folder."""
    parent = path.absolute().parent
    while not (parent.exists() or parent.is_symlink()):
        parent = parent.parent
    if not parent.is_dir():
        raise OutputPathError(f"cannot create {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot create {path}: {parent} is not writable")


def check_output_image(path: Path, option: str, inputs: Sequence[Path] = ()) -> None:
    """Refuse an image output path Pillow cannot write, that cannot be created, or is an input.

    Raises:
        OutputPathError: unknown or read-only image type, a folder in the way, an unwritable
            folder, or the same file as one of `inputs`.
    """
    Image.init()
    kind = Image.registered_extensions().get(path.suffix.lower())
    if kind is None or kind not in Image.SAVE:
        raise OutputPathError(
            f"{option} {path}: unknown image type {path.suffix or '(none)'!r}; use .png or .jpg"
        )
    if path.is_dir():
        raise OutputPathError(f"{option} {path} is a folder")
    if path.exists():
        if any(p.exists() and path.samefile(p) for p in inputs):
            raise OutputPathError(f"{option} {path} is one of the input photos")
        if not os.access(path, os.W_OK):
            raise OutputPathError(f"cannot write {path}")
        return
    _check_creatable(path)


def holds_files(suffixes: Sequence[str]) -> Callable[[Path], bool]:
    """A `holds_kind` test: every entry of the folder is a file with one of `suffixes`."""

    def test(folder: Path) -> bool:
        return all(p.is_file() and p.suffix.lower() in suffixes for p in folder.iterdir())

    return test
