"""Configuration files shipped inside the package, found by name: `--config sim`, `--plan quick`.

They are package data (importlib.resources), so the defaults work from any folder and from a
plain `pip install` of a wheel, not only from a checkout. A name is a file stem in a preset
package (`sim` → rig/config/presets/sim.yaml); a value that names an existing file is that file.
Imports nothing of the project.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

SUFFIX = ".yaml"


def preset_names(package: str = __name__) -> list[str]:
    """The names of the YAML files shipped in `package`, sorted."""
    return sorted(
        entry.name.removesuffix(SUFFIX)
        for entry in files(package).iterdir()
        if entry.name.endswith(SUFFIX)
    )


def preset_path(name: str, package: str = __name__) -> Path | None:
    """The shipped file called `name` (with or without .yaml) in `package`, or None."""
    if "/" in name or "\\" in name or name in ("", ".", ".."):
        return None
    stem = name.removesuffix(SUFFIX)
    if stem not in preset_names(package):
        return None
    # Installed packages are folders on disk (setuptools, editable or wheel), never zips here.
    return Path(str(files(package).joinpath(stem + SUFFIX)))


def resolve(value: Path | str, package: str = __name__) -> Path:
    """An existing file as given, else the preset of that name, else the value unchanged."""
    path = Path(value)
    if path.is_file():
        return path
    return preset_path(str(value), package) or path


def missing_message(value: Path | str, noun: str, package: str = __name__) -> str:
    """One line for a file that is neither a file nor a preset, listing the presets."""
    return f"{value}: no such {noun} file (or preset: {', '.join(preset_names(package))})"
