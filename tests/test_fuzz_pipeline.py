"""Fuzz `pipeline evaluate / index / search` with damaged run folders, indexes, datasets, photos.

Each example copies a small world (dataset, one-epoch run, index, photo), damages one file
(truncated, bytes flipped, replaced by junk, deleted, or one JSON value swapped for a hostile
one) and runs one command through the CLI runner. Allowed: success, or exit 2 with one
`error:` line. Never a traceback, never a changed input file, never a file written outside the
command's named output (the evaluation folder and verdict of the run, the new index, the cache).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from corruption import json_paths, replace_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthetic_dataset import Spec, write_dataset
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()
TRAIN = [
    "--image-size", "32", "--batch-size", "4", "--steps-per-epoch", "1", "--rotations", "1",
    "--embedding-dim", "8", "--split", "0.5,0.25,0.25", "--epochs", "1", "--no-progress",
]  # fmt: skip
# Files a command reads, by the commands that read them.
TARGETS = {
    "run/config.json": ("evaluate", "index", "search"),
    "run/split.json": ("evaluate",),
    "run/checkpoints/best/model.json": ("evaluate", "index", "search"),
    "run/checkpoints/best/model.safetensors": ("evaluate", "index", "search"),
    "index/index.json": ("search", "index-extend"),
    "index/items.jsonl": ("search", "index-extend"),
    "index/embeddings.npy": ("search", "index-extend"),
    "index/faiss.index": ("search", "index-extend"),
    "ds/metadata.jsonl": ("evaluate", "index"),
    "ds/coins.jsonl": ("evaluate", "index"),
    "ds/dataset.json": ("evaluate", "index"),
    "ds/catalog/SYN-0001/obverse.jpg": ("evaluate", "index"),
    "ds/images/SYN-0002/reverse/0000.png": ("evaluate",),
    "photo.jpg": ("search",),
}
HOSTILE_JSON: list[Any] = [
    None, True, False, -1, 0, 1, 3, 10**12, -(10**12), 0.5, 1e308, float("nan"), "", "x",
    "../../../etc", "/etc/passwd", "resnet-tiny", "flat", "ivf", "hnsw", [], [1, 2], ["x"], {},
    {"a": 1},
]  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("fuzz")
    data = write_dataset(root / "ds", Spec(n_coins=4, angles=(0.0,), lights=("diffuse",), size=64))
    args = ["train", "--data", str(data), "--out", str(root / "run"), *TRAIN]
    result = runner.invoke(app, [*args, "--cache-dir", str(root / "cache")])
    assert result.exit_code == 0, result.output
    args = ["index", "--run", str(root / "run"), "--images", str(data)]
    result = runner.invoke(app, [*args, "--out", str(root / "index")])
    assert result.exit_code == 0, result.output
    shutil.copy(data / "catalog" / "SYN-0000" / "obverse.jpg", root / "photo.jpg")
    shutil.rmtree(root / "cache")
    yield root
    torch.set_num_threads(before)


def _copy_world(world: Path, dest: Path) -> None:
    """The world in `dest`, its run naming the copied dataset and its index the copied run."""
    for name in ("ds", "run", "index"):
        shutil.copytree(world / name, dest / name)
    shutil.copy(world / "photo.jpg", dest / "photo.jpg")
    config = json.loads((dest / "run" / "config.json").read_text())
    config.update(data=[str(dest / "ds")], out=str(dest / "run"))
    (dest / "run" / "config.json").write_text(json.dumps(config))
    info = json.loads((dest / "index" / "index.json").read_text())
    info["model"]["run"] = str((dest / "run").resolve())
    (dest / "index" / "index.json").write_text(json.dumps(info))


def _mutate_json(text: str, data: st.DataObject, jsonl: bool) -> str | None:
    """One JSON value swapped (or one key deleted) in a JSON or JSON-lines text; None if not JSON."""
    if jsonl:
        lines = text.splitlines()
        if not lines:
            return None
        n = data.draw(st.integers(0, len(lines) - 1), label="line")
        mutated = _mutate_json(lines[n], data, jsonl=False)
        return None if mutated is None else "\n".join([*lines[:n], mutated, *lines[n + 1 :]]) + "\n"
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    paths = json_paths(doc, items=8)
    path = paths[data.draw(st.integers(0, len(paths) - 1), label="path")]
    new = data.draw(st.sampled_from(HOSTILE_JSON), label="value")
    delete = data.draw(st.booleans(), label="delete")
    return json.dumps(replace_path(doc, path, new, delete))


def _damage(path: Path, data: st.DataObject) -> str:
    """Damage one file in one of several ways; returns what was done (for the failure report)."""
    content = path.read_bytes()
    kind = data.draw(st.sampled_from(["json", "truncate", "flip", "junk", "delete"]), label="how")
    if kind == "json" and path.suffix in (".json", ".jsonl"):
        mutated = _mutate_json(content.decode(), data, jsonl=path.suffix == ".jsonl")
        if mutated is not None:
            path.write_text(mutated)
            return kind
        kind = "junk"
    if kind == "truncate" or (kind == "json" and content):
        path.write_bytes(content[: data.draw(st.integers(0, max(0, len(content) - 1)))])
    elif kind == "flip" and content:
        at = data.draw(st.integers(0, len(content) - 1), label="at")
        bit = data.draw(st.integers(1, 255), label="xor")
        path.write_bytes(content[:at] + bytes([content[at] ^ bit]) + content[at + 1 :])
    elif kind == "delete":
        path.unlink()
    else:
        path.write_bytes(data.draw(st.binary(max_size=64), label="junk"))
    return kind


def _files(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _command(name: str, root: Path) -> tuple[list[str], tuple[str, ...]]:
    """The arguments of a command, and the path prefixes it may write under."""
    run, index = str(root / "run"), str(root / "index")
    if name == "evaluate":
        args = ["evaluate", "--run", run, "--cache-dir", str(root / "cache")]
        return args, (
            "run/eval-catalog/",
            "run/verdict.json",
            "run/roc.png",
            "run/fusion.json",
            "cache/",
        )
    if name == "index":
        args = ["index", "--run", run, "--images", str(root / "ds"), "--out", str(root / "new")]
        return args, ("new/",)
    if name == "index-extend":  # the damaged index is the output: it may be rewritten
        return ["index", "--run", run, "--images", str(root / "ds"), "--out", index], ("index/",)
    return ["search", "--index", index, str(root / "photo.jpg"), "--json"], ()


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_damaged_inputs_give_success_or_one_line(world: Path, data: st.DataObject) -> None:
    target = data.draw(st.sampled_from(sorted(TARGETS)), label="file")
    command = data.draw(st.sampled_from(TARGETS[target]), label="command")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _copy_world(world, root)
        how = _damage(root / target, data)
        args, outputs = _command(command, root)
        before = _files(root)
        result = runner.invoke(app, args)
        after = _files(root)
    context = f"{command} with {target} damaged ({how}):\n{result.output}"
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{context}\n{result.exception!r}"
    )
    assert "Traceback" not in result.output, context
    assert result.exit_code in (0, 2), context
    if result.exit_code == 2:
        lines = [line for line in result.output.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        assert len(errors) == 1 and lines[-1] == errors[0], context
    elif command == "search":
        json.loads(result.output, parse_constant=lambda token: pytest.fail(f"{token}: {context}"))
    for name, digest in before.items():
        if not name.startswith(outputs):
            assert after.get(name) == digest, f"{name} changed or vanished: {context}"
    for name in set(after) - set(before):
        assert name.startswith(outputs), f"{name} written outside the output: {context}"
