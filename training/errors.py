"""Errors the training side raises for bad input; the pipeline command shows each as one line.

TrainingError
├── DataError      a dataset is missing, malformed, or an image cannot be read (with --strict)
└── SettingsError  an option value that cannot work (bad split string, unknown loss or preset)
"""

from __future__ import annotations


class TrainingError(Exception):
    """Base of every expected error raised by the training package."""


class DataError(TrainingError):
    """A dataset is missing or malformed, or an image is unreadable under --strict."""


class SettingsError(TrainingError):
    """A training or evaluation setting is invalid (split, loss, preset, protocol, model)."""
