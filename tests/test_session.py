"""The session runner and engine against fake devices, and the `rig capture` command path."""

from __future__ import annotations

import contextlib
import json
import sys
import types
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from fakes import FakeRig, FakeTriggeredCamera, make_rig
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from capture.checks import verify
from capture.engine import CoinJob, OperatorRequest
from capture.events import (
    Event,
    FinishReason,
    JsonlLog,
    RunState,
    SessionDone,
    SessionRecordFailed,
    ShotDone,
    ShotRetry,
    ShotSkipped,
)
from capture.plan import Plan, expand
from capture.session import SessionRunner
from capture.shots import IN_FLIGHT
from capture.writer import DatasetWriteError, DatasetWriter
from dataset.jsonl import read_jsonl
from dataset.layout import DatasetError
from dataset.reader import DatasetReader
from pipeline.rig_cli import dataset as dataset_cli
from pipeline.rig_cli.capture import register
from rig.config import CameraSettings, load_config
from rig.errors import ConfigError, DeviceAlarm, DeviceFault, DeviceTimeout

ROOT = Path(__file__).resolve().parents[1]
PLAN = Plan(name="t", angle_count=3, lights=("raking_n", "diffuse"), retries=2)  # 12 shots


def _no_sleep(_: float) -> None:
    return None


def _runner(
    root: Path, fake: FakeRig, plan: Plan = PLAN, coins: tuple[CoinJob, ...] = (CoinJob("C1", 0),)
) -> tuple[SessionRunner, DatasetWriter, list[Event]]:
    writer = DatasetWriter(root, queue_size=2).open()
    events: list[Event] = []
    runner = SessionRunner(
        fake.rig, plan, writer, coins, listeners=[events.append], sleep=_no_sleep
    )
    return runner, writer, events


def _run(root: Path, fake: FakeRig, **kw: Any) -> tuple[SessionRunner, list[Event]]:
    runner, writer, events = _runner(root, fake, **kw)
    try:
        runner.run()
    finally:
        writer.close()
    return runner, events


def _session_record(root: Path, runner: SessionRunner) -> dict[str, Any]:
    return json.loads((root / "sessions" / f"{runner.session_id}.json").read_text())


def _assert_parked(fake: FakeRig) -> None:
    assert not fake.lightbox.lit
    assert "turntable.stop" in fake.log.names()
    if fake.arm is not None:
        assert fake.arm.parked


def _errors(root: Path) -> list[str]:
    return [str(p) for p in verify(root) if p.severity == "error"]


def test_full_session_with_arm(tmp_path: Path) -> None:
    fake = make_rig()
    runner, events = _run(tmp_path, fake)
    assert runner.status().state is RunState.DONE
    names = fake.log.names()
    assert names.index("arm.pick_from_slot") < names.index("camera.grab")
    assert names.count("arm.flip_on_turntable") == 1
    assert names[-4:] == ["arm.park", "turntable.stop", "lightbox.all_off", "arm.park"]
    assert fake.arm is not None and fake.arm.on_turntable is None  # returned to its slot
    # lights switch per shot inside an angle; the turntable moves once per angle and side
    assert names.count("turntable.move_to_deg") == 5  # 0 is home; 120, 240, flip, 120, 0
    assert fake.camera.grabs == 12
    record = _session_record(tmp_path, runner)
    assert record["status"] == "done" and record["finish_reason"] == "completed"
    assert record["counts"]["written"] == 12 and record["missing"] == []
    assert verify(tmp_path) == []
    assert isinstance(events[-1], SessionDone)
    meta = DatasetReader(tmp_path).records()
    assert {r["file_name"] for r in meta} == {
        f"images/C1/{e.side}/{e.index:04d}.png" for e in expand(PLAN)
    }
    assert meta[0]["lights"]["north"] == 1.0 and meta[0]["role"] == "capture"


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    angles=st.integers(1, 4),
    lights=st.lists(st.sampled_from(["raking_n", "raking_e", "top"]), min_size=1, unique=True),
    coins=st.integers(1, 3),
    faults=st.lists(st.integers(1, 40), max_size=4),
    triggered=st.booleans(),
    lost=st.lists(st.integers(1, 40), max_size=3),
)
def test_every_planned_shot_written_exactly_once(
    tmp_path_factory: pytest.TempPathFactory,
    angles: int,
    lights: list[str],
    coins: int,
    faults: list[int],
    triggered: bool,
    lost: list[int],
) -> None:
    root = tmp_path_factory.mktemp("ds")
    plan = Plan(name="h", angle_count=angles, lights=tuple(lights), retries=1)
    fake = make_rig(triggered=triggered)
    # transient faults (one per command) that a single retry absorbs
    method = "trigger" if triggered else "grab"
    for n in faults:
        fake.camera._faults[method].extend([None] * n + [DeviceTimeout("late")])
    if triggered:  # frames lost after their exposure: retaken
        for n in lost:
            fake.camera._faults["result"].extend([None] * n + [DeviceTimeout("frame lost")])
    jobs = tuple(CoinJob(f"C{i}", i) for i in range(coins))
    runner, _ = _run(root, fake, plan=plan, coins=jobs)
    assert runner.status().state is RunState.DONE
    lines = read_jsonl(root / "metadata.jsonl").records
    counts = Counter(line["file_name"] for line in lines)
    expected = {
        f"images/{j.coin_id}/{e.side}/{e.index:04d}.png" for j in jobs for e in expand(plan)
    }
    assert set(counts) == expected and set(counts.values()) == {1}
    assert verify(root) == []
    if triggered:
        assert _truth_mismatches(root) == []


def _truth_mismatches(root: Path) -> list[str]:
    """Records whose angle or lights differ from what the fake camera saw at exposure time."""
    return [
        f"{r['file_name']}: {r['turntable_deg']} {r['lights']} vs {r['sim']}"
        for r in DatasetReader(root).records()
        if (r["turntable_deg"], r["lights"]) != (r["sim"]["turntable_deg"], r["sim"]["lights"])
    ]


def test_triggered_camera_frames_overlap_the_next_set_up(tmp_path: Path) -> None:
    """Nothing moves during an exposure; frames are collected after the next shot's set-up."""
    fake = make_rig(triggered=True)
    runner, events = _run(tmp_path, fake)
    assert runner.status().state is RunState.DONE
    names = fake.log.names()
    assert "camera.grab" not in names and names.count("camera.trigger") == 12
    for i, name in enumerate(names):
        if name == "camera.trigger":
            assert names[i + 1] == "camera.exposed"  # waited for before any other call
    # the first frame is collected only after the second shot's light switch
    first_result = names.index("camera.result")
    assert names[:first_result].count("lightbox.set_pattern") == 2
    assert verify(tmp_path) == [] and _truth_mismatches(tmp_path) == []
    done = [e.shot for e in events if isinstance(e, ShotDone)]
    assert done == [e.index for e in expand(PLAN)]  # in plan order, each once


def test_frame_lost_after_its_exposure_is_retaken(tmp_path: Path) -> None:
    fake = make_rig(triggered=True)
    fake.camera._faults["result"].extend([None] * 4 + [DeviceTimeout("frame lost")])
    runner, events = _run(tmp_path, fake)
    assert runner.status().state is RunState.DONE
    (retry,) = [e for e in events if isinstance(e, ShotRetry)]
    assert retry.shot == 4 and "frame lost" in retry.error
    assert fake.camera.grabs == 13  # one exposure more than the plan's 12
    # the rig went back to shot 4's light for the retake, then on to the shot after
    assert verify(tmp_path) == [] and _truth_mismatches(tmp_path) == []
    assert len(DatasetReader(tmp_path).records()) == 12


@pytest.mark.parametrize("on_failure", ["pause", "skip"])
def test_frames_lost_for_good_pause_or_skip(tmp_path: Path, on_failure: str) -> None:
    plan = PLAN.model_copy(update={"on_failure": on_failure})
    fake = make_rig(triggered=True)
    fake.camera._faults["result"].extend([None] * 3)
    fake.camera._faults["result"].extend([DeviceFault("camera: transfer failed")] * 4)
    runner, events = _run(tmp_path, fake, plan=plan)
    record = _session_record(tmp_path, runner)
    if on_failure == "pause":
        assert runner.status().state is RunState.PAUSED
        assert runner.status().reason is FinishReason.DEVICE_FAILURE
        # shots 0-2 written; shot 3 lost (its retake failed 3 times); shot 4 was exposed
        # before shot 3 was collected and is kept on the way out
        assert record["counts"]["written"] == 4 and "shot 3" in record["message"]
        _assert_parked(fake)
    else:
        assert runner.status().state is RunState.DONE
        assert [e.shot for e in events if isinstance(e, ShotSkipped)] == [3]
        assert record["counts"]["written"] == 11 and record["missing"][0]["shot"] == 3
    assert _errors(tmp_path) == [] and _truth_mismatches(tmp_path) == []
    again = make_rig(triggered=True)
    _run(tmp_path, again, plan=plan)
    assert verify(tmp_path) == [] and _truth_mismatches(tmp_path) == []


def test_keyboard_interrupt_keeps_frames_already_exposed(tmp_path: Path) -> None:
    fake = make_rig(triggered=True)
    fake.lightbox._faults["set_pattern"].extend([None] * 6 + [KeyboardInterrupt()])
    runner, writer, _ = _runner(tmp_path, fake)
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    writer.close()
    assert runner.status().reason is FinishReason.INTERRUPTED
    _assert_parked(fake)
    # the interrupt hit a light switch while the two shots before were still in flight:
    # both were collected and written on the way out
    exposed = fake.camera.grabs
    assert 2 <= exposed < 12
    assert sorted(r["shot"] for r in DatasetReader(tmp_path).records()) == list(range(exposed))
    assert _errors(tmp_path) == [] and _truth_mismatches(tmp_path) == []
    again = make_rig(triggered=True)
    _run(tmp_path, again)
    assert again.camera.grabs == 12 - exposed and verify(tmp_path) == []


def test_interrupt_while_waiting_for_a_frame_keeps_that_frame(tmp_path: Path) -> None:
    """Ctrl-C during result(): the shot being waited for is still collected on the way out."""
    fake = make_rig(triggered=True)
    fake.camera._faults["result"].extend([None] * 3 + [KeyboardInterrupt()])
    runner, writer, _ = _runner(tmp_path, fake)
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    writer.close()
    # shots 0-4 exposed; the interrupt hit the wait for shot 3 while shot 4 was in flight
    assert fake.camera.grabs == 5
    assert sorted(r["shot"] for r in DatasetReader(tmp_path).records()) == [0, 1, 2, 3, 4]
    record = _session_record(tmp_path, runner)
    assert [m["shot"] for m in record["missing"]] == list(range(5, 12))
    assert {m["reason"] for m in record["missing"]} == {"not taken (interrupted)"}
    assert _errors(tmp_path) == [] and _truth_mismatches(tmp_path) == []


def test_interrupt_after_a_frame_is_queued_never_writes_it_twice(tmp_path: Path) -> None:
    """Ctrl-C while a listener draws a shot's progress: that shot was queued, and stays once."""
    fake = make_rig(triggered=True)
    runner, writer, _ = _runner(tmp_path, fake)
    done = {"n": 0}

    def interrupted_progress(event: Event) -> None:
        if isinstance(event, ShotDone):
            done["n"] += 1
            if done["n"] == 4:
                raise KeyboardInterrupt

    runner.add_listener(interrupted_progress)
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    writer.close()
    lines = read_jsonl(tmp_path / "metadata.jsonl").records
    assert sorted(line["shot"] for line in lines) == list(range(fake.camera.grabs))
    assert _errors(tmp_path) == [] and _truth_mismatches(tmp_path) == []


def test_exposed_shots_the_writer_refuses_are_recorded_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write error while collecting: the session record names every exposed shot lost."""
    fake = make_rig(triggered=True)
    runner, writer, _ = _runner(tmp_path, fake)
    real = writer.submit
    submitted = {"n": 0}

    def refusing(*args: Any) -> None:
        submitted["n"] += 1
        if submitted["n"] > 3:  # as after a failed write: the dataset takes nothing more
            raise DatasetWriteError("disk full", disk_full=True)
        real(*args)

    monkeypatch.setattr(writer, "submit", refusing)
    runner.run()
    writer.close()
    assert runner.status().reason is FinishReason.DISK_FULL
    _assert_parked(fake)
    # shots 3 and 4 were exposed (in flight) when the writer refused shot 3
    assert fake.camera.grabs == 5 and len(DatasetReader(tmp_path).records()) == 3
    record = _session_record(tmp_path, runner)
    reasons = {m["shot"]: m["reason"] for m in record["missing"]}
    assert sorted(reasons) == list(range(3, 12))
    assert reasons[3].startswith("lost after its exposure") and "disk full" in reasons[3]
    assert reasons[4].startswith("lost after its exposure")
    assert {reasons[s] for s in range(5, 12)} == {"not taken (disk_full)"}
    assert _errors(tmp_path) == []


def _with_grab_timeout(timeout_s: float) -> Any:
    config = load_config(ROOT / "rig" / "config" / "presets" / "sim.yaml")
    camera = config.camera.model_copy(update={"grab_timeout_s": timeout_s})
    return config.model_copy(update={"camera": camera})


def test_a_frame_that_never_arrives_times_out_and_is_retaken(tmp_path: Path) -> None:
    """result() waits at most the camera's grab timeout; a frame late past it is retaken."""
    fake = make_rig(triggered=True)
    assert isinstance(fake.camera, FakeTriggeredCamera)
    fake.camera.stuck = {5}  # shot 4's frame never comes
    writer = DatasetWriter(tmp_path, queue_size=2).open()
    events: list[Event] = []
    runner = SessionRunner(
        fake.rig,
        PLAN,
        writer,
        [CoinJob("C1", 0)],
        config=_with_grab_timeout(0.25),
        listeners=[events.append],
        sleep=_no_sleep,
    )
    try:
        runner.run()
    finally:
        writer.close()
    assert runner.status().state is RunState.DONE
    timeouts = {args[0] for device, method, args in fake.log.calls if method == "result"}
    assert timeouts == {0.25}
    (retry,) = [e for e in events if isinstance(e, ShotRetry)]
    assert retry.shot == 4 and "0.25 s" in retry.error
    assert fake.camera.grabs == 13 and len(DatasetReader(tmp_path).records()) == 12
    assert verify(tmp_path) == [] and _truth_mismatches(tmp_path) == []


@pytest.mark.parametrize("on_failure", ["pause", "skip"])
def test_frames_that_never_arrive_pause_or_skip(tmp_path: Path, on_failure: str) -> None:
    """No config: the default grab timeout; a shot whose retakes time out too is a failure."""
    plan = PLAN.model_copy(update={"on_failure": on_failure})
    fake = make_rig(triggered=True)
    assert isinstance(fake.camera, FakeTriggeredCamera)
    # shot 4 (exposure 5) and its three retakes (7-9; shot 5 was exposure 6) never arrive
    fake.camera.stuck = {5, 7, 8, 9}
    runner, events = _run(tmp_path, fake, plan=plan)
    timeouts = {args[0] for device, method, args in fake.log.calls if method == "result"}
    assert timeouts == {CameraSettings.model_fields["grab_timeout_s"].default}
    record = _session_record(tmp_path, runner)
    if on_failure == "pause":
        assert runner.status().reason is FinishReason.DEVICE_FAILURE
        assert "shot 4" in record["message"] and "no frame within" in record["message"]
        assert sorted(r["shot"] for r in DatasetReader(tmp_path).records()) == [0, 1, 2, 3, 5]
        _assert_parked(fake)
    else:
        assert runner.status().state is RunState.DONE
        assert [e.shot for e in events if isinstance(e, ShotSkipped)] == [4]
        assert record["counts"]["written"] == 11 and record["missing"][0]["shot"] == 4
    assert _errors(tmp_path) == [] and _truth_mismatches(tmp_path) == []


def test_resume_after_pause_takes_only_the_rest(tmp_path: Path) -> None:
    fake = make_rig()
    fake.camera._faults["grab"].extend([None] * 5)
    fake.camera.fail("grab", DeviceFault("camera: sensor error"), times=3)  # beats 2 retries
    runner, events = _run(tmp_path, fake)
    status = runner.status()
    assert status.state is RunState.PAUSED and status.reason is FinishReason.DEVICE_FAILURE
    _assert_parked(fake)
    record = _session_record(tmp_path, runner)
    assert record["status"] == "paused" and record["counts"]["written"] == 5
    assert record["on_turntable"] == "C1" and len(record["missing"]) == 7
    assert _errors(tmp_path) == []  # missing shots are recorded, nothing inconsistent
    assert sum(isinstance(e, ShotRetry) for e in events) == 2

    again = make_rig()
    runner2, _ = _run(tmp_path, again)
    assert runner2.status().state is RunState.DONE
    assert again.camera.grabs == 7
    assert verify(tmp_path) == []


def test_checksum_mismatch_and_torn_line_are_reshot(tmp_path: Path) -> None:
    _run(tmp_path, make_rig())
    records = DatasetReader(tmp_path).records()
    (tmp_path / records[3]["file_name"]).write_bytes(b"bit rot")
    meta = tmp_path / "metadata.jsonl"
    data = meta.read_bytes()
    meta.write_bytes(data[: data.rstrip(b"\n").rfind(b"\n") + 1] + b'{"file_name": "ima')
    fake = make_rig()
    runner, events = _run(tmp_path, fake)
    assert runner.status().state is RunState.DONE
    retaken = sorted(e.file_name for e in events if isinstance(e, ShotDone))
    assert retaken == sorted([records[3]["file_name"], records[-1]["file_name"]])
    assert verify(tmp_path) == []


def test_fully_captured_coin_is_not_loaded_again(tmp_path: Path) -> None:
    _run(tmp_path, make_rig())
    fake = make_rig()
    runner, _ = _run(tmp_path, fake)
    assert runner.status().state is RunState.DONE
    assert "arm.pick_from_slot" not in fake.log.names() and fake.camera.grabs == 0


def test_on_failure_skip_records_missing_and_resume_retries(tmp_path: Path) -> None:
    plan = PLAN.model_copy(update={"on_failure": "skip"})
    fake = make_rig()
    fake.lightbox.fail("set_pattern", DeviceTimeout("lightbox: no reply"), times=3)
    runner, events = _run(tmp_path, fake, plan=plan)
    assert runner.status().state is RunState.DONE
    skipped = [e for e in events if isinstance(e, ShotSkipped)]
    assert [e.shot for e in skipped] == [0]
    record = _session_record(tmp_path, runner)
    assert record["counts"]["skipped"] == 1 and record["missing"][0]["shot"] == 0
    assert "no reply" in record["missing"][0]["reason"]
    assert [p.severity for p in verify(tmp_path)] == ["warning"]
    again = make_rig()
    _run(tmp_path, again, plan=plan)
    assert again.camera.grabs == 1 and verify(tmp_path) == []


def test_grbl_alarm_is_recovered(tmp_path: Path) -> None:
    fake = make_rig()
    fake.turntable.fail("move_to_deg", DeviceAlarm("ALARM:1 hard limit", code=1))
    runner, events = _run(tmp_path, fake)
    assert runner.status().state is RunState.DONE
    names = fake.log.names()
    assert names.count("turntable.recover") == 1
    assert names[names.index("turntable.recover") + 1] == "turntable.move_to_deg"
    assert any(isinstance(e, ShotRetry) and "ALARM" in e.error for e in events)


def test_broken_engine_ends_failed_parked_and_consistent(tmp_path: Path) -> None:
    fake = make_rig()
    runner, writer, _ = _runner(tmp_path, fake)
    real = runner.engine.start_shot
    calls = {"n": 0}

    def broken(event: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("engine bug")
        return real(event)

    runner.engine.start_shot = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="engine bug"):
        runner.run()
    writer.close()
    assert runner.status().state is RunState.FAILED
    _assert_parked(fake)
    record = _session_record(tmp_path, runner)
    assert record["status"] == "failed" and "engine bug" in record["message"]
    assert record["counts"]["written"] == 3
    assert _errors(tmp_path) == []


def test_keyboard_interrupt_parks_and_is_resumable(tmp_path: Path) -> None:
    fake = make_rig()
    fake.camera._faults["grab"].extend([None] * 6 + [KeyboardInterrupt()])
    runner, writer, _ = _runner(tmp_path, fake)
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    writer.close()
    status = runner.status()
    assert status.state is RunState.PAUSED and status.reason is FinishReason.INTERRUPTED
    _assert_parked(fake)
    assert _errors(tmp_path) == [] and not (tmp_path / ".lock").exists()
    again = make_rig()
    _run(tmp_path, again)
    assert again.camera.grabs == 6 and verify(tmp_path) == []


def test_arm_failure_is_not_retried_and_pauses(tmp_path: Path) -> None:
    fake = make_rig()
    assert fake.arm is not None
    fake.arm.fail("flip_on_turntable", DeviceTimeout("arm: no reply"))
    runner, _ = _run(tmp_path, fake)
    assert runner.status().state is RunState.PAUSED
    assert fake.log.names().count("arm.flip_on_turntable") == 1
    _assert_parked(fake)
    assert _session_record(tmp_path, runner)["counts"]["written"] == 6


def test_disk_full_during_session_pauses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import capture.writer as ds

    real = ds._write_bytes
    count = {"n": 0}

    def full(path: Path, data: bytes) -> None:
        if path.suffix != ".json" and ".png" in path.name:
            count["n"] += 1
            if count["n"] > 4:
                raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(ds, "_write_bytes", full)
    fake = make_rig()
    runner, _ = _run(tmp_path, fake)
    status = runner.status()
    assert status.state is RunState.PAUSED and status.reason is FinishReason.DISK_FULL
    _assert_parked(fake)
    monkeypatch.undo()
    assert _errors(tmp_path) == [] and len(DatasetReader(tmp_path).records()) == 4


def _disk_full_after_four_images(
    monkeypatch: pytest.MonkeyPatch, session_writes_that_fail: set[int]
) -> None:
    """Images fail from the fifth on; the Nth session record write (1-based) fails if listed."""
    import errno

    import capture.writer as ds

    real = ds._write_bytes
    count = {"png": 0, "json": 0}

    def full(path: Path, data: bytes) -> None:
        if ".png" in path.name:
            count["png"] += 1
            if count["png"] > 4:
                raise OSError(errno.ENOSPC, "No space left on device")
        elif path.parent.name == "sessions":
            count["json"] += 1
            if count["json"] in session_writes_that_fail:
                raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(ds, "_write_bytes", full)


def test_a_session_record_refused_by_a_full_disk_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _disk_full_after_four_images(monkeypatch, session_writes_that_fail={2})  # 1: running
    runner, events = _run(tmp_path, make_rig())
    record = _session_record(tmp_path, runner)
    assert (record["status"], record["finish_reason"]) == ("paused", "disk_full")
    (failed,) = [e for e in events if isinstance(e, SessionRecordFailed)]
    assert (failed.state, failed.reason) == (RunState.PAUSED, FinishReason.DISK_FULL)
    assert "disk full" in failed.error


def test_a_session_record_that_stays_stale_is_corrected_in_the_event_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _disk_full_after_four_images(monkeypatch, session_writes_that_fail={2, 3})
    fake = make_rig()
    runner, writer, _ = _runner(tmp_path, fake)
    log = JsonlLog(tmp_path / "events.jsonl")  # outside the dataset: a log on another disk
    runner.add_listener(log)
    try:
        runner.run()
    finally:
        writer.close()
        log.close()
    assert runner.status().reason is FinishReason.DISK_FULL
    _assert_parked(fake)
    # the record keeps its last good write; the log says how the session really ended
    assert _session_record(tmp_path, runner)["status"] == "running"
    lines = read_jsonl(tmp_path / "events.jsonl").records
    (failed,) = [line for line in lines if line["event"] == "SessionRecordFailed"]
    assert failed["session_id"] == runner.session_id
    assert (failed["state"], failed["reason"]) == ("paused", "disk_full")
    assert lines[-1]["event"] == "SessionDone"


def test_listener_errors_never_stop_a_session(tmp_path: Path) -> None:
    fake = make_rig()
    runner, writer, _ = _runner(tmp_path, fake)

    def broken(event: Event) -> None:
        raise ValueError("progress bar bug")

    runner.add_listener(broken)
    runner.run()
    writer.close()
    assert runner.status().state is RunState.DONE


def test_stop_request_pauses_after_current_shot(tmp_path: Path) -> None:
    """No exposure starts after a stop request; every frame already exposed is kept."""
    fake = make_rig()
    runner, writer, _ = _runner(tmp_path, fake)
    exposed_at_request: list[int] = []

    def stop(event: Event) -> None:
        if isinstance(event, ShotDone) and not exposed_at_request:
            exposed_at_request.append(fake.camera.grabs)
            runner.request_stop()

    runner.add_listener(stop)
    runner.run()
    writer.close()
    assert runner.status().reason is FinishReason.STOP_REQUESTED
    # the first frame is collected while the next shots are exposed (capture.shots.IN_FLIGHT)
    assert exposed_at_request == [IN_FLIGHT] and fake.camera.grabs == IN_FLIGHT
    assert len(DatasetReader(tmp_path).records()) == IN_FLIGHT
    _assert_parked(fake)
    assert _errors(tmp_path) == []


def test_operator_handles_coins_without_arm(tmp_path: Path) -> None:
    fake = make_rig(arm=False, tilt=True)
    asked: list[OperatorRequest] = []
    plan = PLAN.model_copy(update={"tilts_deg": (0.0, 15.0)})
    writer = DatasetWriter(tmp_path / "a").open()  # beside b: never a dataset in a dataset
    runner = SessionRunner(
        fake.rig, plan, writer, [CoinJob("C1")], prompt=asked.append, sleep=_no_sleep
    )
    runner.run()
    writer.close()
    assert [(r.action, r.side_up) for r in asked] == [
        ("place", "obverse"),
        ("flip", "reverse"),
        ("remove", None),
    ]
    assert fake.log.names().count("tilt.tilt_to_deg") >= 6 and fake.camera.grabs == 24

    nobody = make_rig(arm=False)
    runner2, _ = _run(tmp_path / "b", nobody, coins=(CoinJob("C1"),))
    assert runner2.status().state is RunState.PAUSED and "operator" in runner2.status().message


def test_refusals_before_any_device_moves(tmp_path: Path) -> None:
    config = load_config(ROOT / "rig" / "config" / "presets" / "sim.yaml")
    fake = make_rig()
    writer = DatasetWriter(tmp_path).open()
    bad_plan = Plan(name="b", angle_count=2, lights=("laser",))
    runner = SessionRunner(fake.rig, bad_plan, writer, [CoinJob("C1", 0)], config=config)
    with pytest.raises(ConfigError, match="laser"):
        runner.run()
    assert runner.status().state is RunState.FAILED
    assert not any(
        n.startswith(("camera.", "arm.pick", "turntable.move")) for n in fake.log.names()
    )
    writer.close()
    _run(tmp_path, make_rig())
    other = Plan(name="o", angle_count=3, lights=("top", "diffuse"))
    moved = make_rig()
    with pytest.raises(DatasetError, match="different plan"):
        _run(tmp_path, moved, plan=other)
    assert "camera.grab" not in moved.log.names()
    finer = PLAN.model_copy(update={"angle_count": 6})  # same lights, other angles per shot
    with pytest.raises(DatasetError, match="different plan"):
        _run(tmp_path, make_rig(), plan=finer)
    with pytest.raises(DatasetError):
        SessionRunner(fake.rig, PLAN, writer, [CoinJob("../x")])


# ---------------------------------------------------------------- the command path


@pytest.fixture()
def cli(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[typer.Typer, list[FakeRig]]]:
    """The `rig` app with capture and dataset registered, and a fake rig.assembly.open_rig."""
    opened: list[FakeRig] = []
    pending: list[FakeRig] = []

    @contextlib.contextmanager
    def open_rig(config: Any, *, faults: Any = None, time_scale: Any = None) -> Iterator[Any]:
        fake = pending.pop(0) if pending else make_rig()
        opened.append(fake)
        yield fake.rig

    module = types.ModuleType("rig.assembly")
    module.open_rig = open_rig  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rig.assembly", module)
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test app."""

    register(app)
    dataset_cli.register(app)
    yield app, pending
    assert len(opened) <= 3


QUICK = str(ROOT / "capture" / "plans" / "quick.yaml")
SIM = str(ROOT / "rig" / "config" / "presets" / "sim.yaml")


@pytest.mark.parametrize("coin", ["../x", "a/b", "", "x" * 65, "Münze"])
def test_cli_refuses_bad_coin_ids(tmp_path: Path, cli: Any, coin: str) -> None:
    app, _ = cli
    out = tmp_path / "ds"
    result = CliRunner().invoke(
        app, ["capture", "--coin", coin, "--config", SIM, "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    assert "invalid coin id" in result.output
    assert not out.exists()


def test_cli_capture_verify_summary_sheet(tmp_path: Path, cli: Any) -> None:
    app, _ = cli
    out = tmp_path / "ds"
    args = ["capture", "--coin", "SIM-0001", "--slot", "2", "--config", SIM, "--plan", QUICK]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "done: 24 images" in result.output
    assert CliRunner().invoke(app, ["dataset", "verify", str(out)]).exit_code == 0
    summary = CliRunner().invoke(app, ["dataset", "summary", str(out), "--json"])
    assert json.loads(summary.output)["by_side"] == {"obverse": 12, "reverse": 12}
    sheet = tmp_path / "sheet.png"
    result = CliRunner().invoke(
        app, ["dataset", "sheet", str(out), "--coin", "SIM-0001", "--out", str(sheet)]
    )
    assert result.exit_code == 0 and sheet.stat().st_size > 0
    (out / "images/SIM-0001/obverse/0000.png").write_bytes(b"x")
    assert CliRunner().invoke(app, ["dataset", "verify", str(out)]).exit_code == 1
    logs = list((out / "sessions").glob("*.events.jsonl"))
    assert logs and "ShotDone" in logs[0].read_text()


def test_cli_ctrl_c_exits_130_and_resumes(tmp_path: Path, cli: Any) -> None:
    app, pending = cli
    fake = make_rig()
    fake.camera._faults["grab"].extend([None] * 3 + [KeyboardInterrupt()])
    pending.append(fake)
    out = tmp_path / "ds"
    tray = tmp_path / "tray.csv"
    tray.write_text("slot,coin_id\n0,SIM-0001\n1,SIM-0002\n")
    args = ["capture", "--tray", str(tray), "--config", SIM, "--plan", QUICK, "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 130, result.output
    _assert_parked(fake)
    (session,) = DatasetReader(out).sessions()
    assert session["status"] == "paused" and session["finish_reason"] == "interrupted"
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(app, ["dataset", "verify", str(out)]).exit_code == 0


def test_cli_dry_run_touches_nothing(tmp_path: Path, cli: Any, monkeypatch: Any) -> None:
    app, _ = cli
    monkeypatch.delitem(sys.modules, "rig.assembly")
    out = tmp_path / "ds"
    args = ["capture", "--coin", "SIM-0001", "--config", SIM, "--plan", QUICK, "--dry-run"]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "24 shots per coin" in result.output and "estimated physical time" in result.output
    assert not out.exists()


def test_session_record_snapshot_and_progress_output(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from capture.progress import PlainProgress, RichProgress

    config = load_config(ROOT / "rig" / "config" / "presets" / "sim.yaml")
    fake = make_rig()
    writer = DatasetWriter(tmp_path).open()
    plain, rich_out = io.StringIO(), io.StringIO()
    bars = RichProgress(1, Console(file=rich_out, force_terminal=True, width=80))
    fake.camera.fail("grab", DeviceTimeout("late"))
    runner = SessionRunner(
        fake.rig,
        PLAN,
        writer,
        [CoinJob("C1", 0)],
        config=config,
        listeners=[PlainProgress(plain), bars],
        sleep=_no_sleep,
    )
    with bars:
        runner.run()
    writer.close()
    record = _session_record(tmp_path, runner)
    assert record["rig_config"] == config.model_dump(mode="json")
    assert Plan.model_validate(record["plan"]) == PLAN
    assert [d["kind"] for d in record["devices"]] == ["turntable", "lightbox", "camera", "arm"]
    assert record["timings"]["estimated_physical_s"] > 0 and record["errors"]
    lines = plain.getvalue().splitlines()
    assert lines[0] == "coin C1: 12 of 12 shots to take"
    assert any(line.startswith("  retry 1 (shot 0)") for line in lines)
    assert lines[-1] == "session done: 12 taken, 0 skipped"
    assert "retry 1" in rich_out.getvalue()


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("slot,coin_id\n0,SIM-0001\n0,SIM-0002\n", "a slot is listed twice"),
        ("0,SIM-0001\n1,SIM-0001\n", "a coin is listed twice"),
        ("0,SIM-0001\nfirst,SIM-0002\n", "expected `slot,coin_id`"),
        ("0,SIM-0001,extra\n", "expected `slot,coin_id`"),
        ("0,../x\n", "invalid coin id"),
        ("# nothing but a comment\n", "no coins listed"),
        ("0,SIM-0001\n99,SIM-0002\n", "slot"),  # the sim tray has 24 slots
    ],
)
def test_cli_refuses_bad_tray_files(tmp_path: Path, cli: Any, rows: str, message: str) -> None:
    app, _ = cli
    tray = tmp_path / "tray.csv"
    tray.write_text(rows)
    out = tmp_path / "ds"
    result = CliRunner().invoke(
        app, ["capture", "--tray", str(tray), "--config", SIM, "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_progress_is_bars_on_a_terminal_and_lines_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from capture.progress import PlainProgress, RichProgress, make_progress

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert isinstance(make_progress(3), RichProgress)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert isinstance(make_progress(3), PlainProgress)
