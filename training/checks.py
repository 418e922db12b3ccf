"""Settings checks shared by every training task, run before any image is decoded."""

from __future__ import annotations

from training.augment import PRESETS
from training.errors import SettingsError
from training.models.embedding import model_names


def check_model_and_augmentation(model: str, aug: str) -> None:
    """Refuse an unknown backbone or augmentation preset, naming the valid choices.

    Raises:
        SettingsError: either name is unknown.
    """
    if model not in model_names():
        raise SettingsError(f"unknown model {model!r}; choose from {', '.join(model_names())}")
    if aug not in PRESETS:
        raise SettingsError(f"unknown augmentation {aug!r}; choose from {', '.join(PRESETS)}")
