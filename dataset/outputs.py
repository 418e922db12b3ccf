"""Where a command may write: dataset folders and single output files, checked before any write.

A dataset folder given to `rig capture` or `rig simulate` is new, empty, or a well-formed
dataset; anything else (a home folder, a folder of another tool's files, a file, `/`, a folder
inside another dataset) is refused before anything is written in it, so its files are never
taken over or cut. An output file (a rendered view, a contact sheet) needs an image extension
the encoder knows and a place that can be written. Both are refused on a pseudo-filesystem
(/proc, /sys, ...), where a write fails or means something else, and where the nearest
existing folder cannot be written: one line at the start, not a traceback after the work.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Collection
from pathlib import Path

from dataset.layout import DatasetError
from dataset.validate import check_well_formed

#: what cv2.imencode writes on every build (OpenEXR, JPEG 2000 and others are optional)
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
#: filesystems whose files are the kernel's views, not storage
PSEUDO_FILESYSTEMS = frozenset(
    {
        "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts",
        "devtmpfs", "efivarfs", "fusectl", "hugetlbfs", "mqueue", "nsfs", "proc", "pstore",
        "rpc_pipefs", "securityfs", "selinuxfs", "sysfs", "tracefs",
    }
)  # fmt: skip
#: where the processes of `rig simulate --workers` stage a dataset each, inside the dataset
#: they are adopted into (capture.parallel_sim): the one place a dataset may lie in another
STAGING_FOLDER = ".workers"
# What a writer that crashed while creating a folder can leave before dataset.json exists:
# such a folder still counts as empty.
_OWN_LEFTOVERS = (".lock", ".dataset.json.tmp-*")


class OutputPathError(DatasetError):
    """An output path that cannot be used: not a folder, foreign, not writable, bad extension."""


def check_dataset_folder(root: Path) -> None:
    """Refuse a dataset output folder that is not new, empty or a well-formed dataset.

    Raises:
        OutputPathError: a file in the way, a foreign or non-empty folder, a folder inside
            another dataset, a pseudo-filesystem, or nothing writable.
        DatasetFormatError: the folder holds a dataset with a damaged file (NotADataset: its
            dataset.json is not this format's).
    """
    root = Path(root)
    if root.is_symlink() and not root.exists():
        raise OutputPathError(f"{root} is a broken link")
    if root.exists() and not root.is_dir():
        raise OutputPathError(f"{root} exists and is not a folder")
    _check_storage(root)
    outer = next((p for p in root.resolve().parents if (p / "dataset.json").exists()), None)
    if outer is not None and root.resolve().parent != outer / STAGING_FOLDER:
        raise OutputPathError(f"{root} lies inside the dataset {outer}; give a folder outside it")
    if not root.exists():
        _check_creatable(root)
        return
    if (root / "dataset.json").exists() or (root / "dataset.json").is_symlink():
        check_well_formed(root)
    else:
        foreign = [p.name for p in root.iterdir() if not _own_leftover(p.name)]
        if foreign:
            raise OutputPathError(
                f"{root} is not empty and holds no coinrig dataset (no dataset.json); "
                "give a new or empty folder"
            )
    if not os.access(root, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write in {root}")


def check_output_file(path: Path, option: str, suffixes: Collection[str] = IMAGE_SUFFIXES) -> None:
    """Refuse an output file path with another extension, a folder in the way, or unwritable.

    Raises:
        OutputPathError: naming `option`, the path and what is wrong, in one line.
    """
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise OutputPathError(
            f"{option} {path}: unknown extension {path.suffix or '(none)'!r}; "
            f"use one of {', '.join(sorted(suffixes))}"
        )
    if path.is_dir():
        raise OutputPathError(f"{option} {path} is a folder")
    if path.exists() and not path.is_file():
        raise OutputPathError(f"{option} {path} exists and is not a regular file")
    try:
        _check_storage(path)
        # The file is replaced by a rename, so its folder must be writable even if the file is.
        _check_creatable(path)
    except OutputPathError as exc:
        raise OutputPathError(f"{option}: {exc}") from None


def _own_leftover(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in _OWN_LEFTOVERS)


def _nearest_existing(path: Path) -> Path:
    here = path.absolute()
    while not (here.exists() or here.is_symlink()):
        here = here.parent
    return here


def _check_creatable(path: Path) -> None:
    """Refuse a path whose nearest existing folder above it is not a writable folder."""
    parent = _nearest_existing(path.absolute().parent)
    if not parent.is_dir():
        raise OutputPathError(f"cannot create {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot create {path}: {parent} is not writable")


def _check_storage(path: Path) -> None:
    """Refuse a path on a pseudo-filesystem (/proc, /sys, /dev on most systems)."""
    kind = filesystem_type(_nearest_existing(path))
    if kind in PSEUDO_FILESYSTEMS:
        raise OutputPathError(f"{path} is on a {kind} pseudo-filesystem, not storage")


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem `path` lies on (from /proc/mounts), None where unknown."""
    try:
        mounts = Path("/proc/mounts").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None  # not Linux: no pseudo-filesystem check
    target = path.resolve()
    best: tuple[int, str] | None = None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = Path(_unescape(fields[1]))
        if target == point or point in target.parents:
            depth = len(point.parts)
            if best is None or depth >= best[0]:  # the last mount of a point is on top
                best = (depth, fields[2])
    return best[1] if best else None


def _unescape(field: str) -> str:
    r"""A /proc/mounts field with its octal escapes (`\040` for a space) decoded."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field
