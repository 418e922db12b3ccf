"""Augmentation presets: shapes and ranges kept, and each transform does what its preset says."""

import kornia.augmentation as K
import pytest
import torch

from training.augment import PRESETS, BorderFilledPerspective, build_augment
from training.errors import SettingsError


def _coins(count: int, size: int = 64) -> torch.Tensor:
    """Bronze-coloured discs with some relief texture on a dark backdrop, in [0, 1]."""
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (0.45 * size) ** 2).float()
    bronze = torch.tensor([0.72, 0.52, 0.30]).view(1, 3, 1, 1)
    texture = 0.1 * torch.rand(count, 1, size, size)
    return 0.15 + disc * (bronze - 0.15 + texture)


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("size", [40, 64, 96])
def test_every_preset_keeps_shape_and_range(name: str, size: int) -> None:
    augment = build_augment(name).train()
    x = _coins(8, size)
    y = augment(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= -1e-4 and float(y.max()) <= 1 + 1e-4


def test_none_returns_the_batch_unchanged() -> None:
    x = _coins(4)
    assert torch.equal(build_augment("none")(x), x)


def test_unknown_preset_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="unknown augmentation"):
        build_augment("heavy")


@pytest.mark.parametrize("name", ["tuned", "archive"])
def test_about_the_preset_share_turns_grey(name: str) -> None:
    torch.manual_seed(1)
    y = build_augment(name).train()(_coins(600))
    spread = (y.max(dim=1).values - y.min(dim=1).values).amax(dim=(1, 2))
    # JPEG after grey leaves channels a rounding step apart; colour bronze differs by ~0.4
    grey_share = float((spread < 0.03).float().mean())
    expected = PRESETS[name].grayscale_p  # type: ignore[union-attr]
    assert abs(grey_share - expected) < 0.07, grey_share


def test_archive_compresses_some_images_as_jpeg_without_wrecking_them() -> None:
    # With only the JPEG step, about jpeg_p of the images change, and by little on average.
    preset = PRESETS["archive"]
    assert preset is not None and preset.jpeg_p > 0
    jpeg = build_augment("archive")[-1].train()
    assert isinstance(jpeg, K.RandomJPEG)  # the step under test, not the resampling before it
    torch.manual_seed(2)
    x = _coins(400)
    y = jpeg(x)
    changed = (y - x).abs().amax(dim=(1, 2, 3)) > 1e-4
    assert abs(float(changed.float().mean()) - preset.jpeg_p) < 0.07
    assert float((y - x)[changed].abs().mean()) < 0.05


def test_perspective_fills_uncovered_corners_with_the_backdrop() -> None:
    # kornia pads with black; a uniform picture must stay uniform after any warp.
    x = torch.full((16, 3, 48, 48), 0.4)
    torch.manual_seed(3)
    y = BorderFilledPerspective(0.5, p=1.0)(x)
    assert torch.allclose(y, x, atol=1e-4)
