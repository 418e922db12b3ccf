"""Reading YAML the `rig` command is given, within limits checked before any work is done.

Every YAML file the `rig` command reads (rig configs, capture plans) comes through here. Three
limits hold before a Python object is built, each named in its one-line error with the
environment variable that raises it:

- size: the file's bytes (`COINRIG_MAX_YAML_BYTES`, default 1 MiB), checked from its size
  before reading, and only regular files are read (a FIFO would block, /dev/zero never end);
- depth: how deeply values nest (`COINRIG_MAX_YAML_DEPTH`, default 64, at most 400): deeper
  input recursed until Python's RecursionError;
- values: how many values the document holds once its aliases are expanded
  (`COINRIG_MAX_YAML_NODES`, default 100,000). An alias costs nothing to parse but everything
  downstream (validation, an error message's repr) walks its expansion: nine levels of nine
  aliases ("billion laughs") made `rig config validate` hang. The count is kept while the node
  graph is composed, so a bomb is refused at the alias that crosses the limit.

Explicit tags (`!!bool`, `!!python/...`) are refused, as are integers of over 100 characters:
neither is needed in a config or plan, and both reached PyYAML code that fails with a
KeyError or a ValueError instead of a YAML error.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import Node
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from rig.errors import ConfigError

MAX_BYTES_ENV = "COINRIG_MAX_YAML_BYTES"
MAX_DEPTH_ENV = "COINRIG_MAX_YAML_DEPTH"
MAX_NODES_ENV = "COINRIG_MAX_YAML_NODES"
# A full rig config is about 4 KB and nests 6 levels; a plan of 3,600 angles about 30 KB.
DEFAULT_MAX_BYTES = 1 << 20
DEFAULT_MAX_DEPTH = 64
DEFAULT_MAX_NODES = 100_000
# No quantity in a config or plan needs more digits; longer ints only slow every later step.
MAX_NUMBER_CHARS = 100
_INT_TAG = "tag:yaml.org,2002:int"
# Composing, validating and printing a value recurse once per level; Python stops near 1,000.
HARD_MAX_DEPTH = 400


class YamlError(ConfigError):
    """A file that is not readable YAML (syntax, encoding, a value YAML cannot build)."""


class YamlLimitError(YamlError):
    """A file over one of the limits: size, nesting depth or values after alias expansion."""


def _env_limit(name: str, default: int, ceiling: int | None = None) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    value = int(raw) if raw.isascii() and raw.isdigit() else 0
    if value < 1 or (ceiling is not None and value > ceiling):
        most = f" up to {ceiling}" if ceiling is not None else ""
        raise ConfigError(f"{name}={raw!r}: expected a positive whole number{most}")
    return value


def max_bytes() -> int:
    """The size limit of a YAML file: $COINRIG_MAX_YAML_BYTES, else 1 MiB."""
    return _env_limit(MAX_BYTES_ENV, DEFAULT_MAX_BYTES)


def max_depth() -> int:
    """The nesting limit: $COINRIG_MAX_YAML_DEPTH (at most HARD_MAX_DEPTH), else 64."""
    return _env_limit(MAX_DEPTH_ENV, DEFAULT_MAX_DEPTH, HARD_MAX_DEPTH)


def max_nodes() -> int:
    """The limit on values after alias expansion: $COINRIG_MAX_YAML_NODES, else 100,000."""
    return _env_limit(MAX_NODES_ENV, DEFAULT_MAX_NODES)


def _line(mark: Any) -> str:
    return f" at line {mark.line + 1}" if mark is not None else ""


class _Limits(Composer):
    """A composer that counts depth and expanded values as it builds the nodes.

    PyYAML's composer returns the anchored node itself for an alias, so the node graph stays
    small; what grows is its expansion. Each finished anchored node records how many values it
    expands to and how deep it reaches; an alias adds those to the running totals.
    """

    def start_limits(self, source: str) -> None:
        """Reset the counters; `source` names the file in error messages."""
        self.source = source
        self.max_depth = max_depth()
        self.max_nodes = max_nodes()
        self.depth = 0
        self.deepest = 0
        self.values = 0
        self.sizes: dict[int, tuple[int, int]] = {}  # id(anchored node) → (values, height)

    def _too_deep(self, mark: Any) -> YamlLimitError:
        return YamlLimitError(
            f"{self.source}: YAML nested deeper than {self.max_depth} levels{_line(mark)} "
            f"(set {MAX_DEPTH_ENV} to raise the limit, up to {HARD_MAX_DEPTH})"
        )

    def _count(self, values: int, mark: Any) -> None:
        self.values += values
        if self.values > self.max_nodes:
            raise YamlLimitError(
                f"{self.source}: YAML expands to more than {self.max_nodes:,} values, aliases "
                f"included{_line(mark)} (set {MAX_NODES_ENV} to raise the limit)"
            )

    peek_event: Any  # from the parser this composer is mixed with

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        """The next node, refused past the depth or expanded-values limit."""
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            node = super().compose_node(parent, index)  # refuses an undefined alias
            size = self.sizes.get(id(node))
            if size is None:  # its anchor is still open: the value would contain itself
                raise YamlError(
                    f"{self.source}: alias *{event.anchor}{_line(event.start_mark)} refers to "
                    "a value that contains it"
                )
            values, height = size
            if self.depth + height > self.max_depth:
                raise self._too_deep(event.start_mark)
            self.deepest = max(self.deepest, self.depth + height)
            self._count(values, event.start_mark)
            return node
        tag = getattr(event, "tag", None)
        if tag not in (None, "!"):
            # Explicit tags only reach constructors that fail in their own ways (`!!bool
            # maybe` is a KeyError); coinrig files need none: quotes make a string.
            shown = tag.replace("tag:yaml.org,2002:", "!!")[:40]
            raise YamlError(f"{self.source}: YAML tag {shown}{_line(event.start_mark)} is not used")
        depth = self.depth + 1
        if depth > self.max_depth:
            raise self._too_deep(event.start_mark)
        outer_deepest, first = self.deepest, self.values
        self.depth = self.deepest = depth
        node = super().compose_node(parent, index)
        if node is not None and node.tag == _INT_TAG and len(node.value) > MAX_NUMBER_CHARS:
            # int() of a hex or octal literal has no digit limit, and neither has the
            # validation and the error messages that would later print it
            raise YamlError(
                f"{self.source}: a number of {len(node.value):,} characters"
                f"{_line(event.start_mark)}"
            )
        self._count(1, event.start_mark)
        if getattr(event, "anchor", None) is not None:
            self.sizes[id(node)] = (self.values - first, self.deepest - depth + 1)
        self.depth = depth - 1
        self.deepest = max(outer_deepest, self.deepest)
        return node


class _PythonLoader(_Limits, SafeConstructor, Resolver, Parser, Scanner, Reader):
    """The limits on PyYAML's pure-Python parser (when PyYAML was built without libyaml)."""

    def __init__(self, text: str, source: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.start_limits(source)


_LOADERS: list[type[Any]] = [_PythonLoader]
if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class _CLoader(_Limits, CParser, SafeConstructor, Resolver):
        """The limits on libyaml's parser: events from C, nodes composed (and counted) here.

        Ten times faster than the pure-Python parser (4 ms for the sim config, not 35).
        """

        def __init__(self, text: str, source: str) -> None:
            CParser.__init__(self, text)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            self.start_limits(source)

    _LOADERS.insert(0, _CLoader)


def read_limited(path: Path) -> bytes:
    """The bytes of a regular file no larger than max_bytes().

    Raises:
        FileNotFoundError: there is no such file (the caller words that one).
        YamlError: not a regular file, or unreadable.
        YamlLimitError: over the size limit.
    """
    limit = max_bytes()
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise YamlError(f"{path}: {kind}")
        size = info.st_size
        if size <= limit:
            with path.open("rb") as f:
                data = f.read(limit + 1)
            size = len(data)  # it may have grown since stat
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise YamlError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if size > limit:
        raise YamlLimitError(
            f"{path}: {size:,} bytes is over the YAML size limit of {limit:,} bytes "
            f"(set {MAX_BYTES_ENV} to raise it)"
        )
    return data


def parse(data: bytes | str, source: str) -> Any:
    """The Python value of one YAML document, within the depth and expanded-values limits.

    Raises:
        YamlError: not UTF-8, not YAML, or a value YAML cannot build (one line).
        YamlLimitError: nested too deeply or expanding to too many values.
    """
    if isinstance(data, bytes):
        if len(data) > max_bytes():
            raise YamlLimitError(
                f"{source}: {len(data):,} bytes is over the YAML size limit of "
                f"{max_bytes():,} bytes (set {MAX_BYTES_ENV} to raise it)"
            )
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise YamlError(f"{source}: not UTF-8 (byte {exc.start}); save it as UTF-8") from exc
    loader = None
    try:
        loader = _LOADERS[0](data, source)
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from exc
    except ValueError as exc:
        # What an implicitly typed scalar can still raise once tags are refused: a date like
        # 2024-13-45, an int over Python's 4,300-digit limit.
        raise YamlError(f"{source}: a YAML value cannot be read: {str(exc)[:120]}") from exc
    finally:
        if loader is not None:
            loader.dispose()


def _yaml_error(exc: yaml.YAMLError, source: str) -> YamlError:
    """One line for a parser's error: where, and what."""
    if isinstance(exc, YamlError):
        return exc
    if isinstance(exc, yaml.reader.ReaderError):
        return YamlError(
            f"{source}: not valid YAML: character #x{exc.character:04x} at position "
            f"{exc.position} is not allowed"
        )
    mark = getattr(exc, "problem_mark", None)
    problem = str(getattr(exc, "problem", None) or type(exc).__name__)
    if "maximum nesting depth" in problem:  # libyaml's own limit (1,000), met before ours
        return YamlLimitError(
            f"{source}: YAML nested deeper than {max_depth()} levels{_line(mark)} "
            f"(set {MAX_DEPTH_ENV} to raise the limit, up to {HARD_MAX_DEPTH})"
        )
    return YamlError(f"{source}: not valid YAML{_line(mark)}: {problem[:120]}")


def load_file(path: Path) -> Any:
    """Read and parse a YAML file within every limit.

    Raises:
        FileNotFoundError: there is no such file (the caller words that one).
        YamlError: unreadable, not a regular file, not UTF-8 or not YAML (one line).
        YamlLimitError: over the size, depth or expanded-values limit (one line).
    """
    return parse(read_limited(path), str(path))
