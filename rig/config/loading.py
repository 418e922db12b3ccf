"""Reading rig configuration files: YAML → validated RigConfig, errors as one line."""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rig.config import presets, safe_yaml
from rig.config.rig_config import RigConfig
from rig.errors import ConfigError

# An error line shows at most this much of a bad value, a message or a key.
SHOWN_CHARS = 60
# reprlib walks at most this much of a value: a field may hold an alias bomb's expansion.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 2, SHOWN_CHARS, SHOWN_CHARS, 40


def _clip(text: str, limit: int = SHOWN_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_validation_error(error: ValidationError) -> str:
    """One line naming the first bad field, its value and what is wrong.

    The value is shown bounded (reprlib, then clipped): the repr of a large or aliased value
    once took minutes, and of a huge int raises.
    """
    first = error.errors(include_url=False)[0]
    location = ".".join(_clip(str(part), 40) for part in first["loc"]) or "(top level)"
    message = _clip(" ".join(str(first["msg"]).split()), 4 * SHOWN_CHARS)
    if first["type"] == "extra_forbidden":
        return f"{location}: unknown key"
    value = first.get("input")
    if isinstance(value, dict):
        return f"{location}: {message}"
    try:
        shown = _REPR.repr(value)
    except ValueError:  # an int too long to print
        return f"{location}: {message}"
    return f"{location}: {message} (got {_clip(shown)})"


def parse_config(data: Any, *, source: str = "config") -> RigConfig:
    """Validate a parsed YAML/JSON mapping into a RigConfig.

    Raises:
        ConfigError: one line naming the bad field and value.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return RigConfig.model_validate(data)
    except ValidationError as exc:
        extra = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{source}: {describe_validation_error(exc)}{extra}") from exc


def load_config(path: Path | str) -> RigConfig:
    """Read and validate a YAML rig configuration file, or a shipped one by name (`sim`).

    Raises:
        ConfigError: the file is missing, not YAML, over a limit of `safe_yaml`, or invalid
            (one line).
    """
    given = path
    path = presets.resolve(path)
    try:
        data = safe_yaml.load_file(path)
    except FileNotFoundError:
        raise ConfigError(presets.missing_message(given, "config")) from None
    return parse_config(data, source=str(path))


def config_json_schema() -> dict[str, Any]:
    """The JSON schema of RigConfig."""
    return RigConfig.model_json_schema()
