"""Settings checks shared by every training task, run before any image is decoded."""

from __future__ import annotations

from typing import Any

from training.augment import PRESETS
from training.errors import SettingsError
from training.models.embedding import model_names
from training.validation import MAX_LR, MAX_SEED, positive, whole


def check_model_and_augmentation(model: str, aug: str) -> None:
    """Refuse an unknown backbone or augmentation preset, naming the valid choices.

    Raises:
        SettingsError: either name is unknown.
    """
    if model not in model_names():
        raise SettingsError(f"unknown model {model!r}; choose from {', '.join(model_names())}")
    if aug not in PRESETS:
        raise SettingsError(f"unknown augmentation {aug!r}; choose from {', '.join(PRESETS)}")


def check_classifier_numbers(settings: Any) -> None:
    """A classifier's image_size, epochs, batch_size and lr > 0 (lr at most MAX_LR), seed >= 0.

    Raises:
        SettingsError: names the option and the value (NaN and infinities included).
    """
    positive(settings, "image_size", "epochs", "batch_size", "lr", high={"lr": MAX_LR})
    whole("--seed", settings.seed, low=0, high=MAX_SEED)
