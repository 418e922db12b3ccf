"""Masking the background never cuts away the coin itself."""

import cv2
import numpy as np

from rig.sim.catalog_style import render_catalog_photo
from rig.sim.coins import CoinCatalog
from training.coinfind import BACKGROUND_RGB, Circle, find_coin
from training.cutout import crop_coin


def test_a_coin_partly_the_colour_of_its_card_keeps_its_flan() -> None:
    # A near-white coin on white card: half the flan is the card's own colour, so segmentation
    # sees only the darker half (as with the twin's SIM-0052 catalog photo).
    image = np.full((300, 300, 3), 246, np.uint8)
    disc = np.zeros((300, 300), np.uint8)
    cv2.circle(disc, (150, 150), 110, 1, -1)
    darker_half = disc.astype(bool) & (np.mgrid[:300, :300][1] > 150)
    image[darker_half] = (190, 185, 170)
    crop = crop_coin(image, Circle(150, 150, 110, "test"), 96, margin=0.04, mask_background=True)
    yy, xx = np.mgrid[:96, :96]
    inside = (xx - 47.5) ** 2 + (yy - 47.5) ** 2 < (0.9 * 96 / 2 / 1.04) ** 2
    masked = np.all(np.abs(crop.astype(int) - BACKGROUND_RGB) <= 3, axis=2)
    assert masked[inside].mean() < 0.05, "the mask removed part of the coin"
    assert masked[0, 0] and masked[-1, -1]  # the card outside the flan is replaced


def test_an_ordinary_coin_is_masked_along_its_own_outline() -> None:
    image = np.full((300, 300, 3), 40, np.uint8)
    cv2.ellipse(image, (150, 150), (110, 96), 0, 0, 360, (190, 160, 90), -1)  # an oval flan
    crop = crop_coin(image, Circle(150, 150, 110, "test"), 96, margin=0.04, mask_background=True)
    masked = np.all(np.abs(crop.astype(int) - BACKGROUND_RGB) <= 3, axis=2)
    # above and below the oval, inside the fitted circle, is background: masked away
    assert masked[4, 48] and masked[91, 48]
    assert not masked[48, 48]


def test_twin_catalog_photos_are_masked_along_the_true_flan() -> None:
    # Pale coins on white card are where Otsu split coins inside the flan and bit chunks away
    # (up to 30% of SIM-0031's obverse); the twin knows exactly where every coin lies.
    catalog = CoinCatalog(seed=0, types=6, coins=160)
    size = 64
    for coin_id in catalog.coin_ids()[:32]:
        for side in ("obverse", "reverse"):
            photo = render_catalog_photo(catalog, coin_id, side)
            circle = find_coin(photo.rgb)
            crop = crop_coin(photo.rgb, circle, size, margin=0.04, mask_background=True)
            coverage = np.repeat((photo.coverage[..., None] * 255).astype(np.uint8), 3, axis=2)
            truth = crop_coin(coverage, circle, size, margin=0.04)[..., 0] > 127
            kept = ~np.all(np.abs(crop.astype(int) - BACKGROUND_RGB) <= 3, axis=2)
            lost = (truth & ~kept).sum() / truth.sum()
            extra = (kept & ~truth).sum() / truth.sum()
            assert lost < 0.02, f"{coin_id} {side}: the mask cut away {lost:.1%} of the coin"
            # one ring of anti-aliased rim pixels is about 6% of a 64-px coin
            assert extra < 0.09, f"{coin_id} {side}: the mask kept {extra:.1%} of backdrop"
