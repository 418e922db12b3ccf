"""Dataset reading, coin splits, the preprocessing cache, unreadable images, coin cropping."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic_dataset import Spec, write_dataset

import training.cache
from training.cache import Preprocess
from training.coinfind import BACKGROUND_RGB, find_coin
from training.cutout import crop_coin
from training.data import (
    catalog_protocol,
    load_images,
    parse_split,
    read_dataset,
    reference_records,
    split_coins,
    training_records,
)
from training.errors import DataError, SettingsError

SMALL = Spec(n_coins=4, angles=(0.0, 90.0), lights=("diffuse",), size=48)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "ds", SMALL)


@given(
    n=st.integers(min_value=3, max_value=60),
    val=st.floats(min_value=0.0, max_value=0.3),
    test=st.floats(min_value=0.05, max_value=0.4),
    seed=st.integers(min_value=0, max_value=2**31),
)
@settings(max_examples=60, deadline=None)
def test_split_is_by_coin_disjoint_and_complete(n: int, val: float, test: float, seed: int) -> None:
    coins = [f"C{i:03d}" for i in range(n)]
    fractions = (1 - val - test, val, test)
    split = split_coins(coins * 2, fractions, seed)  # repeated ids: one entry per image
    parts = [set(split.train), set(split.val), set(split.test)]
    assert set.union(*parts) == set(coins)
    assert sum(len(p) for p in parts) == n
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert split.test and split.train
    assert split == split_coins(list(reversed(coins)), fractions, seed)


def test_no_test_coin_in_any_training_regime(dataset: Path) -> None:
    records = read_dataset(dataset).records
    split = split_coins([r.coin for r in records], (0.5, 0.0, 0.5), seed=3)
    for regime in ("captures", "catalog", "both"):
        used = {r.coin for r in training_records(records, split.train, regime)}
        assert used == set(split.train)
        assert not used & set(split.test)


def test_regimes_choose_the_right_images(dataset: Path) -> None:
    records = read_dataset(dataset).records
    coins = sorted({r.coin for r in records})
    catalog = training_records(records, coins, "catalog")
    assert {r.role for r in catalog} == {"catalog"}
    assert len(catalog) == len({r.view for r in records}) == 4 * 2
    captures = training_records(records, coins, "captures")
    assert {r.role for r in captures} == {"capture"}
    assert len(training_records(records, coins, "both")) == len(captures) + len(catalog)


def test_catalog_protocol_without_catalog_uses_flagged_reference(tmp_path: Path) -> None:
    root = write_dataset(
        tmp_path / "ds",
        Spec(n_coins=2, angles=(0.0, 90.0), lights=("diffuse",), size=32, catalog=False),
    )
    records = read_dataset(root).records
    refs = reference_records(records)
    assert all(r.reference and r.shot == 0 for r in refs.values())
    gallery, queries = catalog_protocol(records, sorted({r.coin for r in records}))
    assert len(gallery) == 4 and len(queries) == len(records) - 4
    assert not {r.file_name for r in gallery} & {r.file_name for r in queries}


def test_torn_last_metadata_line_is_ignored_but_a_bad_middle_line_is_not(tmp_path: Path) -> None:
    root = write_dataset(
        tmp_path / "ds", Spec(n_coins=1, angles=(0.0,), lights=("diffuse",), size=32)
    )
    metadata = root / "metadata.jsonl"
    good = metadata.read_text()
    metadata.write_text(good + '{"file_name": "images/SYN-0000/obv')
    assert len(read_dataset(root).records) == good.count("\n")
    metadata.write_text('{"torn\n' + good)
    with pytest.raises(DataError, match=":1:"):
        read_dataset(root)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "not found"), ("", "dataset.json"), ('{"format": "other", "version": 1}', "format")],
)
def test_not_a_dataset(tmp_path: Path, content: str | None, message: str) -> None:
    root = tmp_path / "ds"
    if content is not None:
        root.mkdir()
        (root / "dataset.json").write_text(content)
    with pytest.raises(DataError, match=message):
        read_dataset(root)


@pytest.mark.parametrize("text", ["0.7,0.3", "a,b,c", "0.5,0.5,0.5", "0,0.5,0.5", "-0.1,0.6,0.5"])
def test_bad_split_strings(text: str) -> None:
    with pytest.raises(SettingsError, match="split"):
        parse_split(text)


def test_second_load_decodes_nothing(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = read_dataset(dataset).records
    settings_ = Preprocess(image_size=32)
    bank, report = load_images(records, settings_, tmp_path)
    assert report.decoded == len(records) and len(bank) == len(records)
    first = bank.pixels(range(len(bank)))

    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded an image on a cache hit")

    monkeypatch.setattr(training.cache.cv2, "imdecode", no_decoding)
    again, report = load_images(read_dataset(dataset).records, settings_, tmp_path)
    assert report.decoded == 0
    np.testing.assert_array_equal(again.pixels(range(len(again))), first)
    # Another image size is another cache (and so decodes again).
    with pytest.raises(AssertionError, match="decoded"):
        load_images(records, Preprocess(image_size=40), tmp_path)


def test_corrupt_image_is_skipped_with_one_warning_or_fails_strict(tmp_path: Path) -> None:
    root = write_dataset(
        tmp_path / "ds", Spec(n_coins=2, angles=(0.0,), lights=("diffuse",), size=32)
    )
    victim = root / "images/SYN-0001/reverse/0000.png"
    victim.write_bytes(victim.read_bytes()[:60])
    records = read_dataset(root).records
    warnings: list[str] = []
    bank, report = load_images(
        records, Preprocess(image_size=32), tmp_path / "c", warn=warnings.append
    )
    assert len(warnings) == 1 and "SYN-0001/reverse/0000.png" in warnings[0]
    assert list(report.skipped) == [str(victim)]
    assert len(bank) == len(records) - 1
    assert "images/SYN-0001/reverse/0000.png" not in {r.file_name for r in bank.records}
    with pytest.raises(DataError, match=r"0000\.png"):
        load_images(records, Preprocess(image_size=32), tmp_path / "c2", strict=True)


def _disc_photo(
    h: int, w: int, cx: int, cy: int, r: int, *, dark_coin_on_light: bool
) -> np.ndarray:
    rng = np.random.default_rng(cx * 7 + cy)
    background, coin = (220, 60) if dark_coin_on_light else (25, 190)
    img = np.full((h, w, 3), background, np.uint8)
    cv2.circle(img, (cx, cy), r, (coin, coin, coin), -1)
    # Relief detail and dust, so the coin is not a flat disc and the background not flat either.
    for _ in range(12):
        p = rng.integers(-r // 2, r // 2, 2)
        cv2.circle(
            img, (cx + int(p[0]), cy + int(p[1])), int(rng.integers(2, r // 4)), (128, 128, 128), -1
        )
    noise = rng.normal(0, 6, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("dark_coin_on_light", [True, False])
@pytest.mark.parametrize(("cx", "cy", "r"), [(160, 120, 60), (60, 70, 45), (250, 170, 50)])
def test_find_coin_off_centre_on_light_and_dark(
    cx: int, cy: int, r: int, dark_coin_on_light: bool
) -> None:
    img = _disc_photo(240, 320, cx, cy, r, dark_coin_on_light=dark_coin_on_light)
    circle = find_coin(img)
    assert circle.method == "contour"
    assert abs(circle.x - cx) < 3 and abs(circle.y - cy) < 3 and abs(circle.r - r) < 4
    crop = crop_coin(img, circle, 64)
    # The coin fills the crop: its centre pixel is coin, a corner is background.
    coin_level = 60 if dark_coin_on_light else 190
    assert abs(int(crop[32, 32].mean()) - coin_level) < 80
    assert abs(int(crop[1, 1].mean()) - (220 if dark_coin_on_light else 25)) < 30


@pytest.mark.parametrize("dark_coin_on_light", [True, False])
def test_masked_crop_has_one_background_whatever_the_card(dark_coin_on_light: bool) -> None:
    # Catalog photos on white card and captures on a dark turntable must not differ around the
    # coin: the mask replaces the background by one fixed colour and keeps the coin itself.
    img = _disc_photo(240, 320, 160, 120, 60, dark_coin_on_light=dark_coin_on_light)
    crop = crop_coin(img, find_coin(img), 64, mask_background=True)
    assert crop.shape == (64, 64, 3)
    assert np.abs(crop[1, 1].astype(int) - BACKGROUND_RGB).max() <= 2
    assert np.abs(crop[62, 2].astype(int) - BACKGROUND_RGB).max() <= 2
    coin_level = 60 if dark_coin_on_light else 190
    assert abs(int(crop[32, 10].mean()) - coin_level) < 40  # inside the flan, not masked


def test_derotation_undoes_the_turntable_angle(tmp_path: Path) -> None:
    root = write_dataset(
        tmp_path / "ds",
        Spec(n_coins=1, angles=(0.0, 90.0), lights=("diffuse",), sides=("obverse",), size=64),
    )
    for line in (root / "metadata.jsonl").read_text().splitlines():
        row = json.loads(line)
        assert row["turntable_deg"] in (0.0, 90.0)
    records = [r for r in read_dataset(root).records if r.role == "capture"]
    plain, _ = load_images(records, Preprocess(image_size=48), tmp_path / "c")
    upright, _ = load_images(records, Preprocess(image_size=48, derotate=True), tmp_path / "c")
    at0, at90 = (upright.pixels([i])[0].astype(float) for i in range(2))
    raw0, raw90 = (plain.pixels([i])[0].astype(float) for i in range(2))
    assert np.abs(at0 - at90).mean() < 0.5 * np.abs(raw0 - raw90).mean()


def test_find_coin_separates_a_coin_from_what_touches_it() -> None:
    # A coin touching a smaller round object (a second coin, a scale marker) merges with it in
    # the foreground mask; the coin is still found with its own centre and radius.
    img = np.full((200, 300, 3), 230, np.uint8)
    cv2.circle(img, (120, 100), 60, (120, 80, 40), -1)
    cv2.circle(img, (205, 110), 30, (120, 80, 40), -1)
    circle = find_coin(img)
    assert abs(circle.x - 120) <= 3 and abs(circle.y - 100) <= 3 and abs(circle.r - 60) <= 4


def test_runs_trained_before_masking_are_preprocessed_as_they_were() -> None:
    old = Preprocess.of_run({"image_size": 64, "derotate": False})
    assert not old.mask_background and old.image_size == 64
    current = Preprocess.of_run({"image_size": 64, "mask_background": True}, image_size=96)
    assert current.mask_background and current.image_size == 96
