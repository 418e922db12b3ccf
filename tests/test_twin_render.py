"""The twin's renderer poses the real problem: identity lives in the coin, light matters."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from rig.sim.catalog_style import render_catalog_image
from rig.sim.coins import CoinCatalog, Variation
from rig.sim.shading import identity_mask, render_view
from rig.sim.world import LightState

SIZE = 128


def raking(azimuth: float, elevation: float = 20.0) -> dict[str, LightState]:
    return {"raking": LightState(1.0, azimuth, elevation, False)}


TOP = {"top": LightState(0.8, 135.0, 60.0, False), "dome": LightState(0.2, None, None, True)}
DOME = {"dome": LightState(1.0, None, None, True)}


def grey(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32).mean(axis=2) if image.ndim == 3 else image.astype(np.float32)


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@pytest.fixture(scope="module")
def catalog() -> CoinCatalog:
    return CoinCatalog(seed=0, rulers=3, types=6, coins=24, dies_per_design=2)


def test_same_inputs_same_pixels(catalog: CoinCatalog) -> None:
    a = render_view(catalog, "SIM-0002", "reverse", 30.0, TOP, size=SIZE, seed_noise=9)
    b = render_view(catalog, "SIM-0002", "reverse", 30.0, TOP, size=SIZE, seed_noise=9)
    c = render_view(catalog, "SIM-0002", "reverse", 30.0, TOP, size=SIZE, seed_noise=10)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)  # sensor noise differs from frame to frame
    assert np.abs(a.astype(int) - c.astype(int)).mean() < 4  # ... but only a little


@pytest.mark.parametrize(
    ("size", "color", "bits", "shape", "dtype"),
    [
        (96, True, 8, (96, 96, 3), np.uint8),
        ((160, 120), False, 8, (120, 160), np.uint8),
        (64, False, 16, (64, 64), np.uint16),
        ((100, 140), True, 16, (140, 100, 3), np.uint16),
    ],
)
def test_resolutions_and_bit_depths(
    catalog: CoinCatalog,
    size: int | tuple[int, int],
    color: bool,
    bits: int,
    shape: tuple[int, ...],
    dtype: type,
) -> None:
    image = render_view(
        catalog, "SIM-0001", "obverse", 0.0, TOP, size=size, color=color, bit_depth=bits
    )
    assert image.shape == shape and image.dtype == dtype
    if bits == 16:
        assert np.any(image % 257 != 0)  # real 16-bit values, not 8-bit ones stretched


def test_exposure_and_gain_set_brightness_with_clipping(catalog: CoinCatalog) -> None:
    def mean(exposure_us: float, gain_db: float = 0.0) -> tuple[float, float]:
        img = render_view(
            catalog,
            "SIM-0000",
            "obverse",
            0.0,
            TOP,
            size=SIZE,
            exposure_us=exposure_us,
            gain_db=gain_db,
        )
        return float(img.mean()), float((img == 255).mean())

    dark, _ = mean(exposure_us=2000)
    normal, clipped_normal = mean(exposure_us=20000)
    bright, clipped_gain = mean(exposure_us=20000, gain_db=24)
    assert dark < normal < bright
    assert clipped_normal < 0.05 < clipped_gain  # gain drives the highlights into clipping


def test_empty_stage(catalog: CoinCatalog) -> None:
    image = render_view(catalog, None, "obverse", 0.0, TOP, size=SIZE, seed_noise=None)
    with_coin = render_view(catalog, "SIM-0000", "obverse", 0.0, TOP, size=SIZE, seed_noise=None)
    centre = (slice(48, 80), slice(48, 80))
    assert image[centre].std() < 2.0  # nothing there but the matte stage
    assert with_coin[centre].mean() > image[centre].mean() + 20


STANDARD_PATTERNS = {
    "raking_n": raking(90),
    "raking_e": raking(0),
    "raking_s": raking(270),
    "raking_w": raking(180),
    "top": TOP,
    "diffuse": DOME,
}


def test_identity_lives_in_the_coin_not_the_noise() -> None:
    """Same coin under other light beats other coins of its type under the same light.

    Averaged over every pair of the standard plan's six light patterns (opposite raking lights
    included, the hardest pairs). With flan, strike, wear, damage and toning variation switched
    off, coins struck from the same dies become identical, so the gap closes (here: reverses).
    """
    names = list(STANDARD_PATTERNS)

    def gap(variation: Variation) -> float:
        catalog = CoinCatalog(
            seed=1, rulers=2, types=2, coins=16, dies_per_design=1, variation=variation
        )
        ids = catalog.coins_of_type(0)[:4]
        assert len(ids) == 4
        renders = {
            (c, name): grey(
                render_view(
                    catalog, c, "obverse", 0.0, STANDARD_PATTERNS[name], size=SIZE, seed_noise=k
                )
            )
            for c in ids
            for k, name in enumerate(names)
        }
        same_coin = [
            ncc(renders[c, first], renders[c, second])
            for c in ids
            for first, second in itertools.combinations(names, 2)
        ]
        same_type = [
            ncc(renders[a, name], renders[b, name])
            for name in names
            for a, b in itertools.combinations(ids, 2)
        ]
        return float(np.mean(same_coin) - np.mean(same_type))

    with_identity = gap(Variation())
    without = gap(Variation.none())
    assert with_identity > 0.02
    assert without < with_identity - 0.05


def test_light_from_opposite_azimuths_differs(catalog: CoinCatalog) -> None:
    east = grey(render_view(catalog, "SIM-0003", "obverse", 0.0, raking(0), size=SIZE))
    west = grey(render_view(catalog, "SIM-0003", "obverse", 0.0, raking(180), size=SIZE))
    disk = np.hypot(*np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2) < SIZE * 0.2
    assert ncc(east[disk], west[disk]) < 0.5
    assert np.abs(east - west)[disk].mean() > 8


def test_turning_coin_and_lights_together_turns_the_image(catalog: CoinCatalog) -> None:
    """90° is exact on a square grid: np.rot90 turns an array counter-clockwise as displayed."""
    base = render_view(
        catalog, "SIM-0005", "reverse", 0.0, raking(30, 35), size=SIZE, seed_noise=None
    )
    turned = render_view(
        catalog, "SIM-0005", "reverse", 90.0, raking(120, 35), size=SIZE, seed_noise=None
    )
    assert np.abs(np.rot90(base).astype(int) - turned.astype(int)).mean() < 1.5
    # any angle: undo the rotation with OpenCV and compare the coin area
    theta = 37.0
    other = render_view(
        catalog, "SIM-0005", "reverse", theta, raking(30 + theta, 35), size=SIZE, seed_noise=None
    )
    back = cv2.warpAffine(
        other, cv2.getRotationMatrix2D(((SIZE - 1) / 2,) * 2, -theta, 1.0), (SIZE, SIZE)
    )
    disk = np.hypot(*np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2) < SIZE * 0.22
    assert ncc(grey(back)[disk], grey(base)[disk]) > 0.95
    # whereas turning the coin under fixed lights changes what the relief shows
    fixed = render_view(
        catalog, "SIM-0005", "reverse", theta, raking(30, 35), size=SIZE, seed_noise=None
    )
    fixed_back = cv2.warpAffine(
        fixed, cv2.getRotationMatrix2D(((SIZE - 1) / 2,) * 2, -theta, 1.0), (SIZE, SIZE)
    )
    assert (
        ncc(grey(fixed_back)[disk], grey(base)[disk])
        < ncc(grey(back)[disk], grey(base)[disk]) - 0.05
    )


def test_tilt_foreshortens_the_coin(catalog: CoinCatalog) -> None:
    flat = identity_mask(catalog, "SIM-0000", "obverse", 0.0, SIZE)
    assert flat.shape == (SIZE, SIZE)
    coin_flat = render_view(catalog, "SIM-0000", "obverse", 0.0, DOME, size=SIZE, seed_noise=None)
    coin_tilt = render_view(
        catalog, "SIM-0000", "obverse", 0.0, DOME, size=SIZE, seed_noise=None, tilt_deg=30
    )

    def extent(image: np.ndarray, axis: int) -> int:
        g = grey(image)
        on_coin = np.abs(g - np.median(g[:8, :8])) > 20
        return int(on_coin.any(axis=axis).sum())

    rows_flat, rows_tilt = extent(coin_flat, 1), extent(coin_tilt, 1)
    cols_flat, cols_tilt = extent(coin_flat, 0), extent(coin_tilt, 0)
    assert rows_tilt < rows_flat * 0.95  # cos 30° ≈ 0.87 in height
    assert abs(cols_tilt - cols_flat) <= 3  # width barely changes


def test_identity_mask_turns_with_the_render(catalog: CoinCatalog) -> None:
    mask0 = identity_mask(catalog, "SIM-0004", "obverse", 0.0, SIZE)
    mask90 = identity_mask(catalog, "SIM-0004", "obverse", 90.0, SIZE)
    assert mask0.dtype == np.float32 and mask0.min() >= 0.0 and mask0.max() <= 1.0
    assert mask0.max() > 0.5
    assert np.abs(np.rot90(mask0) - mask90).max() < 1e-4
    coin = grey(render_view(catalog, "SIM-0004", "obverse", 0.0, DOME, size=SIZE, seed_noise=None))
    stage = np.median(coin[:10, :10])
    assert np.all(coin[mask0 > 0.5] > stage + 5)  # marks lie on the coin, not on the stage


def test_catalog_image(catalog: CoinCatalog) -> None:
    rgb, jpeg = render_catalog_image(catalog, "SIM-0006", "obverse")
    assert jpeg[:2] == b"\xff\xd8" and len(jpeg) < rgb.nbytes / 4
    assert rgb.dtype == np.uint8 and rgb.shape[0] == rgb.shape[1] >= 360
    raw = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert raw is not None
    decoded = cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)
    assert np.array_equal(decoded, rgb)
    _, jpeg_again = render_catalog_image(catalog, "SIM-0006", "obverse")
    assert jpeg_again == jpeg
    # warmer white balance than the rig's camera: more red relative to blue on the coin
    capture = render_view(
        catalog, "SIM-0006", "obverse", 0.0, TOP, size=rgb.shape[0], seed_noise=None
    )
    centre = slice(rgb.shape[0] * 2 // 5, rgb.shape[0] * 3 // 5)

    def ratio(im: np.ndarray) -> float:
        return float(im[centre, centre, 0].mean() / max(1.0, im[centre, centre, 2].mean()))

    assert ratio(rgb) > ratio(capture) * 1.05
