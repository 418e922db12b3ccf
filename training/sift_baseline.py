"""The landmarks paper's baseline: dense SIFT, a k-means codebook, a polar pyramid, a linear SVM.

Per image: SIFT descriptors (OpenCV) on a dense grid of keypoints; each descriptor is assigned
its nearest codeword (MiniBatchKMeans fitted on the training fold's descriptors only, so the
test coins never shape the codebook); words are counted in a polar spatial pyramid around the
coin's centre (2 rings × 6 sectors, the paper's layout for round objects), and the
concatenated histogram (Hellinger-mapped, L2-normalised) goes to a linear SVM (LinearSVC).

It runs under the same cross-validation as the CNN classifiers (training.hierarchy), so the
table compares like with like. The hierarchy row needs probabilities; an SVM gives margins, so
they are turned into probabilities by a softmax over the one-vs-rest decision values.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from training.errors import SettingsError
from training.hierarchy import LabelledImage, Predictor, cross_validate

if TYPE_CHECKING:
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.svm import LinearSVC


@dataclass(frozen=True)
class SiftSettings:
    """Dense-grid spacing and patch size (px), codebook size, pyramid layout, SVM cost."""

    step_px: int = 4
    patch_px: int = 8
    words: int = 64
    rings: int = 2
    sectors: int = 6
    svm_c: float = 1.0
    max_descriptors: int = 20000  # descriptors the codebook is fitted on, at most
    seed: int = 0


def dense_sift(image: np.ndarray, step_px: int, patch_px: int) -> tuple[np.ndarray, np.ndarray]:
    """SIFT descriptors on a dense grid: (N×2 keypoint x, y; N×128 descriptors)."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    h, w = gray.shape
    half = patch_px / 2
    keypoints = [
        cv2.KeyPoint(float(x), float(y), float(patch_px))
        for y in np.arange(half, h - half + 1e-6, step_px)
        for x in np.arange(half, w - half + 1e-6, step_px)
    ]
    # OpenCV's type stubs leave out SIFT_create, which the module has (patent expired in 2020)
    kept, descriptors = cv2.SIFT_create().compute(gray, keypoints)  # type: ignore[attr-defined]
    points = np.array([kp.pt for kp in kept], np.float32).reshape(-1, 2)
    if descriptors is None:
        descriptors = np.zeros((0, 128), np.float32)
    return points, descriptors.astype(np.float32)


def polar_cells(points: np.ndarray, size: tuple[int, int], rings: int, sectors: int) -> np.ndarray:
    """Cell index (ring·sectors + sector) of each point around the image centre; -1 off the coin."""
    h, w = size
    dx = points[:, 0] - (w - 1) / 2
    dy = points[:, 1] - (h - 1) / 2
    radius = min(h, w) / 2
    rho = np.hypot(dx, dy) / radius
    ring = np.minimum((rho * rings).astype(int), rings - 1)
    sector = ((np.arctan2(dy, dx) % (2 * math.pi)) / (2 * math.pi) * sectors).astype(int) % sectors
    return np.where(rho <= 1.0, ring * sectors + sector, -1)


def pyramid_histogram(
    words: np.ndarray, cells: np.ndarray, vocabulary: int, n_cells: int
) -> np.ndarray:
    """Concatenated per-cell word counts, Hellinger-mapped and L2-normalised."""
    hist = np.zeros((n_cells, vocabulary), np.float32)
    on = cells >= 0
    np.add.at(hist, (cells[on], words[on]), 1.0)
    # Hellinger map: square roots of L1-normalised counts make a linear SVM compare
    # histograms by the Bhattacharyya kernel, which suits counts better than dot products
    vec = np.sqrt(hist.ravel() / max(1.0, float(hist.sum())))
    return vec / max(1e-12, float(np.linalg.norm(vec)))


class SiftBagOfWords:
    """Codebook and SVM fitted together on one training set."""

    def __init__(self, settings: SiftSettings) -> None:
        self.settings = settings
        self.codebook: MiniBatchKMeans | None = None
        self.svm: LinearSVC | None = None

    def _features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        s = self.settings
        assert self.codebook is not None
        rows = []
        for image in images:
            points, desc = dense_sift(image, s.step_px, s.patch_px)
            words = self.codebook.predict(desc) if len(desc) else np.zeros(0, int)
            cells = polar_cells(points, image.shape[:2], s.rings, s.sectors)
            rows.append(pyramid_histogram(words, cells, s.words, s.rings * s.sectors))
        return np.stack(rows)

    def fit(self, images: Sequence[np.ndarray], labels: Sequence[int]) -> SiftBagOfWords:
        """Fit the codebook on (a sample of) the images' descriptors, then the SVM."""
        s = self.settings
        descriptors = np.concatenate([dense_sift(im, s.step_px, s.patch_px)[1] for im in images])
        rng = np.random.default_rng(s.seed)
        if len(descriptors) > s.max_descriptors:
            descriptors = descriptors[rng.choice(len(descriptors), s.max_descriptors, False)]
        if len(descriptors) < s.words:
            raise SettingsError(
                f"{len(descriptors)} SIFT descriptors are too few for {s.words} codewords"
            )
        # imported here: scikit-learn adds ~2 s to every `pipeline` command's start-up
        from sklearn.cluster import MiniBatchKMeans
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.svm import LinearSVC

        self.codebook = MiniBatchKMeans(
            n_clusters=s.words, random_state=s.seed, n_init=3, batch_size=2048
        ).fit(descriptors)
        self.svm = LinearSVC(C=s.svm_c, max_iter=5000)
        with warnings.catch_warnings():
            # liblinear stops at max_iter on hard folds; the classifier it returns is still the
            # best it found, and one warning per fold would drown the table
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.svm.fit(self._features(images), np.asarray(labels))
        return self

    def predict_proba(self, images: Sequence[np.ndarray], classes: int) -> np.ndarray:
        """N×classes softmax of the one-vs-rest margins (classes unseen in training get 0)."""
        assert self.svm is not None
        margins = self.svm.decision_function(self._features(images))
        if margins.ndim == 1:  # two classes: sklearn returns one margin, for the second
            margins = np.stack([-margins, margins], axis=1)
        full = np.full((len(images), classes), -np.inf)
        full[:, self.svm.classes_] = margins
        full = np.exp(full - full.max(axis=1, keepdims=True))
        return full / full.sum(axis=1, keepdims=True)


def sift_predictor(settings: SiftSettings) -> Predictor:
    """A Predictor that fits a fresh codebook and SVM on each call."""

    def predict(
        train: list[np.ndarray], labels: list[int], classes: int, test: list[np.ndarray]
    ) -> np.ndarray:
        return SiftBagOfWords(settings).fit(train, labels).predict_proba(test, classes)

    return predict


def run_sift_baseline_cv(
    images: Sequence[LabelledImage],
    settings: SiftSettings | None = None,
    *,
    folds: int = 5,
    seed: int = 0,
    warn: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Cross-validate the SIFT baseline: reverse-only, obverse-only and the hierarchy."""
    settings = settings or SiftSettings()
    result = cross_validate(images, sift_predictor(settings), folds=folds, seed=seed, warn=warn)
    return {"method": "sift", "settings": asdict(settings), **result}
