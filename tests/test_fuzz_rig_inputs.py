"""Fuzz the `rig` command's inputs: rig configs, capture plans and tray files, damaged at random.

Each example damages one input (bytes flipped, cut or inserted; one YAML value swapped for a
hostile one or deleted; a subtree aliased elsewhere; deep nesting or an alias bomb added; tray
rows of random slots, ids, quotes and encodings) and runs it through the CLI runner on the
cheap paths: `rig config validate`, `rig capture --coin ... --dry-run` (config and plan) and
`rig capture --tray ... --dry-run`. Allowed: success, or exit 2 with one `error:` line as the
last line. Never a traceback, never a changed input, never a file written.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from capture.plans import __file__ as plans_init
from pipeline.rig_cli.app import app
from rig.config.presets import preset_path

runner = CliRunner()
SIM = preset_path("sim")
assert SIM is not None
CONFIG_TEXT = SIM.read_text()
PLAN_TEXT = (Path(plans_init).parent / "standard.yaml").read_text()
TRAY_TEXT = "slot,coin_id\n0,SIM-0001\n1,SIM-0002\n5,SIM-0007\n"


def _bomb(levels: int) -> list[Any]:
    """Nested lists sharing their items: safe_dump writes them as anchors and aliases."""
    value: list[Any] = ["lol"] * 9
    for _ in range(levels - 1):
        value = [value] * 9
    return value


HOSTILE: list[Any] = [
    None, True, False, 0, -1, 1, 7, 10**30, -(10**30), 0.5, -0.0, 1e308, -1e308,
    float("nan"), float("inf"), float("-inf"), "", "x", "²", "٣", "../../etc", "/dev/zero",
    "x" * 5000, [], [1, 2], ["x"], [[[[]]]], {}, {"a": 1}, {"driver": "grbl"}, _bomb(4),
    _bomb(7),
]  # fmt: skip
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a YAML value (the value itself is the empty path)."""
    paths = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            paths += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:6]):
            paths += _paths(item, (*prefix, index))
    return paths


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


def _set(value: Any, path: tuple[Any, ...], new: Any, delete: bool) -> Any:
    if not path:
        return new
    parent = _get(value, path[:-1])
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return value


def _mutate_yaml(text: str, data: st.DataObject) -> bytes:
    """The YAML text damaged one way; returns the bytes to write."""
    how = data.draw(
        st.sampled_from(["value", "alias", "deep", "flip", "cut", "insert"]), label="how"
    )
    raw = text.encode()
    if how in ("flip", "cut", "insert"):
        return _mutate_bytes(raw, how, data.draw)
    doc = yaml.safe_load(text)
    paths = _paths(doc)
    path = paths[data.draw(st.integers(0, len(paths) - 1), label="path")]
    if how == "value":
        new = data.draw(st.sampled_from(HOSTILE), label="value")
        doc = _set(doc, path, new, delete=data.draw(st.booleans(), label="delete"))
    elif how == "alias" and path:
        # the same object at two places: safe_dump writes an anchor and an alias
        other = paths[data.draw(st.integers(0, len(paths) - 1), label="other")]
        doc = _set(doc, path, _get(doc, other), delete=False)
    else:  # nesting past the limit, or just under it, at the end of the file
        depth = data.draw(st.sampled_from([10, 63, 64, 65, 1000, 20000]), label="depth")
        return raw + f"\nname: {'[' * depth}{']' * depth}\n".encode()
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False).encode()


def _mutate_bytes(raw: bytes, how: str, draw: Any) -> bytes:
    """`raw` cut, with one byte flipped, or with junk inserted; `draw` draws from a strategy."""
    at = draw(st.integers(0, max(0, len(raw) - 1)), label="at")
    if how == "cut":
        return raw[:at]
    if how == "flip" and raw:
        flipped = raw[at] ^ draw(st.integers(1, 255), label="xor")
        return raw[:at] + bytes([flipped]) + raw[at + 1 :]
    return raw[:at] + draw(st.binary(min_size=1, max_size=16), label="junk") + raw[at:]


_SLOTS = st.one_of(
    st.integers(0, 30).map(str),
    st.sampled_from(["²", "٣", "３", "-1", "+1", "1.0", " 2 ", "", "slot", "9" * 7, "0x1"]),
)
_COINS = st.one_of(
    st.from_regex(r"SIM-000[0-9]", fullmatch=True),
    st.sampled_from(["", "../x", "a/b", "SIM 1", "x" * 70, "ÄÖÜ", '"SIM-0001"', "#c"]),
    st.text(max_size=8),
)


@st.composite
def _tray_bytes(draw: st.DrawFn) -> bytes:
    """A tray file: random rows of slots and ids, maybe a BOM, CRLF, latin-1 or junk."""
    rows = draw(st.lists(st.tuples(_SLOTS, _COINS), max_size=6))
    extra = draw(st.sampled_from(["", ",", ",note", '"', "\x00"]))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    header = draw(st.sampled_from(["", "slot,coin_id" + newline, "# tray" + newline]))
    text = header + newline.join(f"{slot},{coin}{extra}" for slot, coin in rows) + newline
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    raw = text.encode(encoding, errors="replace")
    if draw(st.booleans()):
        return _mutate_bytes(raw, draw(st.sampled_from(["flip", "cut", "insert"])), draw)
    return raw


def _files(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _check(args: list[str], root: Path, context: str) -> None:
    """Run one command on the files under `root`: success or one line, nothing written."""
    before = _files(root)
    result = runner.invoke(app, args)
    after = _files(root)
    context = f"{context}\n{result.output[-2000:]}"
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{context}\n{result.exception!r}"
    )
    assert "Traceback" not in result.output, context
    assert result.exit_code in (0, 2), context
    if result.exit_code == 2:
        lines = [line for line in result.output.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        assert len(errors) == 1 and lines[-1] == errors[0], context
    assert after == before, f"files changed or written: {context}"


@SETTINGS
@given(data=st.data())
def test_damaged_rig_configs_give_success_or_one_line(data: st.DataObject) -> None:
    content = _mutate_yaml(CONFIG_TEXT, data)
    command = data.draw(st.sampled_from(["validate", "dry-run"]), label="command")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = root / "rig.yaml"
        config.write_bytes(content)
        if command == "validate":
            args = ["config", "validate", str(config)]
        else:
            args = ["capture", "--coin", "SIM-0001", "--config", str(config), "--plan", "quick"]
            args += ["--dry-run", "--out", str(root / "never")]
        _check(args, root, f"{command} with a damaged config")


@SETTINGS
@given(data=st.data())
def test_damaged_plans_give_success_or_one_line(data: st.DataObject) -> None:
    content = _mutate_yaml(PLAN_TEXT, data)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plan = root / "plan.yaml"
        plan.write_bytes(content)
        args = ["capture", "--coin", "SIM-0001", "--config", "sim", "--plan", str(plan)]
        _check([*args, "--dry-run", "--out", str(root / "never")], root, "a damaged plan")


@SETTINGS
@given(content=_tray_bytes())
def test_random_tray_files_give_success_or_one_line(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tray = root / "tray.csv"
        tray.write_bytes(content)
        args = ["capture", "--tray", str(tray), "--config", "sim", "--plan", "quick"]
        _check([*args, "--dry-run", "--out", str(root / "never")], root, f"tray {content!r}")


def test_the_tray_fuzz_reaches_success_too() -> None:
    # the strategies are not all refusals: an undamaged tray runs
    with tempfile.TemporaryDirectory() as tmp:
        tray = Path(tmp) / "tray.csv"
        tray.write_text(TRAY_TEXT)
        result = runner.invoke(
            app, ["capture", "--tray", str(tray), "--plan", "quick", "--dry-run"]
        )
        assert result.exit_code == 0, result.output
