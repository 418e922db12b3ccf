"""Preprocessing on a process pool gives byte for byte what one worker gives (issue 15, item 2).

The cache build, `pipeline index` and `pipeline search` each run once with one worker and once
with two, and their outputs are compared byte for byte: the cache array and its index, the
index's embeddings and items, the search results. Unreadable files must be reported in the
same order and, under --strict, the same one must fail.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from coin_drawing import draw_coin
from synthetic_dataset import Spec, write_dataset

from training.cache import Preprocess
from training.checkpoint import save_checkpoint
from training.data import load_images, read_dataset
from training.errors import DataError, SettingsError
from training.models.embedding import build_model
from training.parallel import ordered_map, resolve_workers
from training.search import index_folder, load_run_model
from training.search_errors import ImageReadError

SPEC = Spec(n_coins=5, angles=(0.0, 90.0, 200.0), lights=("diffuse", "raking-n"), size=48)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset with pose groups (two lights per angle) and two unreadable files."""
    root = write_dataset(tmp_path_factory.mktemp("workers") / "ds", SPEC)
    # one frame of a pose truncated (its sha256 no longer matches), one catalog image garbage
    capture = root / "images" / "SYN-0001" / "obverse" / "0002.png"
    capture.write_bytes(capture.read_bytes()[:100])
    (root / "catalog" / "SYN-0003" / "reverse.jpg").write_bytes(b"not a jpeg")
    return root


def _build(dataset: Path, cache: Path, workers: int) -> tuple[bytes, bytes, list[str], bytes]:
    """The cache array's, its index's and its outlines' bytes and the warnings, with `workers`."""
    warnings: list[str] = []
    records = read_dataset(dataset).records
    _, report = load_images(
        records, Preprocess(image_size=40), cache, warn=warnings.append, workers=workers
    )
    assert report.decoded == len(records)
    (outlines,) = cache.glob("*.outline.npy")
    (array,) = set(cache.glob("*.npy")) - {outlines}
    (index,) = cache.glob("*.json")
    return array.read_bytes(), index.read_bytes(), warnings, outlines.read_bytes()


def test_cache_is_byte_identical_with_one_and_two_workers(dataset: Path, tmp_path: Path) -> None:
    one = _build(dataset, tmp_path / "one", 1)
    two = _build(dataset, tmp_path / "two", 2)
    assert one[0] == two[0]  # every pixel of both crops of every image
    assert one[1] == two[1]  # rows and skipped files
    assert one[2] == two[2] and len(one[2]) == 2  # the same warnings in the same order
    assert one[3] == two[3]  # every outline profile
    rows = json.loads(one[1])["rows"]
    assert len(rows) == len(read_dataset(dataset).records) - 2
    assert np.frombuffer(one[0], np.uint8).any()  # not an empty array that matches trivially


def test_strict_fails_on_the_same_file_and_leaves_no_temporary(
    dataset: Path, tmp_path: Path
) -> None:
    records = read_dataset(dataset).records
    messages = []
    for workers in (1, 2):
        cache = tmp_path / str(workers)
        with pytest.raises(DataError) as caught:
            load_images(records, Preprocess(image_size=40), cache, strict=True, workers=workers)
        messages.append(str(caught.value))
        assert not list(cache.iterdir())  # neither a half-built array nor an index
    assert messages[0] == messages[1] and "SYN-0001/obverse/0002.png" in messages[0]


def _catalog(folder: Path, count: int) -> list[Path]:
    """Studio photos of `count` different coins, one of them unreadable."""
    folder.mkdir(parents=True)
    paths = []
    for n in range(count):
        image = np.full((150, 140, 3), 240, np.uint8)
        draw_coin(image, 70, 75, 50, np.random.default_rng(n), (190, 150, 90))
        path = folder / f"lot{n:02d}.png"
        assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        paths.append(path)
    paths[3].write_bytes(b"\x89PNG broken")
    return paths


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("run")
    model = build_model("resnet-tiny", image_size=48, embedding_dim=16)
    save_checkpoint(folder / "checkpoints" / "best", model)
    return folder


def test_index_and_search_are_identical_with_one_and_two_workers(run: Path, tmp_path: Path) -> None:
    photos = _catalog(tmp_path / "catalog", 9)
    run_model = load_run_model(run)
    files = {}
    for workers in (1, 2):
        out = tmp_path / f"index{workers}"
        report = index_folder(run_model, tmp_path / "catalog", out, workers=workers)
        assert (report.added, len(report.problems)) == (8, 1)
        files[workers] = [(out / name).read_bytes() for name in ("embeddings.npy", "items.jsonl")]
    assert files[1] == files[2]

    from training.search import Searcher

    searcher = Searcher.open(tmp_path / "index1")
    good = [p for n, p in enumerate(photos) if n != 3]
    found = [searcher.search_photos(good, 3, workers=w) for w in (1, 2)]
    as_json = [[r.to_json() for r in results] for results in found]
    assert as_json[0] == as_json[1] and len(as_json[0]) == 8
    assert all(np.array_equal(a.crop, b.crop) for a, b in zip(*found, strict=True))
    for workers in (1, 2):  # the first bad photo in photo order fails, as with one worker
        with pytest.raises(ImageReadError, match="lot03"):
            searcher.search_photos(photos, 3, workers=workers)


def test_ordered_map_keeps_order_and_bounds_what_is_in_flight() -> None:
    pulled = itertools.count()

    def tasks() -> Iterator[int]:  # counts what the pool has taken
        for n in range(-40, 0):
            next(pulled)
            yield n

    results = ordered_map(abs, tasks(), 2, window=3)
    assert next(results) == 40
    # the window (3 tasks) plus the one refilled before the first result was handed over
    assert next(pulled) <= 4
    assert list(results) == list(range(39, 0, -1))
    assert list(ordered_map(abs, [-1, -2], 1)) == [1, 2]


def test_worker_counts() -> None:
    assert resolve_workers(3) == 3
    assert resolve_workers(None) == resolve_workers(0) >= 1
    with pytest.raises(SettingsError, match="--workers"):
        resolve_workers(-1)


def test_workers_read_the_parents_settings_of_the_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The forkserver keeps the environment it started with; a pool started later must still
    # cut images as its parent would (the segmenter switch, the pixel limit), not as it was.
    names = ["COINRIG_SEGMENTER", "COINRIG_MAX_IMAGE_PIXELS"]
    monkeypatch.delenv("COINRIG_SEGMENTER", raising=False)
    monkeypatch.setenv("COINRIG_MAX_IMAGE_PIXELS", "123")
    assert list(ordered_map(os.getenv, names, 2)) == [None, "123"]
    monkeypatch.setenv("COINRIG_SEGMENTER", "off")
    monkeypatch.delenv("COINRIG_MAX_IMAGE_PIXELS")
    assert list(ordered_map(os.getenv, names, 2)) == ["off", None]
