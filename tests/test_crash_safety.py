"""Crash safety of `rig simulate`: kill -9 at random moments, Ctrl-C, and a disk that fills up."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
from simulate_support import (
    QUICK,
    ROOT,
    assert_complete_once,
    ground_truth_mismatches,
    verify_errors,
)
from typer.testing import CliRunner

import capture.writer as ds
from capture.checks import verify
from dataset.jsonl import read_jsonl
from dataset.reader import DatasetReader
from pipeline.rig_cli.app import app

RIG = Path(sys.executable).with_name("rig")
COINS = [f"SIM-{i:04d}" for i in range(3)]


def _rig_command(out: Path, coins: int) -> list[str]:
    return [
        str(RIG),
        "simulate",
        "--coins",
        str(coins),
        "--types",
        "3",
        "--image-size",
        "64",
        "--plan",
        str(QUICK),
        "--out",
        str(out),
    ]


def _crash_damage(root: Path) -> list[str]:
    """What a crash may not leave behind: anything but unfinished sessions and one orphan.

    A kill between an image's rename and its metadata line leaves that image without a line
    (an orphan the resume reshoots); the writer is one thread, so there is at most one. A killed
    session's record still says `running` and lists no missing shots, so its untaken shots are
    "not accounted for" until the resume takes them.
    """
    damage: list[str] = []
    orphans = 0
    for problem in verify(root):
        text = str(problem)
        if problem.severity == "warning" or "not accounted for" in text:
            continue
        if "orphan file" in text:
            orphans += 1
            continue
        damage.append(text)
    if orphans > 1:
        damage.append(f"{orphans} orphan files")
    return damage


def _lines_written(root: Path) -> int:
    try:
        return (root / "metadata.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_kill_9_at_random_moments_then_resume(tmp_path: Path) -> None:
    """kill -9 a running `rig simulate` 12 times at seeded random moments, then let it finish.

    Most kills wait for a random number of new metadata lines plus a random few milliseconds,
    so they land while images and lines are being written (and every run makes progress);
    every fourth is a plain random delay, which also hits start-up, locking and the emulators.
    """
    out = tmp_path / "sim"
    command = _rig_command(out, coins=10)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    rng = random.Random(20261121)
    for kill in range(12):
        before = _lines_written(out)
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        if kill % 4 == 3:
            time.sleep(rng.uniform(0.1, 1.5))
        else:
            target = before + rng.randint(1, 15)
            deadline = time.monotonic() + 60
            while _lines_written(out) < target and process.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.03))
        if process.poll() is not None:  # say why it ended: an early error, or too few coins
            _, early = process.communicate(timeout=60)
            raise AssertionError(
                f"the run ended (exit {process.returncode}) before its kill: {early.decode()!r}"
            )
        process.send_signal(signal.SIGKILL)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == -signal.SIGKILL, stderr.decode()
        if (out / "dataset.json").exists():
            assert _crash_damage(out) == []
    final = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert final.returncode == 0, final.stderr.decode()

    coins = [f"SIM-{i:04d}" for i in range(10)]
    assert_complete_once(out, QUICK, coins)
    assert verify_errors(out) == []
    # only the killed sessions' records remain unfinished; nothing else is amiss
    warnings = [str(p) for p in verify(out) if p.severity == "warning"]
    assert all("never finished" in w for w in warnings), warnings
    assert ground_truth_mismatches(out) == []
    assert not list(out.rglob(".*.tmp-*")) and not (out / ".lock").exists()
    assert CliRunner().invoke(app, ["dataset", "verify", str(out)]).exit_code == 0


def test_ctrl_c_exits_130_parked_and_resumable(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    # Enough coins that the run is still shooting when the signal lands, even if this process
    # was descheduled for a second or two on a loaded machine (three coins take ~1.5 s, and a
    # signal that arrives while the finished process exits is rightly ignored).
    coins = [f"SIM-{i:04d}" for i in range(10)]
    command = _rig_command(out, coins=len(coins))
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # As from a terminal: a child inherits an ignored SIGINT (something earlier in a long
        # pytest run can leave it so), and Python then never raises KeyboardInterrupt.
        preexec_fn=_default_sigint,
    )
    # interrupt once shots are being written, not while the interpreter is still importing
    deadline = time.monotonic() + 60
    while _captures_written(out) < 10:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr.decode()
    assert "rerun" in stderr.decode()
    (session,) = DatasetReader(out).sessions()
    assert session["status"] == "paused" and session["finish_reason"] == "interrupted"
    assert verify_errors(out) == []  # a clean stop records what it did not take
    final = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=120)
    assert final.returncode == 0, final.stderr.decode()
    assert_complete_once(out, QUICK, coins)
    assert [str(p) for p in verify(out)] == []


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _captures_written(out: Path) -> int:
    records = read_jsonl(out / "metadata.jsonl").records
    return sum(1 for r in records if r.get("role") == "capture")


class _Disk:
    """A disk with room for `budget` more bytes of files (and, optionally, `fsyncs` fsyncs)."""

    def __init__(self, budget: int, fsyncs: int | None = None) -> None:
        self.budget = budget
        self.fsyncs = fsyncs
        self.full = False

    def _enospc(self) -> OSError:
        self.full = True
        return OSError(errno.ENOSPC, "No space left on device")

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real_write = ds._write_bytes
        real_fsync = os.fsync

        def write_bytes(path: Path, data: bytes) -> None:
            if len(data) > self.budget:
                raise self._enospc()
            self.budget -= len(data)
            real_write(path, data)

        def fsync(fd: int) -> None:
            if self.fsyncs is not None:
                if self.fsyncs <= 0:
                    raise self._enospc()
                self.fsyncs -= 1
            real_fsync(fd)

        # Only the dataset module sees the full disk: a proxy `os` whose fsync can fail.
        proxy: Any = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if k[0] != "_"})
        proxy.fsync = fsync
        monkeypatch.setattr(ds, "_write_bytes", write_bytes)
        monkeypatch.setattr(ds, "os", proxy)


@pytest.mark.parametrize(
    ("budget", "fsyncs"),
    [
        pytest.param(100_000, None, id="full-while-writing-catalog-images"),
        pytest.param(450_000, None, id="full-while-writing-captures"),
        pytest.param(10**9, 120, id="metadata-fsync-fails"),
    ],
)
def test_disk_full_stops_cleanly_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int, fsyncs: int | None
) -> None:
    out = tmp_path / "sim"
    args = ["simulate", "--coins", "3", "--types", "3", "--image-size", "64"]
    args += ["--plan", str(QUICK), "--out", str(out)]
    disk = _Disk(budget, fsyncs)
    disk.install(monkeypatch)
    result = CliRunner().invoke(app, args)
    assert disk.full
    assert result.exit_code == 3, result.output
    assert "disk full" in result.output and "rerun" in result.output
    monkeypatch.undo()  # space freed

    # Nothing corrupt: no torn line, no temporary file, no lock, every line's file intact.
    assert not read_jsonl(out / "metadata.jsonl").torn
    assert not list(out.rglob(".*.tmp-*")) and not (out / ".lock").exists()
    assert [p for p in verify_errors(out) if "not accounted for" not in p] == []
    assert ground_truth_mismatches(out) == []

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert_complete_once(out, QUICK, COINS)
    assert verify_errors(out) == []


def test_a_rerun_tidies_temporary_files_a_kill_left(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    args = ["simulate", "--coins", "1", "--image-size", "64", "--plan", str(QUICK)]
    args += ["--out", str(out)]
    assert CliRunner().invoke(app, args).exit_code == 0
    # what a kill -9 inside atomic_write leaves: never renamed, so never referenced
    litter = [
        out / ".dataset.json.tmp-99999",
        out / "sessions" / ".20260101T000000Z-abcdef.json.tmp-99999",
        out / "images" / "SIM-0000" / "obverse" / ".0003.png.tmp-99999",
    ]
    for path in litter:
        path.write_bytes(b"partial")
    assert any("temporary" in str(p) for p in verify(out))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "nothing to do" in result.output
    assert not any(path.exists() for path in litter)
    assert [str(p) for p in verify(out)] == []
