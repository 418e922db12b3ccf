"""Fuzz `rig dataset verify / summary / sheet` with randomly damaged datasets (issue 17).

Each example copies a small dataset (with a session record), damages it (a file truncated,
bytes flipped, replaced by junk, deleted or linked to /dev/zero or out of the folder, one JSON
value swapped for a hostile one, or a junk file added) and runs one command through the CLI
runner. Allowed: success, exit 1 with a report (verify only), or exit 2 with one `error:` line.
Never a traceback, never a changed input file, never a file written but the sheet it is asked
for.
"""

from __future__ import annotations

import json
import resource
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from corruption import json_paths, replace_path, tree_digest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthetic_dataset import Spec, write_dataset
from typer.testing import CliRunner, Result

from capture.plan import Plan
from pipeline.rig_cli.app import app

runner = CliRunner()
COIN = "SYN-0000"
# The files a dataset command reads, and folders a junk file may land in.
TARGETS = (
    "dataset.json",
    "metadata.jsonl",
    "coins.jsonl",
    "sessions/S0001.json",
    "images/SYN-0000/obverse/0000.png",
    "images/SYN-0000/reverse/0001.png",
    "catalog/SYN-0000/obverse.jpg",
)
JUNK_PLACES = ("", "sessions", "images/SYN-0000/obverse", "catalog/SYN-0001", "images")
JUNK_NAMES = ("metadata.jsonl", "x.json", "0009.png", ".lock", "dataset.json", "notes.txt")
HOSTILE_JSON: list[Any] = [
    None, True, False, -1, 0, 1, 7, 10**30, -(10**30), 0.5, 1e308, float("nan"),
    float("inf"), "", "x", "abc", "../../etc/passwd", "/dev/zero", "images/../../x.png",
    "SYN-0001", "obverse", "capture", "catalog", "images/SYN-0000/obverse/0001.png",
    [], [1, 2], ["top"], {}, {"a": 1}, {"top": "x"}, [[[[[]]]]],
]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def memory_cap() -> Iterator[None]:
    """Cap the address space 2 GiB above its size now, for this module's tests.

    The damage links files to /dev/zero: a regression that reads one then fails with a
    MemoryError instead of taking the machine's memory (which the code before the fix did).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    status = Path("/proc/self/status")
    sizes = [
        line.split()[1] for line in status.read_text().splitlines() if line.startswith("VmSize:")
    ]
    if not sizes:
        yield  # not Linux: no cap
        return
    cap = int(sizes[0]) * 1024 + 2 * 2**30
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-rig") / "ds"
    write_dataset(root, Spec(n_coins=2, angles=(0.0, 90.0), lights=("diffuse",), size=32))
    (root / "sessions").mkdir()
    session = {
        "session_id": "S0001",
        "status": "done",
        "plan": Plan.load("quick").model_dump(mode="json"),
        "image_format": "png",
        "coins": [],
        "missing": [],
        "calibration": {"turntable": {"centre_px": [16.0, 16.0], "rotation_sign": 1}},
    }
    (root / "sessions" / "S0001.json").write_text(json.dumps(session, indent=2))
    result = runner.invoke(app, ["dataset", "verify", str(root), "--strict"])
    assert result.exit_code == 0, result.output
    return root


def _mutate_json(text: str, data: st.DataObject) -> str | None:
    """One value swapped, or one key deleted, in a JSON document; None if it is not JSON."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    paths = json_paths(doc, items=6)
    path = paths[data.draw(st.integers(0, len(paths) - 1), label="path")]
    new = data.draw(st.sampled_from(HOSTILE_JSON), label="value")
    return json.dumps(replace_path(doc, path, new, data.draw(st.booleans(), label="delete")))


def _damage(root: Path, outside: Path, data: st.DataObject) -> str:
    """Damage the dataset one way; returns what was done (for the failure report)."""
    kind = data.draw(
        st.sampled_from(["json", "truncate", "flip", "junk", "delete", "link", "add"]), label="how"
    )
    if kind == "add":
        place = root / data.draw(st.sampled_from(JUNK_PLACES), label="where")
        name = data.draw(st.sampled_from(JUNK_NAMES), label="name")
        place.mkdir(parents=True, exist_ok=True)
        if not (place / name).exists():
            (place / name).write_bytes(data.draw(st.binary(max_size=64), label="junk"))
        return f"add {place.relative_to(root) / name}"
    target = data.draw(st.sampled_from(TARGETS), label="file")
    path = root / target
    content = path.read_bytes()
    if kind == "json" and path.suffix in (".json", ".jsonl"):
        lines = content.decode().splitlines() if path.suffix == ".jsonl" else [content.decode()]
        n = data.draw(st.integers(0, len(lines) - 1), label="line")
        mutated = _mutate_json(lines[n], data)
        if mutated is not None:
            lines[n] = mutated
            path.write_text("\n".join(lines) + "\n")
            return f"json {target}:{n + 1}"
    if kind == "truncate" or kind == "json":
        path.write_bytes(content[: data.draw(st.integers(0, max(0, len(content) - 1)))])
    elif kind == "flip" and content:
        at = data.draw(st.integers(0, len(content) - 1), label="at")
        bit = data.draw(st.integers(1, 255), label="xor")
        path.write_bytes(content[:at] + bytes([content[at] ^ bit]) + content[at + 1 :])
    elif kind == "delete":
        path.unlink()
    elif kind == "link":
        # /dev/zero never ends; a copy outside the folder has the right checksum
        shutil.copy(path, outside / "copy")
        destination = data.draw(st.sampled_from(["/dev/zero", str(outside / "copy")]))
        path.unlink()
        path.symlink_to(destination)
    else:
        path.write_bytes(data.draw(st.binary(max_size=64), label="junk"))
    return f"{kind} {target}"


def _check_outcome(command: str, result: Result, context: str) -> None:
    exception = result.exception
    assert exception is None or isinstance(exception, SystemExit), f"{context}\n{exception!r}"
    assert "Traceback" not in result.output, context
    allowed = (0, 1, 2) if command == "verify" else (0, 2)
    assert result.exit_code in allowed, context
    lines = [line for line in result.output.splitlines() if line.strip()]
    if result.exit_code == 2:
        errors = [line for line in lines if line.startswith("error:")]
        assert len(errors) == 1 and lines[-1] == errors[0], context
    if result.exit_code == 1:  # verify's report: its findings, then the count
        assert lines and lines[-1].endswith("warning(s)"), context
        assert any(line.startswith("error: ") for line in lines), context


@settings(
    max_examples=75,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_damaged_datasets_give_a_report_or_one_line(base: Path, data: st.DataObject) -> None:
    command = data.draw(st.sampled_from(["verify", "summary", "sheet"]), label="command")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = Path(shutil.copytree(base, work / "ds", symlinks=True))
        (work / "outside").mkdir()
        (work / "out").mkdir()
        how = _damage(root, work / "outside", data)
        args = {
            "verify": ["dataset", "verify", str(root)],
            "summary": ["dataset", "summary", str(root)],
            "sheet": [
                "dataset",
                "sheet",
                str(root),
                "--coin",
                COIN,
                "--out",
                str(work / "out/s.png"),
            ],
        }[command]
        before = tree_digest(work)
        result = runner.invoke(app, args)
        after = tree_digest(work)
    context = f"{command} after {how}:\n{result.output}"
    _check_outcome(command, result, context)
    written = {name for name in after if name not in before or after[name] != before[name]}
    expected = {"out/s.png"} if command == "sheet" and result.exit_code == 0 else set()
    assert written == expected and set(before) <= set(after), context
