"""The catalog index: exact vs approximate agreement, persistence, incremental add, model refusal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.faiss_structure import build_faiss, ivf_lists, resolve_kind, search_faiss
from training.index import GREY_FILE, INFO_FILE, OUTLINES_FILE, CatalogIndex
from training.outline import OUTLINE_BINS
from training.search_errors import IndexStoreError

MODEL = {
    "run": "/runs/a",
    "checkpoint": "best",
    "config": {"name": "resnet-tiny", "embedding_dim": 32},
    "weights_sha256": "aa",
}


def _unit(rng: np.random.Generator, n: int, dim: int = 32) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _items(n: int, start: int = 0) -> list[dict[str, object]]:
    return [{"id": f"lot-{i}", "lot": i} for i in range(start, start + n)]


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_agrees_with_exact_on_small_data(kind: str) -> None:
    rng = np.random.default_rng(0)
    data = _unit(rng, 3000)
    queries = data[:100] + 0.3 * _unit(rng, 100)  # near copies, as a new photo of a catalog coin
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    flat, flat_settings = build_faiss(data, "flat")
    approx, settings = build_faiss(data, kind)
    assert settings["kind"] == kind
    exact_scores, exact_rows = search_faiss(flat, flat_settings, data, queries, 5)
    scores, rows = search_faiss(approx, settings, data, queries, 5)
    assert np.mean(rows[:, 0] == exact_rows[:, 0]) >= 0.95
    assert np.array_equal(exact_rows[:, 0], np.arange(100))
    # Where the top-1 agrees, the approximate score is the exact cosine (rescored for IVF).
    same = rows[:, 0] == exact_rows[:, 0]
    np.testing.assert_allclose(scores[same, 0], exact_scores[same, 0], atol=1e-5)
    brute = np.sort(queries @ data.T, axis=1)[:, ::-1][:, :5]
    np.testing.assert_allclose(exact_scores, brute, atol=1e-5)


def test_kind_resolution() -> None:
    assert resolve_kind("auto", 10) == "flat"
    assert resolve_kind("auto", 10_000_000) == "ivf"
    assert resolve_kind("hnsw", 10) == "hnsw"
    with pytest.raises(IndexStoreError, match="choose one of"):
        resolve_kind("lsh", 10)
    assert ivf_lists(100) == 2 and ivf_lists(1_000_000) == 4000


def test_save_load_search_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = _unit(rng, 50)
    index = CatalogIndex(dim=32, model=MODEL)
    index.add(data, _items(50))
    index.save(tmp_path / "idx")
    loaded = CatalogIndex.load(tmp_path / "idx")
    (hits,) = loaded.search(data[7], 3)
    assert hits[0].item == {"id": "lot-7", "lot": 7}
    assert hits[0].rank == 1 and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.rank for h in hits] == [1, 2, 3] and hits[1].score <= hits[0].score
    info = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert info["dim"] == 32 and info["model"] == MODEL and info["count"] == 50
    assert loaded.search(data[:2], 100)[0][-1].rank == 50  # k capped at the index size


def test_incremental_add_keeps_old_embeddings(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    first, second = _unit(rng, 20), _unit(rng, 5)
    index = CatalogIndex(dim=32, model=MODEL)
    index.add(first, _items(20))
    index.save(tmp_path)
    grown = CatalogIndex.load(tmp_path)
    grown.add(second, _items(5, start=20))
    assert "lot-3" in grown and "lot-24" in grown and len(grown) == 25
    np.testing.assert_array_equal(grown.embeddings[:20], first)
    assert grown.search(second[4], 1)[0][0].item["id"] == "lot-24"
    with pytest.raises(IndexStoreError, match="duplicate"):
        grown.add(second[:1], _items(1, start=20))


def test_growing_past_the_threshold_switches_to_ivf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("training.faiss_structure.APPROXIMATE_FROM", 500)
    rng = np.random.default_rng(3)
    index = CatalogIndex(dim=32, model=MODEL)
    index.add(_unit(rng, 400), _items(400))
    assert index.settings["kind"] == "flat"
    index.add(_unit(rng, 400), _items(400, start=400))
    assert index.settings["kind"] == "ivf"
    assert index.search(index.embeddings[650], 1)[0][0].item["id"] == "lot-650"
    index.set_kind("flat")
    assert index.settings["kind"] == "flat" and len(index) == 800


def test_other_model_is_refused() -> None:
    index = CatalogIndex(dim=32, model=MODEL)
    index.check_model(dict(MODEL))
    retrained = {**MODEL, "weights_sha256": "bb"}
    with pytest.raises(IndexStoreError, match="cannot be compared"):
        index.check_model(retrained)
    other = {**MODEL, "config": {"name": "resnet18", "embedding_dim": 32}}
    with pytest.raises(IndexStoreError, match="resnet18"):
        index.check_model(other)
    with pytest.raises(IndexStoreError, match="dims"):
        index.search(np.zeros((1, 16), np.float32), 1)


def test_missing_and_damaged_index(tmp_path: Path) -> None:
    with pytest.raises(IndexStoreError, match="no catalog index"):
        CatalogIndex.load(tmp_path / "nowhere")
    index = CatalogIndex(dim=32, model=MODEL)
    index.add(_unit(np.random.default_rng(4), 3), _items(3))
    index.save(tmp_path)
    (tmp_path / "items.jsonl").write_text('{"id": "lot-0"}\n')
    with pytest.raises(IndexStoreError, match="damaged"):
        CatalogIndex.load(tmp_path)


def test_outlines_are_kept_with_their_coins(tmp_path: Path) -> None:
    """Outline profiles travel with their rows through add, save and load; hits name their row."""
    rng = np.random.default_rng(3)
    outlines = rng.normal(0, 0.02, (5, OUTLINE_BINS)).astype(np.float32)
    index = CatalogIndex(dim=32, model=MODEL, embeddings=_unit(rng, 3), items=_items(3))
    assert np.isnan(index.outlines).all() and index.outlines.shape == (3, OUTLINE_BINS)
    index.add(_unit(rng, 2), _items(2, start=3), outlines[3:])
    index.save(tmp_path)
    loaded = CatalogIndex.load(tmp_path)
    np.testing.assert_array_equal(loaded.outlines[3:], outlines[3:])
    assert np.isnan(loaded.outlines[:3]).all()
    hit = loaded.search(loaded.embeddings[4:5], 1)[0][0]
    assert hit.row == 4 and hit.item["id"] == "lot-4"
    with pytest.raises(IndexStoreError, match="outlines of shape"):
        loaded.add(_unit(rng, 1), _items(1, start=9), outlines[:2])
    # an index written before outlines were kept opens with every outline unknown
    (tmp_path / OUTLINES_FILE).unlink()
    assert np.isnan(CatalogIndex.load(tmp_path).outlines).all()
    # a damaged outline file is refused with the index, in one line
    np.save(tmp_path / OUTLINES_FILE, outlines[:2])
    with pytest.raises(IndexStoreError, match="damaged"):
        CatalogIndex.load(tmp_path)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_grey_queries_search_the_grey_view(tmp_path: Path, kind: str) -> None:
    """A grey query finds its coin among the grey views, kept through add, save and load."""
    rng = np.random.default_rng(4)
    colour, grey = _unit(rng, 40), _unit(rng, 40)
    index = CatalogIndex(dim=32, model=MODEL, kind=kind)
    index.add(colour[:30], _items(30), grey=grey[:30])
    index.add(colour[30:], _items(10, start=30), grey=grey[30:])
    index.save(tmp_path)
    loaded = CatalogIndex.load(tmp_path)
    assert loaded.has_grey and json.loads((tmp_path / INFO_FILE).read_text())["grey_view"]
    np.testing.assert_array_equal(loaded.view(grey=True), grey)
    for row in (3, 35):
        assert loaded.search(grey[row], 1, grey=True)[0][0].row == row
        assert loaded.search(colour[row], 1)[0][0].row == row
        # the views are apart: a grey query in the colour view finds another coin's vectors
        assert loaded.search(grey[row], 1, grey=False)[0][0].score < 0.9
    # each view has its own impostors, so its own bars
    assert loaded.calibration_for(True) != loaded.calibration_for(False)
    assert loaded.calibration_for(False) == loaded.calibration


def test_an_index_without_every_grey_view_has_none(tmp_path: Path) -> None:
    """Coins added without grey views, or an old index, leave grey queries on the colour view."""
    rng = np.random.default_rng(5)
    index = CatalogIndex(dim=32, model=MODEL, embeddings=_unit(rng, 3), items=_items(3))
    index.add(_unit(rng, 2), _items(2, start=3), grey=_unit(rng, 2))
    assert not index.has_grey and index.view(True) is index.embeddings  # three coins had none
    fresh = CatalogIndex(dim=32, model=MODEL)
    fresh.add(_unit(rng, 2), _items(2), grey=_unit(rng, 2))
    assert fresh.has_grey
    fresh.add(_unit(rng, 1), _items(1, start=2))  # one coin without: the view is dropped
    assert not fresh.has_grey
    query = fresh.embeddings[2]
    assert fresh.search(query, 1, grey=True)[0][0].row == 2  # the colour view answers
    fresh.save(tmp_path)
    assert not json.loads((tmp_path / INFO_FILE).read_text())["grey_view"]


def test_grey_view_files_are_checked(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    index = CatalogIndex(dim=32, model=MODEL)
    index.add(_unit(rng, 4), _items(4), grey=_unit(rng, 4))
    with pytest.raises(IndexStoreError, match="grey view of shape"):
        index.add(_unit(rng, 2), _items(2, start=4), grey=_unit(rng, 1))
    bad = _unit(rng, 1)
    bad[0, 0] = np.nan
    with pytest.raises(IndexStoreError, match="not all finite"):
        index.add(_unit(rng, 1), _items(1, start=4), grey=bad)
    assert len(index) == 4 and index.has_grey  # a refused add changes nothing
    index.save(tmp_path)
    np.save(tmp_path / GREY_FILE, _unit(rng, 3))  # damaged: another row count
    with pytest.raises(IndexStoreError, match="damaged"):
        CatalogIndex.load(tmp_path)
    # a grey file that index.json does not claim (a crash before it was written) is ignored
    info = json.loads((tmp_path / INFO_FILE).read_text())
    (tmp_path / INFO_FILE).write_text(json.dumps({**info, "grey_view": False}))
    assert not CatalogIndex.load(tmp_path).has_grey
