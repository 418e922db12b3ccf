"""Hostile input to the `rig` command's configs, plans and tray files, and to `--meta` CSVs
(issue 17): one line and exit 2, never a traceback, a hang or a useless success.

Each test here failed on the code before the fix (a RecursionError or KeyError traceback, an
alias bomb or oversized file accepted without naming a limit, `angles_deg: []` run as 0 shots,
infinite bounds accepted, a tray slot `²` crashing int(), a spreadsheet's BOM refused), except
those marked as guards of behaviour that was already right. Before the fix the FIFO and
/dev/zero cases hung or read until memory ran out.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field, ValidationError
from typer.testing import CliRunner, Result

from capture.plan import MAX_SHOTS_PER_COIN
from capture.tray import MAX_LINE_CHARS, MAX_ROWS, MAX_TRAY_BYTES
from pipeline.rig_cli.app import app
from rig.config import describe_validation_error, load_config, safe_yaml
from rig.config.presets import preset_path
from rig.config.safe_yaml import (
    DEFAULT_MAX_BYTES,
    MAX_BYTES_ENV,
    MAX_DEPTH_ENV,
    MAX_NODES_ENV,
)
from training.catalog import MAX_META_BYTES_ENV, read_meta_csv
from training.search_errors import SearchError

runner = CliRunner()
QUICK = "name: hostile\nangle_count: 4\nlights: [raking_n, diffuse]\n"


def _sim() -> dict[str, Any]:
    path = preset_path("sim")
    assert path is not None
    return yaml.safe_load(path.read_text())


def _refused(result: Result, *needles: str) -> str:
    """Exit 2 with one `error:` line (the only output line), no traceback; returns that line."""
    exception = result.exception
    assert exception is None or isinstance(exception, SystemExit), repr(exception)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], result.output
    return lines[0]


def _validate(path: Path) -> Result:
    return runner.invoke(app, ["config", "validate", str(path)])


def _dry_run(tmp_path: Path, *, plan: str = "quick", tray: Path | None = None) -> Result:
    who = ["--tray", str(tray)] if tray is not None else ["--coin", "SIM-0001"]
    args = ["capture", *who, "--config", "sim", "--plan", plan, "--dry-run"]
    return runner.invoke(app, [*args, "--out", str(tmp_path / "never")])


def _plan(tmp_path: Path, text: str) -> str:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    return str(path)


def _bomb(levels: int, width: int = 9) -> str:
    """A "billion laughs": `levels` levels of `width` aliases to the level below."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


# -- YAML limits: size, depth, alias expansion, before any Python object is built -------------


@pytest.mark.parametrize("where", ["config", "plan"])
def test_an_alias_bomb_is_refused_at_the_limit_quickly(tmp_path: Path, where: str) -> None:
    started = time.monotonic()
    if where == "config":
        path = tmp_path / "rig.yaml"
        path.write_text(_bomb(6))  # 9^6 = 531,441 strings once expanded
        line = _refused(_validate(path), MAX_NODES_ENV, "100,000 values")
    else:
        line = _refused(_dry_run(tmp_path, plan=_plan(tmp_path, _bomb(6))), MAX_NODES_ENV)
    assert "line 6" in line  # the alias that crossed the limit
    assert time.monotonic() - started < 5  # nine levels hung for good before


def test_the_billion_laughs_itself_is_refused_in_milliseconds(tmp_path: Path) -> None:
    path = tmp_path / "rig.yaml"
    path.write_text(_bomb(9))  # 9^9 = 387 million strings: hung `rig config validate`
    started = time.monotonic()
    _refused(_validate(path), MAX_NODES_ENV)
    assert time.monotonic() - started < 2


def test_the_alias_limit_is_set_by_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _sim()
    path = tmp_path / "rig.yaml"
    # Every tray-less device section shares one emulator mapping through an alias: legal YAML.
    text = yaml.safe_dump(data).replace("emulate: {}", "emulate: &emu {}", 1)
    text = text.replace("emulate: {}", "emulate: *emu")
    path.write_text(text)
    assert _validate(path).exit_code == 0
    monkeypatch.setenv(MAX_NODES_ENV, "40")
    _refused(_validate(path), MAX_NODES_ENV, "more than 40 values")
    monkeypatch.setenv(MAX_NODES_ENV, "forty")
    _refused(_validate(path), f"{MAX_NODES_ENV}='forty'")


@pytest.mark.parametrize("where", ["config", "plan"])
def test_deep_nesting_is_refused_without_a_recursion_error(tmp_path: Path, where: str) -> None:
    text = "a: " + "[" * 5000 + "]" * 5000 + "\n"
    if where == "config":
        path = tmp_path / "rig.yaml"
        path.write_text(text)
        _refused(_validate(path), MAX_DEPTH_ENV, "deeper than 64 levels")
    else:
        _refused(_dry_run(tmp_path, plan=_plan(tmp_path, text)), MAX_DEPTH_ENV)


def test_depth_through_aliases_counts_too(tmp_path: Path) -> None:
    # 40 levels, aliased inside 40 more: each alone is under 64, the expansion is not.
    inner = "[" * 40 + "]" * 40
    path = tmp_path / "rig.yaml"
    path.write_text(f"a: &deep {inner}\nb: " + "[" * 40 + "*deep" + "]" * 40 + "\n")
    _refused(_validate(path), MAX_DEPTH_ENV, "line 2")


def test_the_depth_limit_has_a_ceiling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "rig.yaml"
    path.write_text("a: " + "[" * 300 + "]" * 300 + "\n")
    monkeypatch.setenv(MAX_DEPTH_ENV, "5000")  # would bring back the RecursionError
    _refused(_validate(path), MAX_DEPTH_ENV, "up to 400")
    monkeypatch.setenv(MAX_DEPTH_ENV, "400")
    _refused(_validate(path), "turntable: Field required")  # parsed: 300 levels are under 400


def test_an_oversized_file_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rig.yaml"
    padding = "# " + "x" * 1000 + "\n"
    text = yaml.safe_dump(_sim()) + padding * (DEFAULT_MAX_BYTES // len(padding) + 1)
    path.write_text(text)
    _refused(_validate(path), MAX_BYTES_ENV, "1,048,576 bytes")
    monkeypatch.setenv(MAX_BYTES_ENV, str(2 * DEFAULT_MAX_BYTES))
    assert _validate(path).exit_code == 0
    plan = _plan(tmp_path, QUICK + padding * 2)
    monkeypatch.setenv(MAX_BYTES_ENV, "1000")
    _refused(_dry_run(tmp_path, plan=plan), MAX_BYTES_ENV, "1,000 bytes")


def test_a_fifo_or_device_is_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "rig.yaml"
    os.mkfifo(fifo)  # opening it would wait for a writer for ever
    _refused(_validate(fifo), "not a regular file")
    _refused(_dry_run(tmp_path, plan=str(fifo)), "not a regular file")
    if Path("/dev/zero").exists():  # read to the end, it never ends
        _refused(_validate(Path("/dev/zero")), "not a regular file")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: !!bool maybe\n", "YAML tag !!bool"),  # KeyError in PyYAML's constructor
        ("name: !!python/object:os.system x\n", "YAML tag"),  # guard: never constructed
        ("name: 2024-13-45\n", "cannot be read"),  # ValueError from datetime
        ("name: 0x" + "f" * 5000 + "\n", "a number of 5,002 characters"),  # repr raised
        ("a: &a [*a]\n", "refers to a value that contains it"),
        ("name: *nowhere\n", "undefined alias"),  # guard (message only)
        ("name: [unclosed\n", "not valid YAML at line 2"),  # guard (message only)
    ],
)
def test_yaml_a_constructor_chokes_on_is_one_line(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "rig.yaml"
    path.write_text(text)
    _refused(_validate(path), needle)
    _refused(_dry_run(tmp_path, plan=_plan(tmp_path, text)), needle)


def test_non_utf8_yaml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "rig.yaml"
    path.write_bytes(b"name: Z\xfcrich\n")
    _refused(_validate(path), "not UTF-8 (byte 7)")


def test_a_validation_error_never_prints_a_huge_value() -> None:
    class Named(BaseModel):
        name: str = Field(max_length=64)

    for value in (10**5000, "x" * 1_000_000, [[["deep"] * 1000] * 1000] * 10):
        with pytest.raises(ValidationError) as caught:
            Named.model_validate({"name": value})
        started = time.monotonic()
        line = describe_validation_error(caught.value)  # repr(10**5000) raises ValueError
        assert time.monotonic() - started < 0.5
        assert len(line) < 200 and "\n" not in line


# -- numbers: NaN, infinities, signs; plans that shoot nothing or for ever ----------------------


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda d: d["arm"]["workspace"].update(x_mm=["-.inf", ".inf"]), "workspace.x_mm"),
        (lambda d: d["tray"]["origin"].update(x_mm=".inf"), "origin.x_mm"),
        # guards: a bound refused these before (NaN fails `ge`), with another message
        (lambda d: d["camera"].update(exposure_us=".nan"), "exposure_us"),
        (lambda d: d["turntable"]["limits"].update(min_deg="-.inf"), "min_deg"),
        (lambda d: d["arm"]["safe_pose"].update(z_mm=".nan"), "z_mm"),
    ],
)
def test_nan_and_infinite_config_values_are_refused(
    tmp_path: Path, change: Any, needle: str
) -> None:
    data = copy.deepcopy(_sim())
    change(data)
    path = tmp_path / "rig.yaml"
    # YAML's own spellings of NaN and infinity, unquoted
    text = yaml.safe_dump(data).replace("'.nan'", ".nan").replace("'.inf'", ".inf")
    path.write_text(text.replace("'-.inf'", "-.inf"))
    _refused(_validate(path), needle, "finite")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("reference: {light: diffuse, tilt_deg: .nan}\n", "reference.tilt_deg"),
        ("gain_db: .inf\n", "gain_db"),  # guard
        ("patterns: {x: {north: .nan}}\n", "finite"),  # guard
    ],
)
def test_nan_and_infinite_plan_values_are_refused(tmp_path: Path, extra: str, needle: str) -> None:
    _refused(_dry_run(tmp_path, plan=_plan(tmp_path, QUICK + extra)), needle)


def test_a_plan_without_angles_is_refused(tmp_path: Path) -> None:
    text = "name: empty\nangles_deg: []\nlights: [diffuse]\n"  # ran 0 shots, exit 0
    _refused(_dry_run(tmp_path, plan=_plan(tmp_path, text)), "angles_deg")


def test_a_plan_of_endless_shots_is_refused_before_expanding(tmp_path: Path) -> None:
    exposures = ", ".join(str(100 + i) for i in range(30))
    text = f"name: endless\nangle_count: 360\nlights: [diffuse]\nexposures_us: [{exposures}]\n"
    started = time.monotonic()
    _refused(
        _dry_run(tmp_path, plan=_plan(tmp_path, text)), "21,600 shots", f"{MAX_SHOTS_PER_COIN:,}"
    )
    assert time.monotonic() - started < 2


# -- tray files -----------------------------------------------------------------------------------


def _tray(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "tray.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_bytes(content.encode("utf-8"))
    return path


def test_a_spreadsheet_tray_is_accepted(tmp_path: Path) -> None:
    # What Excel writes as "CSV UTF-8": a BOM, CRLF, a header, cells padded to the widest row.
    tray = _tray(tmp_path, "\ufeffslot,coin_id,\r\n0,SIM-0001,\r\n3,SIM-0002,note\r\n,,\r\n")
    _refused(_dry_run(tmp_path, tray=tray), "expected `slot,coin_id`", "tray.csv:3")
    tray = _tray(tmp_path, "\ufeffslot,coin_id,\r\n0,SIM-0001,\r\n3,SIM-0002,\r\n,,\r\n")
    result = _dry_run(tmp_path, tray=tray)
    assert result.exit_code == 0, result.output
    assert "2 coin(s)" in result.output


@pytest.mark.parametrize("slot", ["²", "٣", "３", "1²", "-1", "+1", "1.0", "0x1", "1" * 7])
def test_a_slot_not_in_ascii_digits_is_one_line(tmp_path: Path, slot: str) -> None:
    tray = _tray(tmp_path, f"0,SIM-0001\n{slot},SIM-0002\n")
    _refused(_dry_run(tmp_path, tray=tray), "tray.csv:2", "ASCII digits")


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ("0,SIM-0001\n1,SIM-0002\n1,SIM-0003\n", ("tray.csv:3", "slot 1", "first on line 2")),
        ("0,SIM-0001\n1,SIM-0002\n2,SIM-0001\n", ("tray.csv:3", "SIM-0001", "first on line 1")),
        (b"0,SIM-0001\n1,Z\xfcrich\n", ("not UTF-8 (byte 14)",)),
        (b"0,SIM-0001\n1,SIM\x00-2\n", ("tray.csv:2",)),
        ("0,SIM-0001\n1,SIM-" + "9" * MAX_LINE_CHARS + "\n", ("tray.csv:2", "line longer")),
        ("0,SIM-" + "9" * 100 + "\n", ("tray.csv:1", "at most 64")),
        ('0,"SIM-0001\n', ("tray.csv:1",)),  # an unterminated quote
        ("", ("no coins listed",)),  # guard
        ("\ufeff", ("no coins listed",)),
    ],
)
def test_a_bad_tray_file_is_one_line_naming_where(
    tmp_path: Path, content: str | bytes, needles: tuple[str, ...]
) -> None:
    tray = _tray(tmp_path, content)
    before = tray.read_bytes()
    _refused(_dry_run(tmp_path, tray=tray), *needles)
    assert tray.read_bytes() == before


def test_tray_size_and_row_limits(tmp_path: Path) -> None:
    rows = "".join(f"{slot},C-{slot}\n" for slot in range(MAX_ROWS + 1))
    _refused(_dry_run(tmp_path, tray=_tray(tmp_path, rows)), f"more than {MAX_ROWS:,} coins")
    huge = "# padding\n" * (MAX_TRAY_BYTES // 10 + 1)
    _refused(_dry_run(tmp_path, tray=_tray(tmp_path, huge)), f"{MAX_TRAY_BYTES:,} bytes")


def test_a_tray_that_is_a_fifo_is_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "tray.csv"
    os.mkfifo(fifo)
    _refused(_dry_run(tmp_path, tray=fifo), "not a regular file")


# -- `pipeline index --meta`: the reader (the CLI's one-line path is in test_hostile_pipeline) --


def test_a_metadata_csv_with_a_bom_is_read(tmp_path: Path) -> None:  # guard
    path = tmp_path / "lots.csv"
    path.write_bytes("\ufefffile_name,sale\nobverse.jpg,Zürich 1998\n".encode())
    assert read_meta_csv(path) == {
        "obverse.jpg": {"file_name": "obverse.jpg", "sale": "Zürich 1998"}
    }


def test_a_metadata_csv_with_a_huge_line_is_refused(tmp_path: Path) -> None:  # guard
    path = tmp_path / "lots.csv"
    path.write_text("file_name,sale\nobverse.jpg," + "x" * 200_000 + "\n")
    with pytest.raises(SearchError, match="not a readable CSV"):
        read_meta_csv(path)


def test_a_metadata_csv_over_the_limit_or_not_a_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lots.csv"
    path.write_text("file_name,sale\n" + "obverse.jpg,Zurich\n" * 10)
    monkeypatch.setenv(MAX_META_BYTES_ENV, "100")
    with pytest.raises(SearchError, match=f"over the limit of 100 bytes.*{MAX_META_BYTES_ENV}"):
        read_meta_csv(path)
    monkeypatch.delenv(MAX_META_BYTES_ENV)
    assert len(read_meta_csv(path)) == 1
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    with pytest.raises(SearchError, match="not a regular file"):
        read_meta_csv(fifo)


def test_the_shipped_configs_and_plans_pass_the_limits() -> None:  # guard
    assert load_config("sim").name == "sim-rig"
    result = runner.invoke(
        app, ["capture", "--coin", "SIM-0001", "--plan", "standard", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert "98 shots per coin" in result.output


@pytest.mark.parametrize("loader", safe_yaml._LOADERS, ids=lambda cls: cls.__name__)
def test_both_parsers_keep_the_limits(loader: type, monkeypatch: pytest.MonkeyPatch) -> None:
    # libyaml's parser when PyYAML has it, else PyYAML's own: the limits hold on either.
    monkeypatch.setattr(safe_yaml, "_LOADERS", [loader])
    for text, needle in (
        (_bomb(9), MAX_NODES_ENV),
        ("a: " + "[" * 5000 + "]" * 5000, MAX_DEPTH_ENV),
        ("a: &a [*a]", "contains it"),
        ("a: \x07", "#x0007"),
        ("a: !!bool maybe", "YAML tag"),
    ):
        with pytest.raises(safe_yaml.YamlError, match=needle):
            safe_yaml.parse(text, "x.yaml")
    assert safe_yaml.parse("\ufeffa: [1, 2.5, x, null]", "x.yaml") == {"a": [1, 2.5, "x", None]}
