"""Masking the background never cuts away the coin itself."""

import cv2
import numpy as np

from training.coinfind import BACKGROUND_RGB, Circle, crop_coin


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
