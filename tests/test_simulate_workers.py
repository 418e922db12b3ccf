"""`rig simulate --workers N`: one dataset from N processes, each with its own emulated rig.

Two workers must write what one writes (the same files, byte for byte, the same lines in the
same order; only session ids and capture times name the run), a dataset `rig dataset verify`
accepts, and stay crash-safe: a kill -9 of the command (its workers die with it) or a Ctrl-C
leaves a dataset that a rerun, with any worker count, completes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from simulate_support import (
    QUICK,
    ROOT,
    assert_complete_once,
    ground_truth_mismatches,
    metadata_lines,
)
from typer.testing import CliRunner, Result

from capture.checks import verify
from capture.engine import CoinJob
from capture.parallel_sim import Adopter, remove_units, unit_root
from capture.twin_render import SOURCE
from capture.writer import DatasetWriter
from dataset.reader import DatasetReader
from pipeline.rig_cli.app import app
from pipeline.rig_cli.simulate_workers import split_units

RIG = Path(sys.executable).with_name("rig")
# what names a run rather than the images: differs between any two runs, one worker or many
VOLATILE = ("captured_at", "session_id")


def _args(out: Path, coins: int, *extra: str) -> list[str]:
    return [
        "simulate", "--coins", str(coins), "--types", "2", "--image-size", "32",
        "--plan", str(QUICK), "--out", str(out), *extra,
    ]  # fmt: skip


def _simulate(out: Path, coins: int, *extra: str) -> Result:
    return CliRunner().invoke(app, _args(out, coins, *extra))


def _stable_lines(root: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in metadata_lines(root)]


def _coins(n: int) -> list[str]:
    return [f"SIM-{i:04d}" for i in range(n)]


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same 4 coins simulated by one process and by two."""
    base = tmp_path_factory.mktemp("workers")
    one, two = base / "one", base / "two"
    result = _simulate(one, 4, "--workers", "1")
    assert result.exit_code == 0, result.output
    result = _simulate(two, 4, "--workers", "2")
    assert result.exit_code == 0, result.output
    assert "2 unit(s) of 1 tray load(s) on 2 processes" in result.output
    return one, two


def test_two_workers_write_what_one_writes(one_and_two: tuple[Path, Path]) -> None:
    one, two = one_and_two
    lines = _stable_lines(one)
    assert len(lines) == 4 * 26  # 24 shots and 2 catalog images per coin
    assert _stable_lines(two) == lines  # same files, checksums and fields, in the same order
    for line in lines:
        name = line["file_name"]
        assert (two / name).read_bytes() == (one / name).read_bytes(), name
    assert (two / "coins.jsonl").read_bytes() == (one / "coins.jsonl").read_bytes()


def test_a_workers_dataset_is_one_valid_dataset(one_and_two: tuple[Path, Path]) -> None:
    _, two = one_and_two
    assert CliRunner().invoke(app, ["dataset", "verify", str(two)]).exit_code == 0
    assert [str(p) for p in verify(two)] == []
    assert_complete_once(two, QUICK, _coins(4))
    assert ground_truth_mismatches(two) == []
    assert not (two / ".workers").exists() and not (two / ".lock").exists()
    # one session per unit, each done, the two together the four coins in tray order
    sessions = DatasetReader(two).sessions()
    assert [s["status"] for s in sessions] == ["done", "done"]
    coins = sorted(c["coin_id"] for s in sessions for c in s["coins"])
    assert coins == _coins(4)


def test_a_rerun_of_a_finished_workers_run_has_nothing_to_do(
    one_and_two: tuple[Path, Path],
) -> None:
    _, two = one_and_two
    before = (two / "metadata.jsonl").read_bytes()
    result = _simulate(two, 4, "--workers", "2")
    assert result.exit_code == 0 and "nothing to do" in result.output
    assert (two / "metadata.jsonl").read_bytes() == before


def test_direct_renders_the_rigs_images_without_a_rig(
    one_and_two: tuple[Path, Path], tmp_path: Path
) -> None:
    """--direct: the same files, bytes and lines as the emulated rig's, marked as rendered."""
    one, _ = one_and_two
    direct = tmp_path / "direct"
    result = _simulate(direct, 4, "--direct", "--workers", "2")
    assert result.exit_code == 0, result.output
    rendered = _stable_lines(direct)
    assert {r.get("source") for r in rendered if r["role"] == "capture"} == {SOURCE}
    for line in rendered:
        if line["role"] == "capture":
            del line["source"]
    assert rendered == _stable_lines(one)
    assert [str(p) for p in verify(direct)] == []
    assert DatasetReader(direct).sessions() == []  # no rig ran: no session to record


def test_direct_refuses_faults_it_could_not_inject(tmp_path: Path) -> None:
    result = _simulate(tmp_path / "sim", 1, "--direct", "--faults", "heavy")
    assert result.exit_code == 2 and "--faults does not apply" in result.output
    assert not (tmp_path / "sim").exists()


def _crash_damage(root: Path) -> list[str]:
    """verify's errors but those a kill may leave: shots not yet taken, one orphan."""
    damage = []
    orphans = 0
    for problem in verify(root):
        text = str(problem)
        if problem.severity == "warning" or "not accounted for" in text:
            continue
        if "orphan file" in text:
            orphans += 1
            continue
        damage.append(text)
    return damage + ([f"{orphans} orphan files"] if orphans > 1 else [])


def _staged(out: Path) -> int:
    return sum(
        p.read_bytes().count(b"\n") for p in out.glob(".workers/*/metadata.jsonl") if p.is_file()
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _unit_writers(out: Path) -> list[int]:
    """The processes that hold the units' locks (each worker writes its unit's dataset)."""
    pids = []
    for lock in out.glob(".workers/*/.lock"):
        try:
            pids.append(int(json.loads(lock.read_text())["pid"]))
        except (OSError, ValueError, KeyError):
            continue  # released or being written just now
    return pids


def test_kill_9_mid_run_then_any_rerun_completes(tmp_path: Path) -> None:
    """kill -9 the command while its units shoot (twice); the workers die with it; reruns
    with two workers, then with one, complete the dataset with every shot exactly once."""
    out = tmp_path / "sim"
    command = [str(RIG), *_args(out, 4, "--workers", "2")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for more in (10, 20):  # lines the units write before the kill
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 90
        while len(writers := _unit_writers(out)) < 2:  # both workers write their units
            assert process.poll() is None, process.communicate()[1].decode()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        target = _staged(out) + more
        while _staged(out) < target:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in writers):  # they watch their parent
            assert time.monotonic() < deadline, "a worker outlived the killed command"
            time.sleep(0.05)
        assert (out / ".workers").is_dir()  # what the units took waits there for the rerun
        assert _crash_damage(out) == []
    # one process now: it adopts what the killed units took first, then resumes in place
    final = subprocess.run(
        [str(RIG), *_args(out, 4, "--workers", "1")], cwd=ROOT, capture_output=True, timeout=180
    )
    assert final.returncode == 0, final.stderr.decode()
    assert "adopted" in final.stdout.decode()
    assert_complete_once(out, QUICK, _coins(4))
    warnings = [str(p) for p in verify(out) if p.severity == "warning"]
    assert all("never finished" in w for w in warnings), warnings
    assert [str(p) for p in verify(out) if p.severity == "error"] == []
    assert ground_truth_mismatches(out) == []
    assert not (out / ".workers").exists() and not (out / ".lock").exists()


def _running_sessions(out: Path) -> int:
    """Sessions the units are running now (their records say so until they end)."""
    running = 0
    for path in out.glob(".workers/*/sessions/*.json"):
        try:
            running += json.loads(path.read_text())["status"] == "running"
        except (OSError, ValueError, KeyError):
            continue  # being replaced just now
    return running


def test_ctrl_c_parks_every_rig_and_a_rerun_completes(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    # at 5 % of real time each unit's session lasts seconds: both are surely shooting at once
    command = [str(RIG), *_args(out, 8, "--workers", "2", "--time-scale", "0.05")]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 90
    while _running_sessions(out) < 2:  # both units are shooting
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)  # to the command only, as `kill -INT` would
    _, stderr = process.communicate(timeout=90)
    assert process.returncode == 130, stderr.decode()
    assert stderr.decode().count("paused; rerun to resume") == 2
    # what both units took was adopted, each session recorded as interrupted
    sessions = DatasetReader(out).sessions()
    assert [(s["status"], s["finish_reason"]) for s in sessions] == [("paused", "interrupted")] * 2
    assert [str(p) for p in verify(out) if p.severity == "error"] == []
    assert not (out / ".workers").exists()
    result = _simulate(out, 8, "--workers", "2")
    assert result.exit_code == 0, result.output
    assert_complete_once(out, QUICK, _coins(8))
    assert [str(p) for p in verify(out)] == []


def _unit_with_images(root: Path, unit: Path, coins: int) -> None:
    """A main dataset, and one unit's staging dataset holding both catalog images of `coins`."""
    with DatasetWriter(root):
        pass
    with DatasetWriter(unit) as writer:
        for number in range(coins):
            writer.add_coin(f"C{number}", collection="test")
            for side in ("obverse", "reverse"):
                image = np.full((16, 16, 3), 40 * number + (side == "reverse"), dtype=np.uint8)
                writer.write_catalog_image(f"C{number}", side, image, ext="png")


def test_adopting_twice_adds_nothing_and_a_torn_unit_line_is_left_out(tmp_path: Path) -> None:
    """What makes a rerun's adoption safe after a kill: idempotent, whole lines only."""
    root = tmp_path / "main"
    unit = unit_root(root, 0)
    _unit_with_images(root, unit, 2)
    with (unit / "metadata.jsonl").open("ab") as handle:
        handle.write(b'{"file_name": "catalog/C2/obverse.png", "sha2')  # killed mid-append
    with DatasetWriter(root) as writer:
        assert Adopter(writer).adopt_in_order([unit]) == 4
        assert Adopter(writer).adopt_in_order([unit]) == 0  # a rerun after a kill mid-adoption
    names = [line["file_name"] for line in metadata_lines(root)]
    assert names == [f"catalog/C{n}/{side}.png" for n in (0, 1) for side in ("obverse", "reverse")]
    assert (root / "coins.jsonl").read_bytes() == (unit / "coins.jsonl").read_bytes()
    assert [str(p) for p in verify(root)] == []
    # the main dataset's files are its own links: removing the unit loses nothing
    remove_units(root, [unit])
    assert not (root / ".workers").exists()
    assert [str(p) for p in verify(root)] == []


_loads = st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(_loads, st.integers(min_value=1, max_value=20), st.integers(min_value=1, max_value=10))
def test_units_cover_every_coin_once_in_order(
    sizes: list[int], workers: int, min_coins: int
) -> None:
    loads, n = [], 0
    for size in sizes:
        loads.append([CoinJob(f"C{n + i}", i) for i in range(size)])
        n += size
    units = split_units(loads, workers, min_coins)
    # every coin once, in order, each in a unit of its own load, keeping its slot
    assert [job for unit in units for job in unit.jobs] == [job for load in loads for job in load]
    assert [u.index for u in units] == list(range(len(units)))
    for unit in units:
        assert unit.jobs and all(job in loads[unit.load] for job in unit.jobs)
    # a load is cut only into slices of at least min_coins, of sizes that differ by one at most
    for number in range(len(loads)):
        sizes_of = [len(u.jobs) for u in units if u.load == number]
        if len(sizes_of) > 1:
            assert min(sizes_of) >= min_coins and max(sizes_of) - min(sizes_of) <= 1
    # as many units as processes, as far as loads and min_coins allow
    most = sum(max(1, len(load) // min_coins) for load in loads)
    assert len(units) == max(len(loads), min(workers, most))
