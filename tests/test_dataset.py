"""The dataset writer, reader, lock, resume index, verify, summary and contact sheets."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import string
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import capture.writer as ds
from capture.checks import summary, verify
from capture.resume import ResumeIndex
from capture.sheet import write_contact_sheet
from capture.writer import DatasetLocked, DatasetWriter
from dataset.jsonl import read_jsonl
from dataset.layout import DatasetError, InvalidCoinId, image_name, sha256_file, validate_coin_id
from dataset.reader import DatasetReader


def _record(coin: str, side: str, shot: int, light: str = "top") -> dict[str, Any]:
    return {
        "coin_id": coin,
        "side": side,
        "role": "capture",
        "session_id": "S1",
        "shot": shot,
        "turntable_deg": 90.0 * (shot % 4),
        "tilt_deg": None,
        "light": light,
        "lights": {"top": 1.0},
        "exposure_us": 20000.0,
        "gain_db": 0.0,
        "camera": "cam",
        "width": 8,
        "height": 8,
        "pixel_format": "RGB8",
        "captured_at": "2026-01-01T00:00:00Z",
        "reference": False,
    }


def _image(seed: int, dtype: type = np.uint8) -> np.ndarray:
    top = 65535 if dtype is np.uint16 else 255
    return np.random.default_rng(seed).integers(0, top, (8, 8, 3), dtype=dtype)


def _write(root: Path, shots: int, coin: str = "C1") -> list[str]:
    names = []
    with DatasetWriter(root) as writer:
        writer.add_coin(coin, ruler="R1")
        for shot in range(shots):
            side = "obverse" if shot < shots / 2 else "reverse"
            name = image_name(coin, side, shot)
            writer.submit(name, _image(shot), _record(coin, side, shot), "RGB8")
            names.append(name)
        writer.flush()
    return names


@pytest.mark.parametrize(
    "bad", ["../x", "a/b", "a\\b", "", "x" * 65, "Münze", "..", ".hidden", "a..b", "a\n", " a"]
)
def test_bad_coin_ids_refused(bad: str) -> None:
    with pytest.raises(InvalidCoinId):
        validate_coin_id(bad)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=string.printable + "é/\\.", max_size=70))
def test_accepted_coin_ids_stay_inside_the_dataset(coin: str) -> None:
    try:
        validate_coin_id(coin)
    except InvalidCoinId:
        return
    root = Path("/data/set").resolve()
    target = (root / image_name(coin, "obverse", 1)).resolve()
    assert target.is_relative_to(root / "images")
    assert 1 <= len(coin) <= 64 and coin.isascii()


def test_write_order_image_renamed_before_its_metadata_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: list[str] = []
    real_replace, real_fsync = os.replace, os.fsync
    meta = tmp_path / "metadata.jsonl"

    def spy_replace(src: Any, dst: Any) -> None:
        # at rename time the temporary file is complete and its line not yet written
        assert Path(src).read_bytes()
        assert Path(dst).name not in (meta.read_text() if meta.exists() else "")
        steps.append(f"rename {Path(dst).name}")
        real_replace(src, dst)

    def spy_fsync(fd: int) -> None:
        steps.append("fsync")
        real_fsync(fd)

    _write(tmp_path, 0)  # create the dataset first; only one image's steps are watched
    monkeypatch.setattr(ds.os, "replace", spy_replace)
    monkeypatch.setattr(ds.os, "fsync", spy_fsync)
    with DatasetWriter(tmp_path) as writer:
        writer.submit(
            image_name("C1", "obverse", 0), _image(0), _record("C1", "obverse", 0), "RGB8"
        )
        writer.flush()
    # temp file fsync, rename, folder fsync, then the metadata line's fsync
    assert steps == ["fsync", "rename 0000.png", "fsync", "fsync"]
    (line,) = meta.read_text().splitlines()
    record = json.loads(line)
    assert record["file_name"] == "images/C1/obverse/0000.png"
    assert record["sha256"] == sha256_file(tmp_path / record["file_name"])
    assert not list(tmp_path.rglob("*.tmp-*"))


def test_sixteen_bit_frames_stay_sixteen_bit(tmp_path: Path) -> None:
    image = _image(3, np.uint16)
    with DatasetWriter(tmp_path) as writer:
        writer.submit("images/C1/obverse/0000.png", image, _record("C1", "obverse", 0), "RGB16")
    back = cv2.imread(str(tmp_path / "images/C1/obverse/0000.png"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back[..., ::-1], image)  # stored as RGB


def test_torn_last_line_ignored_and_cut(tmp_path: Path) -> None:
    names = _write(tmp_path, 4)
    meta = tmp_path / "metadata.jsonl"
    with meta.open("ab") as handle:
        handle.write(b'{"file_name": "images/C1/obverse/0009.png", "sha2')
    reader = DatasetReader(tmp_path)
    assert reader.metadata.torn and not reader.metadata.corrupt_lines
    assert [r["file_name"] for r in reader.records()] == names
    assert all(ResumeIndex(tmp_path).intact(name) for name in names)
    assert [p.severity for p in verify(tmp_path)] == ["warning"]
    DatasetWriter(tmp_path).open().close()  # a new writer cuts the torn tail
    assert meta.read_bytes().endswith(b"\n")
    assert not read_jsonl(meta).torn and verify(tmp_path) == []


def test_checksum_mismatch_and_missing_file_are_not_intact(tmp_path: Path) -> None:
    names = _write(tmp_path, 4)
    (tmp_path / names[1]).write_bytes(b"not the image")
    (tmp_path / names[2]).unlink()
    index = ResumeIndex(tmp_path)
    assert [index.intact(n) for n in names] == [True, False, False, True]
    messages = [str(p) for p in verify(tmp_path)]
    assert any("checksum mismatch" in m and names[1] in m for m in messages)
    assert any("missing" in m and names[2] in m for m in messages)


def test_later_line_supersedes_earlier(tmp_path: Path) -> None:
    names = _write(tmp_path, 2)
    with DatasetWriter(tmp_path) as writer:
        writer.submit(names[0], _image(99), _record("C1", "obverse", 0), "RGB8")
    records = DatasetReader(tmp_path).records()
    assert len(records) == 2 and verify(tmp_path) == []
    assert len(read_jsonl(tmp_path / "metadata.jsonl").records) == 3


@pytest.mark.parametrize("fail_at", ["image", "metadata"])
def test_disk_full_stops_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str
) -> None:
    _write(tmp_path, 0)
    calls = {"n": 0}
    real_write, real_fsync = ds._write_bytes, os.fsync

    def full_write(path: Path, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    def full_fsync(fd: int) -> None:
        if calls["n"] >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    if fail_at == "image":
        monkeypatch.setattr(ds, "_write_bytes", full_write)
    else:

        def counting_write(path: Path, data: bytes) -> None:
            calls["n"] += 1
            real_write(path, data)

        monkeypatch.setattr(ds, "_write_bytes", counting_write)
        monkeypatch.setattr(ds.os, "fsync", full_fsync)
    writer = DatasetWriter(tmp_path).open()
    try:
        for shot in range(2):
            name = image_name("C1", "obverse", shot)
            writer.submit(name, _image(shot), _record("C1", "obverse", shot), "RGB8")
        writer.flush()
        writer.submit(
            image_name("C1", "obverse", 2), _image(2), _record("C1", "obverse", 2), "RGB8"
        )
        with pytest.raises(ds.DatasetWriteError) as caught:
            writer.flush()
        assert caught.value.disk_full
        with pytest.raises(ds.DatasetWriteError):
            writer.submit("images/C1/obverse/0003.png", _image(3), _record("C1", "obverse", 3), "x")
    finally:
        writer.close()
    monkeypatch.undo()
    assert verify(tmp_path) == []  # nothing torn, nothing orphaned
    assert len(DatasetReader(tmp_path).records()) == 2
    assert not (tmp_path / ".lock").exists()


def test_lock_is_exclusive_and_a_dead_owner_is_taken_over(tmp_path: Path) -> None:
    with DatasetWriter(tmp_path), pytest.raises(DatasetLocked, match=str(os.getpid())):
        DatasetWriter(tmp_path).open()
    assert not (tmp_path / ".lock").exists()
    owner = json.loads(json.dumps({"pid": 2**22 + 7, "host": os.uname().nodename, "since": "x"}))
    (tmp_path / ".lock").write_text(json.dumps(owner))
    DatasetWriter(tmp_path).open().close()  # the owner is dead: its lock is stale
    (tmp_path / ".lock").write_text(json.dumps({**owner, "host": "elsewhere"}))
    with pytest.raises(DatasetLocked):
        DatasetWriter(tmp_path).open()


def test_an_empty_lock_is_a_writer_still_starting_then_a_stale_one(tmp_path: Path) -> None:
    """A lock with no owner (a writer killed between creating and filling it) blocks only briefly."""
    lock = tmp_path / ".lock"
    lock.write_text("")
    with pytest.raises(DatasetLocked, match="has not yet written its name"):
        DatasetWriter(tmp_path).open()
    old = time.time() - ds.EMPTY_LOCK_GRACE_S - 1
    os.utime(lock, (old, old))
    with DatasetWriter(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_the_lock_appears_whole_with_or_without_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock is linked into place filled; where links are refused (exFAT) O_EXCL is used."""
    seen: list[str] = []
    real_link = os.link

    def link(source: object, target: object) -> None:
        seen.append(Path(str(source)).read_text())  # the content is complete before it is linked
        real_link(source, target)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "link", link)
    with DatasetWriter(tmp_path):
        assert json.loads(seen[0])["pid"] == os.getpid()
        assert not list(tmp_path.glob(".lock.tmp-*"))

    def no_links(source: object, target: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    with DatasetWriter(tmp_path), pytest.raises(DatasetLocked, match=str(os.getpid())):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
        DatasetWriter(tmp_path).open()
    assert not (tmp_path / ".lock").exists() and not list(tmp_path.glob(".lock.tmp-*"))


def test_refuses_a_folder_of_another_format(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text('{"format": "other", "version": 9}')
    with pytest.raises(DatasetError, match="not a coinrig-dataset"):
        DatasetWriter(tmp_path).open()
    assert not (tmp_path / ".lock").exists()


def test_catalog_images_and_orphans(tmp_path: Path) -> None:
    _write(tmp_path, 2)
    with DatasetWriter(tmp_path) as writer:
        name = writer.write_catalog_image("C1", "obverse", _image(5), ext="jpg", source="twin")
    assert name == "catalog/C1/obverse.jpg"
    record = DatasetReader(tmp_path).images_of("C1", role="catalog")[0]
    assert record["source"] == "twin" and record["width"] == 8
    assert verify(tmp_path) == []
    (tmp_path / "images/C1/obverse/0042.png").write_bytes(b"stray")
    (tmp_path / "images/C1/obverse/.0043.png.tmp-1").write_bytes(b"left over")
    problems = {p.where: p for p in verify(tmp_path)}
    assert problems["images/C1/obverse/0042.png"].severity == "error"
    assert "orphan" in problems["images/C1/obverse/0042.png"].message
    assert problems["images/C1/obverse/.0043.png.tmp-1"].severity == "warning"
    assert len(problems) == 2
    with pytest.raises(InvalidCoinId), DatasetWriter(tmp_path) as writer:
        writer.write_catalog_image("../x", "obverse", _image(1))
    # the next writer removes the crashed temporary file, never a real one
    assert not (tmp_path / "images/C1/obverse/.0043.png.tmp-1").exists()
    assert (tmp_path / "images/C1/obverse/0042.png").exists()


def test_catalog_image_given_as_encoded_bytes_is_stored_as_is(tmp_path: Path) -> None:
    ok, buffer = cv2.imencode(".jpg", _image(7), [cv2.IMWRITE_JPEG_QUALITY, 60])
    assert ok
    jpeg = buffer.tobytes()
    with DatasetWriter(tmp_path) as writer:
        writer.add_coin("C1")
        name = writer.write_catalog_image("C1", "reverse", jpeg, ext="jpg", source="twin")
    assert (tmp_path / name).read_bytes() == jpeg
    (record,) = DatasetReader(tmp_path).images_of("C1", role="catalog")
    assert record["sha256"] == hashlib.sha256(jpeg).hexdigest()
    assert (record["width"], record["height"], record["source"]) == (8, 8, "twin")
    assert verify(tmp_path) == []


@pytest.mark.parametrize(
    ("data", "ext", "message"),
    [
        (b"\xff\xd8\xff\xe0 not really a jpeg", "jpg", "do not decode"),
        (b"\x89PNG\r\n\x1a\n", "jpg", "not a jpg file"),
        (b"", "png", "not a png file"),
    ],
    ids=["truncated-jpeg", "png-signature-as-jpg", "empty"],
)
def test_catalog_image_bytes_that_do_not_decode_are_refused(
    tmp_path: Path, data: bytes, ext: str, message: str
) -> None:
    with DatasetWriter(tmp_path) as writer, pytest.raises(ValueError, match=message):
        writer.write_catalog_image("C1", "obverse", data, ext=ext)
    assert not (tmp_path / f"catalog/C1/obverse.{ext}").exists()
    assert DatasetReader(tmp_path).images_of("C1", role="catalog") == []


def test_summary_and_contact_sheet(tmp_path: Path) -> None:
    _write(tmp_path, 8)
    counts = summary(tmp_path)
    assert counts["coins"] == 1 and counts["images"] == 8
    assert counts["by_side"] == {"obverse": 4, "reverse": 4}
    assert counts["by_angle"] == {"0": 2, "90": 2, "180": 2, "270": 2}
    sheet = write_contact_sheet(tmp_path, "C1", tmp_path / "sheet.png", thumb_px=32)
    image = cv2.imread(str(sheet))
    assert image.shape[1] > 4 * 32 and image.shape[0] > 2 * 32
    with pytest.raises(DatasetError):
        write_contact_sheet(tmp_path, "C2", tmp_path / "none.png")


def test_loads_as_huggingface_imagefolder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    tqdm = pytest.importorskip("tqdm")
    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)  # no monitor thread left behind
    datasets.disable_progress_bars()
    root = tmp_path / "set"
    _write(root, 4)
    loaded = datasets.load_dataset(
        "imagefolder", data_dir=str(root), split="train", cache_dir=str(tmp_path / "cache")
    )
    assert len(loaded) == 4
    row = loaded[0]
    assert row["coin_id"] == "C1" and row["image"].size == (8, 8)
    assert {"sha256", "light", "turntable_deg"} <= set(loaded.column_names)
