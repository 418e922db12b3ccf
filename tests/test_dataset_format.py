"""The dataset format's one home (dataset/): schema round trips, reading, validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capture.checks import verify
from capture.engine import CoinJob, ShotSettings
from capture.records import shot_metadata
from capture.writer import DatasetWriter
from dataset.jsonl import read_jsonl
from dataset.layout import DatasetError, image_name, resolve, safe_relative
from dataset.reader import DatasetReader, FileIndex
from dataset.schema import (
    CAPTURE_KEYS,
    CoinLine,
    DatasetInfo,
    MetadataLine,
    SessionRecord,
    type_errors,
)
from rig.devices import Frame
from training.data import read_dataset
from training.errors import DataError

TEXT = st.text(max_size=12)
FLOATS = st.floats(allow_nan=False, allow_infinity=False, width=64)
NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,10}", fullmatch=True).filter(
    lambda s: ".." not in s
)
LIGHTS = st.dictionaries(st.sampled_from(["north", "east", "top", "ring"]), FLOATS, max_size=4)


@st.composite
def metadata_lines(draw: st.DrawFn) -> dict[str, Any]:
    """A metadata line as the writer writes it: capture or catalog, sometimes simulated."""
    coin = draw(NAMES)
    side = draw(st.sampled_from(["obverse", "reverse"]))
    shot = draw(st.integers(0, 9999))
    line: dict[str, Any] = {
        "file_name": image_name(coin, side, shot),
        "coin_id": coin,
        "side": side,
        "role": draw(st.sampled_from(["capture", "catalog"])),
        "sha256": draw(st.text("0123456789abcdef", min_size=64, max_size=64)),
    }
    if line["role"] == "capture":
        line.update(
            session_id=draw(NAMES),
            shot=shot,
            turntable_deg=draw(FLOATS),
            tilt_deg=draw(st.none() | FLOATS),
            light=draw(TEXT),
            lights=draw(LIGHTS),
            exposure_us=draw(FLOATS),
            gain_db=draw(FLOATS),
            camera=draw(TEXT),
            width=draw(st.integers(1, 10_000)),
            height=draw(st.integers(1, 10_000)),
            pixel_format=draw(st.sampled_from(["RGB8", "Mono16", "BGR8"])),
            captured_at="2026-01-01T00:00:00Z",
            reference=draw(st.booleans()),
            flatfield=draw(
                st.none()
                | st.fixed_dictionaries(
                    {"applied": st.booleans(), "calibration": st.none() | TEXT},
                    optional={"gamma": FLOATS, "reason": TEXT},
                )
            ),
        )
        if draw(st.booleans()):
            line["sim"] = {"coin": coin, "side": side, "true_angle_deg": draw(FLOATS)}
    else:
        line.update(source=draw(TEXT), catalog_ref=draw(TEXT))
    if draw(st.booleans()):
        line["operator_note"] = draw(TEXT)  # a user's own field: kept, not refused
    return line


@settings(max_examples=200, deadline=None)
@given(metadata_lines())
def test_metadata_line_survives_json_round_trip(line: dict[str, Any]) -> None:
    model = MetadataLine.model_validate(line)
    assert MetadataLine.model_validate_json(json.dumps(line)) == model
    assert MetadataLine.model_validate_json(model.model_dump_json()) == model
    assert model.model_dump(exclude_unset=True) == line
    assert type_errors(line) == []


@settings(max_examples=100, deadline=None)
@given(
    coin=NAMES,
    fields=st.dictionaries(
        st.sampled_from(["collection", "ruler", "type", "catalog_ref", "notes"]), TEXT
    ),
    indices=st.dictionaries(st.sampled_from(["ruler_index", "type_index"]), st.integers(0, 99)),
)
def test_coin_line_survives_json_round_trip(
    coin: str, fields: dict[str, str], indices: dict[str, int]
) -> None:
    line = {"coin_id": coin, **fields, **indices}
    model = CoinLine.model_validate_json(json.dumps(line))
    assert model.model_dump(exclude_unset=True) == line
    assert CoinLine.model_validate_json(model.model_dump_json()) == model


@settings(max_examples=100, deadline=None)
@given(
    session_id=NAMES,
    centre=st.tuples(FLOATS, FLOATS),
    sign=st.sampled_from([1, -1]),
    extra=st.dictionaries(st.sampled_from(["plan", "status", "counts"]), TEXT),
)
def test_session_record_survives_json_round_trip(
    session_id: str, centre: tuple[float, float], sign: int, extra: dict[str, str]
) -> None:
    record = {
        "session_id": session_id,
        **extra,
        "calibration": {"camera": None, "turntable": {"centre_px": centre, "rotation_sign": sign}},
    }
    model = SessionRecord.model_validate_json(json.dumps(record))
    assert model.calibration is not None and model.calibration.turntable is not None
    assert model.calibration.turntable.centre_px == centre
    assert model.calibration.turntable.sense == sign
    assert SessionRecord.model_validate_json(model.model_dump_json()) == model


def test_dataset_info_written_by_the_writer_reads(tmp_path: Path) -> None:
    with DatasetWriter(tmp_path, software="coinrig test"):
        pass
    raw = json.loads((tmp_path / "dataset.json").read_text())
    assert list(raw) == ["format", "version", "created", "software", "collection"]
    assert raw["collection"] == f"{tmp_path.name}@{raw['created']}"
    info = DatasetInfo.model_validate(raw)
    assert (info.format, info.version, info.software) == ("coinrig-dataset", 1, "coinrig test")


def _shot_line() -> dict[str, Any]:
    from capture.plan import ShotEvent

    event = ShotEvent(3, "obverse", 90.0, None, "top", None, None)
    frame = Frame(
        np.zeros((4, 6, 3), np.uint8), 20000.0, 0.0, "RGB8", "cam", 0.0, sim={"coin": "C1"}
    )
    settings_ = ShotSettings(turntable_deg=90.0, tilt_deg=None, lights={"top": 1.0})
    record = shot_metadata("S1", CoinJob("C1"), event, settings_, frame, "2026-01-01T00:00:00Z")
    record["flatfield"] = {"applied": False, "calibration": None}
    return {"file_name": image_name("C1", "obverse", 3), **record, "sha256": "0" * 64}


def test_a_session_metadata_line_matches_the_schema() -> None:
    line = _shot_line()
    assert set(CAPTURE_KEYS) <= set(line)
    model = MetadataLine.model_validate(line)
    assert model.model_extra == {}  # the writer writes no field the schema does not name
    assert (model.width, model.height, model.sim and model.sim.coin) == (6, 4, "C1")


def _dataset(root: Path, lines: list[dict[str, Any]]) -> Path:
    with DatasetWriter(root) as writer:
        writer.add_coin("C1")
    for line in lines:
        path = root / line["file_name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"image")
    with (root / "metadata.jsonl").open("a") as handle:
        handle.writelines(json.dumps(line) + "\n" for line in lines)
    return root


def test_verify_reports_a_value_of_the_wrong_type_instead_of_raising(tmp_path: Path) -> None:
    line = _shot_line()
    line["sha256"] = "6105d6cc76af400325e94d588ce511be5bfdbb73b437dc51eca43917d7a43e3d"
    assert verify(_dataset(tmp_path, [line])) == []
    line["turntable_deg"] = "abc"
    line["lights"] = ["top"]
    (tmp_path / "metadata.jsonl").write_text(json.dumps(line) + "\n")
    problems = verify(tmp_path)
    assert [(p.severity, p.where) for p in problems] == [("error", line["file_name"])]
    assert "turntable_deg" in problems[0].message and "lights" in problems[0].message
    with pytest.raises(DataError, match="turntable_deg"):
        read_dataset(tmp_path)


def test_verify_reports_lines_without_a_file_name(tmp_path: Path) -> None:
    _dataset(tmp_path, [])
    (tmp_path / "metadata.jsonl").write_text('{"coin_id": "C1"}\n{"file_name": 7}\n')
    problems = verify(tmp_path)
    assert [str(p) for p in problems] == [
        "error: metadata.jsonl: 2 line(s) without a file_name text"
    ]


def test_later_line_supersedes_and_torn_last_line_is_ignored(tmp_path: Path) -> None:
    first, second = _shot_line(), {**_shot_line(), "sha256": "1" * 64}
    _dataset(tmp_path, [first, second])
    with (tmp_path / "metadata.jsonl").open("a") as handle:
        handle.write('{"file_name": "images/C1/obverse/0004.png", "coin')
    reader = DatasetReader(tmp_path)
    assert reader.metadata.torn
    assert reader.records() == [second]
    assert [r.sha256 for r in read_dataset(tmp_path).records] == ["1" * 64]


@pytest.mark.parametrize("name", ["../x.png", "/etc/passwd", "images/../../x", "images\\x.png"])
def test_file_names_never_leave_the_dataset_root(tmp_path: Path, name: str) -> None:
    assert not safe_relative(name)
    with pytest.raises(DatasetError):
        resolve(tmp_path, name)
    _dataset(tmp_path, [])
    (tmp_path / "metadata.jsonl").write_text(
        json.dumps({"file_name": name, "coin_id": "C1", "sha256": "0" * 64}) + "\n"
    )
    assert not FileIndex(tmp_path).intact(name)
    with pytest.raises(DataError, match="safe path"):
        read_dataset(tmp_path)


def test_turntable_calibration_read_from_session_records(tmp_path: Path) -> None:
    _dataset(tmp_path, [_shot_line()])
    sessions = tmp_path / "sessions"
    turntable = {"centre_px": [10.5, 20.0], "rotation_sign": -1, "px_per_mm": 12.0}
    (sessions / "S1.json").write_text(
        json.dumps({"session_id": "S1", "calibration": {"turntable": turntable}})
    )
    (sessions / "S2.json").write_text("{not json")  # unreadable: gives nothing, breaks nothing
    (sessions / "S3.json").write_text(json.dumps({"calibration": {"turntable": {"x": 1}}}))
    assert set(DatasetReader(tmp_path).turntables()) == {"S1"}
    (record,) = read_dataset(tmp_path).records
    assert (record.turntable_centre_px, record.rotation_sign) == ((10.5, 20.0), -1)


def test_whole_last_line_without_newline_is_kept_and_ended_not_cut(tmp_path: Path) -> None:
    first, second = _shot_line(), {**_shot_line(), "file_name": "images/C1/obverse/0005.png"}
    _dataset(tmp_path, [first])
    with (tmp_path / "metadata.jsonl").open("a") as handle:
        handle.write(json.dumps(second))  # a whole line, as an editor saves it: no newline
    content = read_jsonl(tmp_path / "metadata.jsonl")
    assert not content.torn and content.unterminated
    assert [r["file_name"] for r in DatasetReader(tmp_path).records()] == [
        first["file_name"],
        second["file_name"],
    ]
    DatasetWriter(tmp_path).open().close()  # the next writer ends the line instead of cutting it
    text = (tmp_path / "metadata.jsonl").read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 2
