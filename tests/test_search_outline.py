"""`pipeline search` re-ranks by the flan's outline once the run has a fitted weight."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import typer
from coin_drawing import draw_coin
from typer.testing import CliRunner

from pipeline.cli_search import register
from training.checkpoint import save_checkpoint
from training.fusion import FUSION_FILE, Fusion
from training.models.embedding import build_model
from training.verdict import calibrate_from_pairs

app = typer.Typer()
register(app)


@app.callback()
def _root() -> None:
    """Test app with only the search commands."""


runner = CliRunner()
CARD = 245
# metals by design: the query's design is gold, the coin with its flan is silver
TONES = ((150, 90, 60), (200, 160, 90), (205, 205, 210), (120, 110, 100))


def _photo(path: Path, design: int, flan: int, *, turn_deg: float = 0.0) -> None:
    """A studio photo: coin `design` (die and tone) struck on irregular flan `flan`, turned."""
    image = np.full((260, 260, 3), CARD, np.uint8)
    draw_coin(image, 130, 130, 95, np.random.default_rng(design), TONES[design % len(TONES)])
    rng = np.random.default_rng(1000 + flan)
    theta = np.linspace(0, 2 * math.pi, 720, endpoint=False)
    radius = np.full_like(theta, 0.93)
    for k in range(2, 7):
        radius += rng.normal(0, 0.05 / k) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    radius = 95 * np.minimum(radius, 1.0)  # the drawn coin is the die; the flan is cut from it
    points = np.stack([130 + radius * np.cos(theta), 130 + radius * np.sin(theta)], 1)
    flan_mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(flan_mask, [np.round(points).astype(np.int32)], 1)
    image[flan_mask == 0] = CARD
    turn = cv2.getRotationMatrix2D((130, 130), turn_deg, 1.0)
    image = cv2.warpAffine(image, turn, (260, 260), borderValue=(CARD, CARD, CARD))
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def _top(index: Path, query: Path) -> list[dict[str, object]]:
    result = runner.invoke(app, ["search", "--index", str(index), str(query), "--json"])
    assert result.exit_code == 0, result.output
    (answer,) = json.loads(result.output)
    return answer["candidates"]


def _run(tmp_path: Path) -> Path:
    """An untrained tiny run with a verdict, as `pipeline evaluate` would leave one."""
    torch.manual_seed(0)
    run = tmp_path / "run"
    model = build_model("resnet-tiny", image_size=64, embedding_dim=32)
    save_checkpoint(run / "checkpoints" / "best", model)
    rng = np.random.default_rng(0)
    calibrate_from_pairs(rng.uniform(0.95, 1, 200), rng.uniform(0, 0.9, 3000)).save(run)
    return run


def _index(run: Path, catalog: Path, index: Path) -> Path:
    """`pipeline index` of the catalog folder."""
    args = ["index", "--run", str(run), "--images", str(catalog), "--out", str(index)]
    assert runner.invoke(app, args).exit_code == 0
    return index


@pytest.mark.parametrize("turn", [0.0, 73.0])
def test_the_outline_settles_die_siblings(tmp_path: Path, turn: float) -> None:
    """Same die, other flan: appearance picks the sibling, the fitted outline the right coin."""
    run, catalog = _run(tmp_path), tmp_path / "catalog"
    # the query's die and design, photographed as the query is turned
    _photo(catalog / "sibling.png", design=1, flan=1, turn_deg=turn)
    _photo(catalog / "right.png", design=2, flan=2)  # another die: the query's own flan
    index = _index(run, catalog, tmp_path / "index")
    # the query shows design 1 (the sibling's) on flan 2 (the right coin's, which lies unturned)
    query = tmp_path / "query.png"
    _photo(query, design=1, flan=2, turn_deg=turn)

    unfused = _top(index, query)
    assert unfused[0]["id"] == "sibling.png"  # appearance alone: the same design wins
    assert all(c["outline_distance"] is not None for c in unfused)  # shown, not used

    Fusion(60.0, 100, 0.5, 0.99).save(run)
    fused = _top(index, query)
    assert fused[0]["id"] == "right.png"
    assert [c["rank"] for c in fused] == list(range(1, len(fused) + 1))
    distance = {c["id"]: c["outline_distance"] for c in fused}
    assert distance["right.png"] < 0.5 * distance["sibling.png"]
    # the verdict still reads the cosine: the score shown is the right coin's own cosine
    assert {c["id"]: c["score"] for c in fused}["right.png"] == pytest.approx(
        {c["id"]: c["score"] for c in unfused}["right.png"], abs=1e-4
    )
    (run / FUSION_FILE).write_text("{")
    result = runner.invoke(app, ["search", "--index", str(index), str(query)])
    assert result.exit_code == 2 and "not a fusion record" in result.output
    assert "Traceback" not in result.output


def test_grey_photos_take_the_grey_weight(tmp_path: Path) -> None:
    """Weight 0 for colour, 60 for grey: only the grey photo of the same coin is re-ranked."""
    run, catalog = _run(tmp_path), tmp_path / "catalog"
    _photo(catalog / "sibling.png", design=1, flan=1)
    _photo(catalog / "right.png", design=3, flan=2)  # darker metal: unlike the query in grey
    index = _index(run, catalog, tmp_path / "index")
    query = tmp_path / "query.png"
    _photo(query, design=1, flan=2)
    grey = tmp_path / "grey.png"
    image = cv2.imread(str(query), cv2.IMREAD_GRAYSCALE)
    assert image is not None and cv2.imwrite(str(grey), image)
    Fusion(0.0, 100, 0.9, 0.9).save(run)
    assert _top(index, grey)[0]["id"] == "sibling.png"  # no grey weight: appearance alone
    Fusion(0.0, 100, 0.9, 0.9, "", 60.0, 0.3, 0.9).save(run)
    assert _top(index, query)[0]["id"] == "sibling.png"  # colour: appearance alone
    assert _top(index, grey)[0]["id"] == "right.png"  # grey: the outline decides


def test_a_grey_photo_searches_the_indexs_grey_view(tmp_path: Path) -> None:
    """A black-and-white photo of a catalog coin meets that coin's grey view, not its colours."""
    run, catalog = _run(tmp_path), tmp_path / "catalog"
    _photo(catalog / "gold.png", design=1, flan=1)
    _photo(catalog / "silver.png", design=2, flan=2)
    index = _index(run, catalog, tmp_path / "index")
    grey = tmp_path / "grey.png"
    image = cv2.imread(str(catalog / "gold.png"), cv2.IMREAD_GRAYSCALE)
    assert image is not None and cv2.imwrite(str(grey), image)
    in_grey = _top(index, grey)
    assert in_grey[0]["id"] == "gold.png"
    # an index without a grey view (one built before them) compares it with the colour crops
    info_path = index / "index.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "grey_view": False}))
    in_colour = _top(index, grey)
    # (an untrained model puts every cosine near 1: compare how far each is from it)
    assert 1 - in_grey[0]["score"] < 0.1 * (1 - in_colour[0]["score"])
