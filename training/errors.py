"""Errors the training side raises for bad input; the pipeline command shows each as one line.

TrainingError
├── DataError          a dataset is missing, malformed, or an image cannot be read (with --strict)
│   ├── OutsideDataset a metadata file name or a symlink leads outside the dataset folder
│   └── RunFolderError a run folder is not a run, or one of its files is damaged
├── SettingsError      an option value that cannot work (bad split string, unknown loss, NaN)
│   └── OutputPathError an output path that cannot be written, or a folder holding other things
└── SearchError        (training.search_errors) unreadable or oversized photos, damaged indexes
"""

from __future__ import annotations


class TrainingError(Exception):
    """Base of every expected error raised by the training package."""


class DataError(TrainingError):
    """A dataset is missing or malformed, or an image is unreadable under --strict."""


class OutsideDataset(DataError):
    """A file a dataset names lies outside the dataset folder (absolute, `..` or a symlink)."""


class RunFolderError(DataError):
    """A run folder is not a run of this kind, or its config, split or checkpoint is damaged."""


class SettingsError(TrainingError):
    """A training or evaluation setting is invalid (split, loss, preset, protocol, model)."""


class OutputPathError(SettingsError):
    """An output path that cannot be used: unwritable, unknown file type, or a foreign folder."""
