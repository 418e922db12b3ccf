"""Reading rig configuration files: YAML → validated RigConfig, errors as one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from rig.config import presets
from rig.config.rig_config import RigConfig
from rig.errors import ConfigError


def describe_validation_error(error: ValidationError) -> str:
    """One line naming the first bad field, its value and what is wrong."""
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        return f"{location}: unknown key"
    value = first.get("input")
    shown = repr(value)
    if len(shown) > 60 or isinstance(value, dict):
        return f"{location}: {message}"
    return f"{location}: {message} (got {shown})"


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
        ConfigError: the file is missing, not YAML, or invalid (one line).
    """
    given = path
    path = presets.resolve(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(presets.missing_message(given, "config")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from exc
    return parse_config(data, source=str(path))


def config_json_schema() -> dict[str, Any]:
    """The JSON schema of RigConfig."""
    return RigConfig.model_json_schema()
