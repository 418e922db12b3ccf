"""Hostile input to the `pipeline` command (issue 17): one line and exit 2, never a traceback,
never a read or write outside the run or dataset, never a run overwritten by its copy.

Each test here failed on the code before the fix (a traceback, a silent write into the original
run, a file read through a symlink out of the dataset, a decompression bomb decoded, NaN in
metrics.jsonl), except the cases marked as guards of behaviour that was already right. Before
the fix the FIFO test hung and the /dev/zero case read until memory ran out.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from corruption import assert_refused
from synthetic_dataset import Spec, write_dataset
from typer.testing import CliRunner, Result

from pipeline.cli import app
from training.errors import RunFolderError
from training.imageio import MAX_PIXELS_ENV

runner = CliRunner()
TINY = [
    "--image-size", "32", "--batch-size", "4", "--steps-per-epoch", "1", "--rotations", "1",
    "--embedding-dim", "8", "--split", "0.5,0.25,0.25", "--epochs", "1", "--no-progress",
]  # fmt: skip


@dataclass(frozen=True)
class World:
    """A tiny dataset, a one-epoch run trained on it, an index of its catalog images."""

    tmp: Path
    data: Path
    cache: Path
    run: Path
    index: Path

    @property
    def photo(self) -> Path:
        """A catalog photo of the dataset (one coin on a light card)."""
        return self.data / "catalog" / "SYN-0000" / "obverse.jpg"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("hostile")
    data = write_dataset(tmp / "ds", Spec(n_coins=4, angles=(0.0,), lights=("diffuse",), size=64))
    cache, run, index = tmp / "cache", tmp / "run", tmp / "index"
    args = ["train", "--data", str(data), "--out", str(run), "--cache-dir", str(cache), *TINY]
    assert runner.invoke(app, args).exit_code == 0
    args = ["index", "--run", str(run), "--images", str(data), "--out", str(index)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    yield World(tmp, data, cache, run, index)
    torch.set_num_threads(before)


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _copy_run(world: World, dest: Path) -> Path:
    shutil.copytree(world.run, dest)
    return dest


def _copy_index(world: World, dest: Path, run: Path) -> Path:
    """A copy of the index that names `run` (a copy of the world's run) as its model."""
    shutil.copytree(world.index, dest)
    info = json.loads((dest / "index.json").read_text())
    info["model"]["run"] = str(run.resolve())
    (dest / "index.json").write_text(json.dumps(info))
    return dest


def _set_image(root: Path, file_name: str, data: bytes) -> None:
    """Replace a dataset image's bytes and its recorded sha256 (so only the content is odd)."""
    (root / file_name).write_bytes(data)
    lines = [json.loads(x) for x in (root / "metadata.jsonl").read_text().splitlines()]
    for line in lines:
        if line["file_name"] == file_name:
            line["sha256"] = hashlib.sha256(data).hexdigest()
    (root / "metadata.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width×height grey pixels but carries only four rows (a bomb's header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 4)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def _png(pixels: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", pixels)
    assert ok
    return buf.tobytes()


def _train(data: Path, out: Path, cache: Path, *extra: str) -> Result:
    return runner.invoke(
        app, ["train", "--data", str(data), "--out", str(out), "--cache-dir", str(cache), *TINY,
              *extra],
    )  # fmt: skip


# -- finding 1: a copied or moved run resumes where it is -------------------------------------


def test_resume_writes_into_the_folder_it_is_given(world: World, tmp_path: Path) -> None:
    copy = _copy_run(world, tmp_path / "copy")  # its config.json names world.run as out
    before = _hashes(world.run)
    result = _train(world.data, copy, world.cache, "--resume", "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert _hashes(world.run) == before  # the original run's checkpoints are untouched
    state = json.loads((copy / "checkpoints" / "last" / "model.json").read_text())["extra"]
    assert state["epoch"] == 2
    assert json.loads((copy / "config.json").read_text())["out"] == str(copy)


def test_resume_after_a_move_does_not_recreate_the_old_folder(world: World, tmp_path: Path) -> None:
    old = _copy_run(world, tmp_path / "old")
    config = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps({**config, "out": str(old)}))  # trained there
    new = tmp_path / "new"
    old.rename(new)
    result = _train(world.data, new, world.cache, "--resume", "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert not old.exists()
    assert (
        json.loads((new / "checkpoints" / "last" / "model.json").read_text())["extra"]["epoch"] == 2
    )


# -- finding 3: training reads nothing outside the dataset ------------------------------------


@pytest.mark.parametrize("target", ["outside image", "/dev/zero", "/etc/passwd"])
def test_training_refuses_a_symlink_out_of_the_dataset(
    world: World, tmp_path: Path, target: str
) -> None:
    data = Path(shutil.copytree(world.data, tmp_path / "ds"))
    name = "images/SYN-0001/obverse/0000.png"
    if target == "outside image":
        outside = tmp_path / "outside.png"
        shutil.copy(data / name, outside)
        target = str(outside)
    (data / name).unlink()
    (data / name).symlink_to(target)
    line = assert_refused(_train(data, tmp_path / "run", tmp_path / "cache"), "through a symlink")
    assert name in line
    assert not (tmp_path / "cache").exists()  # refused while reading metadata, before decoding


@pytest.mark.parametrize("name", ["/etc/passwd", "images/../../outside.png"])
def test_training_refuses_file_names_out_of_the_dataset(
    world: World, tmp_path: Path, name: str
) -> None:
    """Already refused before issue 17 (dataset.layout.resolve); kept as a guard."""
    data = Path(shutil.copytree(world.data, tmp_path / "ds"))
    lines = (data / "metadata.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["file_name"] = name
    (data / "metadata.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    assert_refused(_train(data, tmp_path / "run", tmp_path / "cache"), "not a safe path")


def test_training_skips_a_file_that_is_not_a_regular_file(world: World, tmp_path: Path) -> None:
    data = Path(shutil.copytree(world.data, tmp_path / "ds"))
    name = "images/SYN-0002/reverse/0000.png"
    (data / name).unlink()
    os.mkfifo(data / name)  # reading it would block for ever
    result = _train(data, tmp_path / "run", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    assert f"skipped {name}: not a regular file" in result.output


# -- finding 5: decompression bombs and images that cannot show a coin ------------------------


def test_a_decompression_bomb_is_refused_before_decoding(world: World, tmp_path: Path) -> None:
    bomb = _png_header(30000, 30000)  # 900 million pixels declared in 900 bytes
    data = Path(shutil.copytree(world.data, tmp_path / "ds"))
    _set_image(data, "images/SYN-0003/obverse/0000.png", bomb)
    result = _train(data, tmp_path / "run", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    assert "30000×30000 pixels is over the limit of 100,000,000 pixels" in result.output
    assert MAX_PIXELS_ENV in result.output

    catalog = Path(shutil.copytree(world.data / "catalog", tmp_path / "catalog"))
    (catalog / "bomb.png").write_bytes(bomb)
    out = tmp_path / "idx"
    args = ["index", "--run", str(world.run), "--images", str(catalog), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output  # one bad file is skipped, not fatal
    assert "warning: skipped:" in result.output and MAX_PIXELS_ENV in result.output
    assert "added 8 coins" in result.output

    photo = tmp_path / "bomb.png"
    photo.write_bytes(bomb)
    assert_refused(
        runner.invoke(app, ["search", "--index", str(world.index), str(photo)]), MAX_PIXELS_ENV
    )
    args = ["explain", "--run", str(world.run), "--query", str(photo), "--against", str(photo)]
    assert_refused(runner.invoke(app, [*args, "--out", str(tmp_path / "x")]), MAX_PIXELS_ENV)


def test_the_pixel_limit_is_set_by_its_variable(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    search = ["search", "--index", str(world.index), str(world.photo)]
    assert_refused(runner.invoke(app, search), "over the limit of 1,000 pixels")
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    assert_refused(runner.invoke(app, search), f"{MAX_PIXELS_ENV}='lots'")
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000000000")
    assert runner.invoke(app, search).exit_code == 0


def test_an_image_of_20000_by_1_pixels_is_one_line(world: World, tmp_path: Path) -> None:
    strip = _png(np.full((1, 20000, 3), 128, np.uint8))
    photo = tmp_path / "strip.png"
    photo.write_bytes(strip)
    assert_refused(
        runner.invoke(app, ["search", "--index", str(world.index), str(photo)]), "20000×1"
    )
    args = ["explain", "--run", str(world.run), "--query", str(photo), "--against", str(photo)]
    assert_refused(runner.invoke(app, [*args, "--out", str(tmp_path / "x")]), "cannot show a coin")
    catalog = Path(shutil.copytree(world.data / "catalog", tmp_path / "catalog"))
    (catalog / "strip.png").write_bytes(strip)
    args = [
        "index",
        "--run",
        str(world.run),
        "--images",
        str(catalog),
        "--out",
        str(tmp_path / "i"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "cannot show a coin" in result.output, result.output
    data = Path(shutil.copytree(world.data, tmp_path / "ds"))
    _set_image(data, "images/SYN-0003/obverse/0000.png", strip)
    result = _train(data, tmp_path / "run", tmp_path / "cache")
    assert result.exit_code == 0 and "cannot show a coin" in result.output, result.output


# -- damaged run folders, checkpoints and indexes ---------------------------------------------

DAMAGE = {
    "config.json not JSON": ("config.json", b"{nope"),
    "config.json a list": ("config.json", b"[1]"),
    "config.json without data": ("config.json", b"{}"),
    "config.json other image size": ("config.json", None),
    "config.json wrong type": ("config.json", None),
    "split.json not JSON": ("split.json", b"\xff\xfe"),
    "split.json without val": ("split.json", b'{"train": [], "test": []}'),
    "model.json not JSON": ("checkpoints/best/model.json", b"??"),
    "model.json without config": ("checkpoints/best/model.json", b'{"format_version": 1}'),
    "model.json huge model": ("checkpoints/best/model.json", None),
    "weights truncated": ("checkpoints/best/model.safetensors", b"truncate"),
    "weights not safetensors": ("checkpoints/best/model.safetensors", b"PK\x03\x04 a zip"),
}


def _damage(run: Path, what: str) -> None:
    name, content = DAMAGE[what]
    path = run / name
    if what in ("config.json wrong type", "config.json other image size"):
        config = json.loads(path.read_text())
        config["image_size"] = "large" if what == "config.json wrong type" else 48
        content = json.dumps(config).encode()
    elif what == "model.json huge model":
        meta = json.loads(path.read_text())
        meta["config"]["embedding_dim"] = 10**12  # would allocate terabytes
        content = json.dumps(meta).encode()
    elif content == b"truncate":
        content = path.read_bytes()[:100]
    assert content is not None
    path.write_bytes(content)


@pytest.mark.parametrize("what", list(DAMAGE))
def test_a_damaged_run_is_one_line(world: World, tmp_path: Path, what: str) -> None:
    run = _copy_run(world, tmp_path / "run")
    index = _copy_index(world, tmp_path / "index", run)
    _damage(run, what)
    before = _hashes(run)
    args = ["evaluate", "--run", str(run), "--cache-dir", str(world.cache)]
    assert_refused(runner.invoke(app, args))
    # index and search read neither the split nor the datasets a config names
    if not what.startswith("split.json") and what != "config.json without data":
        out = tmp_path / "new-index"
        args = ["index", "--run", str(run), "--images", str(world.data), "--out", str(out)]
        assert_refused(runner.invoke(app, args))
        assert not out.exists()
        assert_refused(runner.invoke(app, ["search", "--index", str(index), str(world.photo)]))
    assert _hashes(run) == before


class _Pickled:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this would run on load",))


RESUME_DAMAGE = {
    "config.json": ("config.json", b"{nope"),  # a guard: refused before the fix too
    "model.json": ("checkpoints/last/model.json", b'{"format_version": 1, "config": {}}'),
    "loop state": ("checkpoints/last/model.json", None),
    "weights": ("checkpoints/last/model.safetensors", b"not safetensors"),
    "loss centres": ("checkpoints/last/loss.safetensors", b""),
    "pickled optimizer": ("checkpoints/last/optimizer.pt", None),
}


@pytest.mark.parametrize("what", list(RESUME_DAMAGE))
def test_a_damaged_run_is_not_resumed(world: World, tmp_path: Path, what: str) -> None:
    import pickle

    run = _copy_run(world, tmp_path / "run")
    name, content = RESUME_DAMAGE[what]
    if what == "loop state":
        meta = json.loads((run / name).read_text())
        meta["extra"]["step"] = "many"
        content = json.dumps(meta).encode()
    elif what == "pickled optimizer":
        content = pickle.dumps(_Pickled())
    assert content is not None
    (run / name).write_bytes(content)
    before = _hashes(run)
    cache = tmp_path / "cache"
    line = assert_refused(_train(world.data, run, cache, "--resume", "--epochs", "2"))
    assert name.split("/")[-1] in line
    assert not cache.exists()  # refused before any image was read
    assert _hashes(run) == before


INDEX_DAMAGE = {
    "index.json a list": ("index.json", b"[]"),
    "index.json without dim": ("index.json", b'{"format": "coinrig-index", "version": 1}'),
    "items not objects": ("items.jsonl", b"[1]\n"),
    "items not UTF-8": ("items.jsonl", b"\xff\n"),  # a guard, as the next
    "embeddings not npy": ("embeddings.npy", b"\x93NUMPY garbage"),
    "embeddings other shape": ("embeddings.npy", None),
}


@pytest.mark.parametrize("what", list(INDEX_DAMAGE))
def test_a_damaged_index_is_one_line(world: World, tmp_path: Path, what: str) -> None:
    index = Path(shutil.copytree(world.index, tmp_path / "index"))
    name, content = INDEX_DAMAGE[what]
    if content is None:
        buffer = tmp_path / "e.npy"
        np.save(buffer, np.zeros((3, 5), np.float32))
        content = buffer.read_bytes()
    (index / name).write_bytes(content)
    assert_refused(runner.invoke(app, ["search", "--index", str(index), str(world.photo)]), "index")
    args = ["index", "--run", str(world.run), "--images", str(world.data), "--out", str(index)]
    assert_refused(runner.invoke(app, args), "index")


def test_a_checkpoint_name_cannot_lead_out_of_the_run(world: World, tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(world.run / "config.json", run)
    shutil.copy(world.run / "split.json", run)
    shutil.copytree(world.run / "checkpoints" / "best", tmp_path / "elsewhere")
    args = ["evaluate", "--run", str(run), "--cache-dir", str(world.cache)]
    line = assert_refused(runner.invoke(app, [*args, "--checkpoint", "../../elsewhere"]))
    assert "--checkpoint must be a folder name" in line


# -- output paths: refused before any work, never written outside what was named ---------------


def test_output_paths_are_checked_before_any_work(world: World, tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    search = ["search", "--index", str(world.index), str(world.photo)]
    assert_refused(
        runner.invoke(app, [*search, "--sheet", str(tmp_path / "s.foo")]), "unknown image"
    )
    assert_refused(runner.invoke(app, [*search, "--sheet", str(a_file / "s.png")]), "not a folder")
    assert_refused(runner.invoke(app, [*search, "--sheet", str(world.photo)]), "one of the input")
    index = ["index", "--run", str(world.run), "--images", str(world.data)]
    assert_refused(runner.invoke(app, [*index, "--out", str(a_file / "idx")]), "not a folder")
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("mine")
    assert_refused(
        runner.invoke(app, [*index, "--out", str(foreign)]), "does not hold a catalog index"
    )
    cache = tmp_path / "cache"
    assert_refused(_train(world.data, a_file / "run", cache), "not a folder")
    assert_refused(_train(world.data, foreign, cache), "does not hold a training run")
    assert_refused(_train(world.data, world.data, cache), "does not hold a training run")
    assert not cache.exists()  # nothing was decoded before the refusal
    assert (foreign / "thesis.tex").read_text() == "mine" and len(list(foreign.iterdir())) == 1


def test_a_metadata_csv_that_is_not_utf8_is_one_line(world: World, tmp_path: Path) -> None:
    meta = tmp_path / "lots.csv"
    with meta.open("w", newline="", encoding="latin-1") as f:
        csv.writer(f).writerows([["file_name", "sale"], ["obverse.jpg", "Zürich 1998"]])
    args = ["index", "--run", str(world.run), "--images", str(world.data), "--meta", str(meta)]
    assert_refused(runner.invoke(app, [*args, "--out", str(tmp_path / "i")]), "not UTF-8")


# -- numeric options: NaN, infinities and signs, before any image is read ----------------------


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--lr", "-1", "--lr must be in (0, 10]"),
        ("--lr", "nan", "--lr must be a finite number"),
        ("--lr", "1e200", "--lr must be in (0, 10]"),
        ("--steps-per-epoch", "-1", "--steps-per-epoch must be >= 1"),
        ("--margin", "nan", "--margin must be a finite number"),
        ("--margin", "-0.1", "--margin must be in [0, 1.5708]"),
        ("--scale", "inf", "--scale must be a finite number"),
        ("--seed", "-1", "--seed must be in [0, 4294967295]"),
        ("--embedding-dim", "0", "--embedding-dim must be in [1, 8192]"),
        ("--image-size", "100000", "--image-size must be in [1, 1024]"),
    ],
)
def test_numeric_options_are_checked(
    world: World, tmp_path: Path, option: str, value: str, message: str
) -> None:
    cache = tmp_path / "cache"
    assert_refused(_train(world.data, tmp_path / "run", cache, option, value), message)
    assert not cache.exists() and not (tmp_path / "run").exists()


def test_hierarchy_options_are_checked(world: World, tmp_path: Path) -> None:
    args = ["train", "--task", "hierarchy", "--data", str(world.data), "--out", str(tmp_path / "r")]
    cache = tmp_path / "cache"
    for option, value in (("--lr", "nan"), ("--seed", "-3"), ("--per-side", "0")):
        result = runner.invoke(app, [*args, "--cache-dir", str(cache), option, value])
        assert_refused(result, option)
    assert not cache.exists()


def test_metrics_stay_json_when_the_loss_diverges(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loss gone NaN is logged as null, stops the run in one line and saves no weights.

    No option can set off a NaN any more (--margin nan, --lr nan are refused), so the loss is
    made NaN where it is computed, as a diverging run would make it.
    """
    from training import train as training_loop

    real = training_loop.Objective.forward

    def diverging(self: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return real(self, x, labels) * float("nan")  # type: ignore[arg-type]

    monkeypatch.setattr(training_loop.Objective, "forward", diverging)
    run = tmp_path / "run"
    args = ["--steps-per-epoch", "10", "--epochs", "2"]  # a step row every 10 steps
    assert_refused(_train(world.data, run, world.cache, *args), "training diverged in epoch 1")

    def refuse(token: str) -> None:
        raise AssertionError(f"{token} is not JSON")

    rows = [
        json.loads(line, parse_constant=refuse)
        for line in (run / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["kind"] for r in rows] == ["step", "epoch"]
    assert rows[0]["loss"] is None and rows[1]["train_loss"] is None  # NaN written as null
    assert not (run / "checkpoints" / "last").exists()  # no diverged weights saved


def test_nan_weights_are_refused(world: World, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    run = _copy_run(world, tmp_path / "run")
    weights = run / "checkpoints" / "best" / "model.safetensors"
    state = {
        k: v.fill_(float("nan")) if v.is_floating_point() else v
        for k, v in load_file(weights).items()
    }
    save_file(state, str(weights))
    args = ["evaluate", "--run", str(run), "--cache-dir", str(world.cache)]
    assert_refused(runner.invoke(app, args), "NaN or infinite weights")


def test_debug_shows_the_traceback(world: World, tmp_path: Path) -> None:
    run = _copy_run(world, tmp_path / "run")
    (run / "split.json").write_text("x")
    args = ["--debug", "evaluate", "--run", str(run), "--cache-dir", str(world.cache)]
    result = runner.invoke(app, args)
    assert isinstance(result.exception, RunFolderError)
