"""Hostile output folders, damaged datasets and output paths under the `rig` command (issue 17).

Output folders: `rig capture` and `rig simulate` took over any folder without a dataset.json
(and the next writer cut the last line of that folder's own metadata.jsonl); now a folder that
is not new, empty or a dataset is refused before anything is written, one line, exit 2.
Damaged datasets: a damaged dataset.json, session record, coins or metadata line gave a
traceback under `verify`, `summary`, `sheet`, `capture` and `simulate`; now verify reports it
(exit 1) and the others refuse it in one line (exit 2), before anything is written.
Output paths: `rig sim render` and `rig dataset sheet` rendered first and then failed with a
traceback on an unknown extension or an unwritable place; now they refuse before rendering, and
write through a temporary file, fsync and rename.

Each test failed on the code before the fix, except those named as guards.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from corruption import assert_refused, tree_digest
from simulate_support import write_config
from synthetic_dataset import Spec, write_dataset
from typer.testing import CliRunner

import capture.writer as writer_module
from capture.checks import verify
from capture.plan import Plan
from capture.writer import DatasetWriter
from dataset.jsonl import MAX_LINE_BYTES, read_jsonl
from dataset.layout import DatasetFormatError
from dataset.outputs import OutputPathError, check_dataset_folder
from pipeline.rig_cli.app import app

runner = CliRunner()
COIN = "SYN-0000"
ROOT_USER = os.geteuid() == 0


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small well-formed dataset, with a session record (copied by each test)."""
    root = tmp_path_factory.mktemp("base") / "ds"
    write_dataset(root, Spec(n_coins=2, angles=(0.0, 90.0), lights=("diffuse",), size=32))
    (root / "sessions").mkdir()
    plan = Plan.load("quick").model_dump(mode="json")
    session = {"session_id": "S0001", "status": "done", "plan": plan, "coins": [], "missing": []}
    (root / "sessions" / "S0001.json").write_text(json.dumps(session))
    assert [p for p in verify(root) if p.severity == "error"] == []
    return root


@pytest.fixture
def data(base: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(base, tmp_path / "ds"))


def _capture(out: Path | str) -> list[str]:
    return [
        "capture",
        "--coin",
        "SIM-0001",
        "--plan",
        "quick",
        "--config",
        "sim",
        "--out",
        str(out),
    ]


def _simulate(out: Path | str) -> list[str]:
    return ["simulate", "--coins", "1", "--image-size", "32", "--plan", "quick", "--out", str(out)]


COMMANDS = {"capture": _capture, "simulate": _simulate}


# -- output folders: never a foreign folder taken over ----------------------------------------


def _foreign(tmp_path: Path) -> Path:
    """Another tool's folder: a metadata.jsonl whose last line lacks its newline, and a note."""
    folder = tmp_path / "foreign"
    folder.mkdir()
    (folder / "metadata.jsonl").write_bytes(b'{"id": 1}\n{"id": 2}\n{"id": 3, "note": "last')
    (folder / "notes.txt").write_text("not a dataset\n")
    return folder


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_foreign_folder_is_refused_and_left_byte_identical(tmp_path: Path, command: str) -> None:
    folder = _foreign(tmp_path)
    before = tree_digest(tmp_path)
    assert_refused(runner.invoke(app, COMMANDS[command](folder)), "holds no coinrig dataset")
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("a file", "is not a folder"),
        ("under a file", "is not a folder"),
        ("inside a dataset", "inside the dataset"),
        ("inside a dataset's images", "inside the dataset"),
        ("/proc", "pseudo-filesystem"),
        ("/proc/new", "pseudo-filesystem"),
    ],
)
def test_an_output_folder_that_cannot_hold_a_dataset_is_refused_before_any_write(
    data: Path, tmp_path: Path, command: str, case: str, expected: str
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    out = {
        "a file": a_file,
        "under a file": a_file / "ds",
        "inside a dataset": data / "second",
        "inside a dataset's images": data / "images" / "SYN-0000",
        "/proc": Path("/proc"),
        "/proc/new": Path("/proc/coinrig-new"),
    }[case]
    before = tree_digest(tmp_path)
    assert_refused(runner.invoke(app, COMMANDS[command](out)), expected)
    assert tree_digest(tmp_path) == before


@pytest.mark.skipif(ROOT_USER, reason="root writes into read-only folders")
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_read_only_folder_is_refused(tmp_path: Path, command: str) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert_refused(runner.invoke(app, COMMANDS[command](folder)), "cannot write")
        assert_refused(runner.invoke(app, COMMANDS[command](folder / "new")), "not writable")
    finally:
        folder.chmod(0o755)
    assert list(folder.iterdir()) == []


def test_the_root_folder_is_refused() -> None:
    """Checked on the function: a regression must not let a test write into `/`."""
    with pytest.raises(OutputPathError, match="holds no coinrig dataset"):
        check_dataset_folder(Path("/"))


def test_new_empty_and_dataset_folders_are_accepted(data: Path, tmp_path: Path) -> None:
    """Guard: what the check must let through (a crashed creation leaves only its lock)."""
    check_dataset_folder(tmp_path / "new" / "deeper")
    (tmp_path / "empty").mkdir()
    check_dataset_folder(tmp_path / "empty")
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    (crashed / ".lock").write_text('{"pid": 1, "host": "elsewhere"}\n')
    (crashed / ".dataset.json.tmp-99").write_text("{")
    check_dataset_folder(crashed)
    check_dataset_folder(data)


def test_the_writer_itself_refuses_a_foreign_folder(tmp_path: Path) -> None:
    folder = _foreign(tmp_path)
    before = tree_digest(folder)
    with pytest.raises(OutputPathError):
        DatasetWriter(folder).open()
    assert tree_digest(folder) == before


# -- torn lines: only what the writer itself could have torn is cut ---------------------------


def test_a_last_line_of_other_text_is_corrupt_not_torn_and_never_cut(data: Path) -> None:
    meta = data / "metadata.jsonl"
    with meta.open("ab") as handle:
        handle.write(b"a note another tool appended")
    before = meta.read_bytes()
    content = read_jsonl(meta)
    assert not content.torn and content.corrupt_lines == [before.count(b"\n") + 1]
    assert any("is not a JSON object" in str(p) for p in verify(data))
    with pytest.raises(DatasetFormatError, match=r"metadata\.jsonl"):
        DatasetWriter(data).open()
    assert meta.read_bytes() == before


def test_a_zero_filled_last_line_is_torn_and_cut(data: Path) -> None:
    """Guard: what a filesystem leaves when a crash lands the file's size before its data."""
    meta = data / "metadata.jsonl"
    good = meta.read_bytes()
    meta.write_bytes(good + b"\0" * 40 + b"\n")
    assert read_jsonl(meta).torn and not read_jsonl(meta).corrupt_lines
    DatasetWriter(data).open().close()
    assert meta.read_bytes() == good


def test_a_torn_coins_line_is_cut_before_the_next_coin_is_appended(data: Path) -> None:
    coins = data / "coins.jsonl"
    good = coins.read_bytes()
    with coins.open("ab") as handle:
        handle.write(b'{"coin_id": "SYN-0009", "rul')  # a crash in add_coin's append
    with DatasetWriter(data) as writer:
        writer.add_coin("SYN-0010")
    content = read_jsonl(coins)
    assert not content.corrupt_lines and not content.torn
    assert coins.read_bytes() == good + b'{"coin_id": "SYN-0010"}\n'


# -- damaged datasets -------------------------------------------------------------------------


def _rewrite_line(path: Path, number: int, change: dict[str, object]) -> None:
    lines = path.read_text().splitlines()
    line = json.loads(lines[number - 1])
    line.update(change)
    lines[number - 1] = json.dumps(line)
    path.write_text("\n".join(lines) + "\n")


def _insert_line(path: Path, text: str) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], text, *lines[1:]]) + "\n")


def _damage(root: Path, case: str) -> None:
    """Damage one file of the dataset as `case` says."""
    info = root / "dataset.json"
    session = root / "sessions" / "S0001.json"
    if case == "dataset.json not JSON":
        info.write_text("{not json")
    elif case == "dataset.json truncated":
        info.write_bytes(info.read_bytes()[:20])
    elif case == "dataset.json wrong types":
        info.write_text(json.dumps({"format": "coinrig-dataset", "version": 1, "created": [1]}))
    elif case == "dataset.json version true":
        info.write_text(json.dumps({"format": "coinrig-dataset", "version": True}))
    elif case == "session not JSON":
        session.write_text('{"session_id": "S0001", "sta')
    elif case == "session a list":
        session.write_text("[1, 2]")
    elif case == "session wrong types":
        session.write_text(json.dumps({"session_id": "S0001", "coins": [{"coin_id": ["x"]}]}))
    elif case == "coins line wrong type":
        _rewrite_line(root / "coins.jsonl", 1, {"coin_id": ["SYN-0000"]})
    elif case == "coins line not JSON":
        _insert_line(root / "coins.jsonl", '{"coin_id": "SYN-0005",')
    elif case == "metadata turntable_deg abc":
        _rewrite_line(root / "metadata.jsonl", 2, {"turntable_deg": "abc"})
    elif case == "metadata turntable_deg NaN":
        _rewrite_line(root / "metadata.jsonl", 2, {"turntable_deg": float("nan")})
    elif case == "metadata lights a list":
        _rewrite_line(root / "metadata.jsonl", 2, {"lights": ["top"]})
    elif case == "metadata line not JSON":
        _insert_line(root / "metadata.jsonl", "not json")
    elif case == "metadata.jsonl a folder":
        (root / "metadata.jsonl").unlink()
        (root / "metadata.jsonl").mkdir()
    else:
        raise AssertionError(case)


DAMAGES = [
    "dataset.json not JSON",
    "dataset.json truncated",
    "dataset.json wrong types",
    "dataset.json version true",
    "session not JSON",
    "session a list",
    "session wrong types",
    "coins line wrong type",
    "coins line not JSON",
    "metadata turntable_deg abc",
    "metadata turntable_deg NaN",
    "metadata lights a list",
    "metadata line not JSON",
    "metadata.jsonl a folder",
]


def _names(case: str) -> str:
    """A word the one-line message or the report must hold for this damage."""
    if case.startswith("dataset.json"):
        return "dataset.json"
    if case.startswith("session"):
        return "sessions/S0001.json"
    if case.startswith("coins"):
        return "coins.jsonl"
    return "metadata.jsonl"


@pytest.mark.parametrize("case", DAMAGES)
def test_verify_reports_a_damaged_file_with_exit_1(data: Path, case: str) -> None:
    """The report names the damaged file (a bad session or a non-JSON line: guards)."""
    _damage(data, case)
    before = tree_digest(data)
    result = runner.invoke(app, ["dataset", "verify", str(data)])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert any(_names(case) in line for line in errors), result.output
    assert result.output.splitlines()[-1].endswith("warning(s)")
    assert tree_digest(data) == before


@pytest.mark.parametrize("case", DAMAGES)
@pytest.mark.parametrize("command", ["summary", "sheet", "capture", "simulate"])
def test_other_commands_refuse_a_damaged_dataset_in_one_line(
    data: Path, tmp_path: Path, case: str, command: str
) -> None:
    _damage(data, case)
    before = tree_digest(tmp_path)
    args = {
        "summary": ["dataset", "summary", str(data)],
        "sheet": ["dataset", "sheet", str(data), "--coin", COIN, "--out", str(tmp_path / "s.png")],
        "capture": _capture(data),
        "simulate": _simulate(data),
    }[command]
    line = assert_refused(runner.invoke(app, args))
    assert _names(case) in line
    assert tree_digest(tmp_path) == before  # nothing written, not even a lock or the sheet


def test_verify_reports_an_image_linked_out_of_the_dataset(data: Path, tmp_path: Path) -> None:
    name = "images/SYN-0001/obverse/0000.png"
    outside = tmp_path / "outside.png"
    shutil.copy(data / name, outside)  # same bytes: its checksum matches
    (data / name).unlink()
    (data / name).symlink_to(outside)
    errors = [str(p) for p in verify(data) if p.severity == "error"]
    assert errors == [f"error: {name}: {name!r} leads out of the dataset {data} through a symlink"]


# -- output paths: checked before rendering, written atomically -------------------------------


@pytest.fixture
def no_rendering(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test if anything is rendered or a dataset image read."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("rendered before the output path was checked")

    monkeypatch.setattr("pipeline.rig_cli.sim.render_view", forbidden)
    monkeypatch.setattr("pipeline.rig_cli.sim.render_catalog_image", forbidden)
    monkeypatch.setattr("capture.sheet._thumbnail", forbidden)
    yield


def _bad_outputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    (tmp_path / "folder.png").mkdir()
    return {
        "unknown extension": (tmp_path / "view.xyz", "unknown extension"),
        "no extension": (tmp_path / "view", "unknown extension"),
        "under a file": (a_file / "view.png", "is not a folder"),
        "a folder": (tmp_path / "folder.png", "is a folder"),
        "on /proc": (Path("/proc/coinrig-view.png"), "pseudo-filesystem"),
    }


@pytest.mark.parametrize(
    "case", ["unknown extension", "no extension", "under a file", "a folder", "on /proc"]
)
@pytest.mark.parametrize("command", ["sim render", "sim render --catalog-style", "dataset sheet"])
def test_a_bad_output_path_is_refused_before_rendering(
    data: Path, tmp_path: Path, no_rendering: None, case: str, command: str
) -> None:
    out, expected = _bad_outputs(tmp_path)[case]
    before = tree_digest(tmp_path)
    if command == "dataset sheet":
        args = ["dataset", "sheet", str(data), "--coin", COIN, "--out", str(out)]
    else:
        args = [*command.split(), "--coin", "SIM-0001", "--out", str(out)]
    assert_refused(runner.invoke(app, args), expected)
    assert tree_digest(tmp_path) == before


@pytest.mark.skipif(ROOT_USER, reason="root writes into read-only folders")
def test_an_unwritable_output_folder_is_refused_before_rendering(
    tmp_path: Path, no_rendering: None
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        args = ["sim", "render", "--out", str(folder / "view.png")]
        assert_refused(runner.invoke(app, args), "not writable")
    finally:
        folder.chmod(0o755)


def test_a_sixteen_bit_view_is_refused_as_jpeg_before_rendering(
    tmp_path: Path, no_rendering: None
) -> None:
    config = write_config(tmp_path / "deep.yaml", camera={"bit_depth": 16})
    args = ["sim", "render", "--config", str(config), "--out", str(tmp_path / "view.jpg")]
    assert_refused(runner.invoke(app, args), "16-bit")


@pytest.mark.parametrize("command", ["sim render", "dataset sheet"])
def test_outputs_are_replaced_atomically(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """A failing write leaves the old file whole and no temporary file; a good one renames."""
    out = tmp_path / "out.png"
    if command == "dataset sheet":
        args = ["dataset", "sheet", str(data), "--coin", COIN, "--out", str(out), "--thumb", "16"]
    else:
        args = ["sim", "render", "--coin", "SIM-0001", "--out", str(out)]
    out.write_bytes(b"the old picture")

    def disk_full(path: Path, data: bytes) -> None:
        path.write_bytes(data[:10])  # part of it landed, then the disk filled
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(writer_module, "_write_bytes", disk_full)
        assert_refused(runner.invoke(app, args), "No space left")
    assert out.read_bytes() == b"the old picture"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "out.png"]
    inode = out.stat().st_ino
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_ino != inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "out.png"]


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("metadata.jsonl", "a link out of its folder"),
        ("coins.jsonl", "a link out of its folder"),
        ("dataset.json", "no readable dataset.json"),
    ],
)
def test_a_dataset_file_linked_out_of_the_dataset_is_never_read(
    data: Path, tmp_path: Path, name: str, said: str
) -> None:
    outside = tmp_path / "elsewhere" / name
    outside.parent.mkdir()
    source = data / name
    if not source.exists():
        source.write_text("")
    outside.write_bytes(source.read_bytes())
    source.unlink()
    source.symlink_to(outside)
    before = tree_digest(tmp_path / "elsewhere")
    result = runner.invoke(app, ["dataset", "verify", str(data)])
    assert result.exit_code == 1 and said in result.output, result.output
    assert_refused(runner.invoke(app, ["dataset", "summary", str(data)]))
    assert tree_digest(tmp_path / "elsewhere") == before


def test_a_link_within_the_dataset_folder_is_read(data: Path) -> None:
    (data / "metadata.jsonl").rename(data / "metadata-copy.jsonl")
    (data / "metadata.jsonl").symlink_to(data / "metadata-copy.jsonl")
    assert runner.invoke(app, ["dataset", "summary", str(data)]).exit_code == 0


def test_a_metadata_line_over_the_line_limit_is_damage(data: Path) -> None:
    with (data / "metadata.jsonl").open("a") as f:
        f.write(json.dumps({"file_name": "x.png", "pad": "a" * MAX_LINE_BYTES}) + "\n")
    result = runner.invoke(app, ["dataset", "verify", str(data)])
    assert result.exit_code == 1 and "is not a JSON object" in result.output, result.output
    assert_refused(runner.invoke(app, ["dataset", "summary", str(data)]))
