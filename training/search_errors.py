"""Errors of photo search: unreadable photos, photos without a coin, unusable catalog indexes.

All derive from training.errors.TrainingError, so `pipeline` shows each as one line, exit 2.

TrainingError
└── SearchError
    ├── ImageReadError     a file is missing, not an image, or truncated
    │   ├── ImageTooLarge  more pixels than COINRIG_MAX_IMAGE_PIXELS (checked before decoding)
    │   └── ImageTooSmall  too small or too narrow to show a coin
    ├── NoCoinFound        a photo was read but no coin could be found in it
    └── IndexStoreError    an index directory is missing, damaged, or built with another model
"""

from __future__ import annotations

from training.errors import TrainingError


class SearchError(TrainingError):
    """Base of the errors raised while indexing catalogs and searching photos."""


class ImageReadError(SearchError):
    """A photo cannot be read: missing, not an image, truncated or in an unsupported format."""


class NoCoinFound(SearchError):
    """A photo was read, but nothing in it looks like a coin."""


class IndexStoreError(SearchError):
    """A catalog index is missing, damaged, or belongs to another model."""


class ImageTooLarge(ImageReadError):
    """An image declares more pixels than the limit (a decompression bomb, or a huge scan)."""


class ImageTooSmall(ImageReadError):
    """An image too small or too narrow to show a coin (for example 20000×1 pixels)."""
