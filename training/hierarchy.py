"""Hierarchical ruler → type classification, cross-validated as the landmarks paper does.

Two classifiers share a backbone architecture: one reads the ruler from the obverse (the
portrait), one the type from the reverse. A coin's type is argmax over types r of
p(ruler(r) | obverse) · p(r | reverse): the obverse settles which ruler's types are possible,
which matters where the reverses of two rulers' types look alike.

A class is a (ruler, type) pair, named by `type_class`: real coinage reused a reverse type (the
same personification and legend, VIRTVS AVG) under several rulers, each with its own catalogue
number, so one type name under two rulers is two classes, told apart only by the obverse.

Evaluation: k-fold cross-validation over coins (never images: both sides and every photo of a
coin stay in one fold), stratified by type so each fold holds every type in proportion; the
accuracy is the mean of the row-normalised confusion matrix's diagonal (balanced accuracy),
reported for reverse-only (type), obverse-only (ruler) and the hierarchy (type), with the
hierarchy's gain over reverse-only tested fold by fold (paired t-test) and pair by pair (sign test).

The data seam is `LabelledImage`: in-memory (image, ruler, type, side, coin_id) records, read
from datasets by `load_labelled_images` or made by a caller (tests, the twin benchmark).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.augment import build_augment, normalize
from training.cache import Preprocess, default_cache_dir
from training.checks import check_classifier_numbers, check_model_and_augmentation
from training.data import load_images, read_dataset
from training.errors import DataError, SettingsError
from training.models.embedding import build_model

# (train images, train labels, number of classes, test images) → test class probabilities
Predictor = Callable[[list[np.ndarray], list[int], int, list[np.ndarray]], np.ndarray]


def type_class(ruler: str, ctype: str) -> str:
    """The class label of a type under a ruler, e.g. `VIRTVS AVG (standing) [Probus]`."""
    return f"{ctype} [{ruler}]"


@dataclass(frozen=True)
class LabelledImage:
    """One photo of one coin side with its coin's labels: what classification reads."""

    image: np.ndarray  # H×W×3 uint8, the coin centred and filling the square
    ruler: str
    type: str
    side: str  # obverse | reverse
    coin_id: str  # COLLECTION/COIN_ID (training.split.CoinKey): ids repeat across collections

    @property
    def type_class(self) -> str:
        """The class label of its (ruler, type)."""
        return type_class(self.ruler, self.type)


@dataclass(frozen=True)
class CoinSamples:
    """One coin's labels and the positions of its obverse and reverse images."""

    coin_id: str
    ruler: str
    type: str
    obverse: tuple[int, ...]
    reverse: tuple[int, ...]

    @property
    def type_class(self) -> str:
        """The class label of its (ruler, type)."""
        return type_class(self.ruler, self.type)


def load_labelled_images(
    datasets: Sequence[Path],
    image_size: int,
    *,
    cache_dir: Path | None = None,
    per_side: int = 4,
    derotate: bool = False,
) -> list[LabelledImage]:
    """Cropped images with ruler and type from coins.jsonl; at most `per_side` per coin side.

    `derotate` undoes each capture's recorded turntable angle, as `pipeline train --derotate`.

    Raises:
        DataError: a dataset is unreadable or no coin has both a ruler and a type.
    """
    records, labels = [], {}
    for root in datasets:
        dataset = read_dataset(root)
        named = {
            coin_id: (str(row["ruler"]), str(row["type"]))
            for coin_id, row in dataset.coins.items()
            if row.get("ruler") and row.get("type")
        }
        taken: dict[str, int] = {}
        # the catalog image first: it is the one view every coin of a catalog has
        for r in sorted(dataset.records, key=lambda r: (r.role != "catalog", r.shot)):
            if r.coin_id in named and taken.get(r.view, 0) < per_side:
                taken[r.view] = taken.get(r.view, 0) + 1
                records.append(r)
                labels[r.coin] = named[r.coin_id]  # a coin is (collection, id), not its id
    if not records:
        raise DataError("no coin has both a ruler and a type in coins.jsonl")
    bank, _ = load_images(
        records,
        Preprocess(image_size=image_size, derotate=derotate),
        cache_dir or default_cache_dir(),
    )
    return [
        LabelledImage(np.asarray(bank.pixels([i])[0]), *labels[r.coin], r.side, str(r.coin))
        for i, r in enumerate(bank.records)
    ]


@dataclass(frozen=True)
class LabelSpace:
    """The type classes and rulers of a set of coins, sorted, and the ruler of each class."""

    types: list[str]  # class labels (`type_class`): one per (ruler, type)
    rulers: list[str]
    ruler_of_type: list[int]  # index into rulers, per type class

    @classmethod
    def of(cls, coins: Sequence[CoinSamples]) -> LabelSpace:
        """The label space of `coins`."""
        types = sorted({c.type_class for c in coins})
        rulers = sorted({c.ruler for c in coins})
        ruler_of = {c.type_class: c.ruler for c in coins}
        return cls(types, rulers, [rulers.index(ruler_of[t]) for t in types])

    @property
    def type_index(self) -> dict[str, int]:
        """Type class label → class index."""
        return {t: i for i, t in enumerate(self.types)}

    @property
    def ruler_index(self) -> dict[str, int]:
        """Ruler name → class index."""
        return {r: i for i, r in enumerate(self.rulers)}


def group_coins(images: Sequence[LabelledImage]) -> list[CoinSamples]:
    """Coins that have both sides, sorted by id (a type under two rulers is two classes).

    Raises:
        DataError: one coin with two rulers or types.
    """
    by_coin: dict[str, list[int]] = {}
    for i, item in enumerate(images):
        by_coin.setdefault(item.coin_id, []).append(i)
    coins = []
    for coin_id in sorted(by_coin):
        mine = [images[i] for i in by_coin[coin_id]]
        if len({(m.ruler, m.type) for m in mine}) != 1:
            raise DataError(f"coin {coin_id} has images with different ruler or type labels")
        ruler, ctype = mine[0].ruler, mine[0].type
        obverse = tuple(i for i in by_coin[coin_id] if images[i].side == "obverse")
        reverse = tuple(i for i in by_coin[coin_id] if images[i].side == "reverse")
        if obverse and reverse:
            coins.append(CoinSamples(coin_id, ruler, ctype, obverse, reverse))
    return coins


def class_balanced_folds(
    labels: Sequence[str], folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) positions of `folds` stratified folds: each class spread evenly, disjoint tests."""
    from sklearn.model_selection import StratifiedKFold  # here: slow to import for every CLI

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), np.asarray(labels)))


def balanced_accuracy(confusion: np.ndarray) -> float:
    """Mean over classes that occur (rows with any sample) of the row-normalised diagonal."""
    totals = confusion.sum(axis=1)
    present = totals > 0
    return float((np.diag(confusion)[present] / totals[present]).mean()) if present.any() else 0.0


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact sign test (McNemar's exact test) of `wins` against `losses`: P under 50:50."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def fold_t_test_p(first: Sequence[float], second: Sequence[float]) -> float:
    """Two-sided paired t-test of per-fold figures: P of a mean difference this far from 0."""
    diff = np.asarray(first, float) - np.asarray(second, float)
    if len(diff) < 2:
        return 1.0
    if np.ptp(diff) < 1e-12:  # no spread: t is 0/0 (no evidence) or infinite (certain)
        return 1.0 if abs(diff[0]) < 1e-12 else 0.0
    from scipy.stats import ttest_rel  # imported here, as StratifiedKFold above

    return float(ttest_rel(first, second).pvalue)


def hierarchy_predict(
    p_ruler: np.ndarray, p_type: np.ndarray, ruler_of_type: Sequence[int]
) -> np.ndarray:
    """The type r maximising p(ruler(r) | obverse) · p(r | reverse), one per row."""
    joint = p_ruler[:, np.asarray(ruler_of_type)] * p_type
    return joint.argmax(axis=1)


@dataclass(frozen=True)
class ClassifierSettings:
    """How each backbone + linear-head classifier is trained."""

    model: str = "resnet-tiny"
    image_size: int = 64
    epochs: int = 10
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    aug: str = "tuned"
    seed: int = 0

    def check(self) -> None:
        """Fail fast on settings that cannot work, before any image is decoded.

        Raises:
            SettingsError: unknown model or augmentation; sizes, epochs or rate not positive.
        """
        check_model_and_augmentation(self.model, self.aug)
        check_classifier_numbers(self)


class Classifier(nn.Module):
    """A named backbone (build_model's features, before any embedding Linear) + a linear head."""

    def __init__(self, model: str, image_size: int, classes: int) -> None:
        super().__init__()
        # the embedding model's own feature path: pooled, or the 1×1-reduced grid flattened
        self.body = build_model(model, image_size=image_size, embedding_dim=8)
        grid = self.body.grid_size
        width = self.body.backbone.out_channels if grid is None else self.body.fc.in_features
        self.head = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        """ImageNet-normalised B×3×H×W → B×classes logits."""
        feats = self.body.spatial_features(x)
        vec = self.body.backbone.pool(feats) if self.body.grid_size is None else feats.flatten(1)
        return self.head(vec)


def _as_batch(images: Sequence[np.ndarray]) -> Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255)


def train_classifier(
    images: Sequence[np.ndarray], labels: Sequence[int], classes: int, settings: ClassifierSettings
) -> Classifier:
    """Train a classifier with cross-entropy (AdamW, cosine decay, batched augmentation)."""
    torch.manual_seed(settings.seed)
    model = Classifier(settings.model, settings.image_size, classes)
    augment = build_augment(settings.aug)
    x_all, y_all = _as_batch(images), torch.as_tensor(list(labels))
    per_epoch = max(1, -(-len(images) // settings.batch_size))
    steps = settings.epochs * per_epoch
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(settings.seed)
    model.train()
    for _ in range(settings.epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), settings.batch_size):
            pick = order[start : start + settings.batch_size]
            if len(pick) < 2:  # BatchNorm cannot train on one image
                continue
            loss = F.cross_entropy(model(normalize(augment(x_all[pick]))), y_all[pick])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    _recalibrate_batchnorm(model, x_all, settings.batch_size)
    return model.eval()


@torch.no_grad()
def _recalibrate_batchnorm(model: nn.Module, images: Tensor, batch_size: int) -> None:
    # Short CPU runs take tens of steps, too few for BatchNorm's running averages (momentum
    # 0.1) to forget their initial 0/1; evaluation would then see mis-scaled features. One
    # pass over the un-augmented training images with a cumulative average fixes that.
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for start in range(0, len(images), batch_size):
        model(normalize(images[start : start + batch_size]))
    for m in norms:
        m.momentum = 0.1


@torch.no_grad()
def predict_proba(
    model: nn.Module, images: Sequence[np.ndarray], batch_size: int = 64
) -> np.ndarray:
    """Softmax class probabilities, N×classes."""
    model.eval()
    out = [
        torch.softmax(model(normalize(_as_batch(images[i : i + batch_size]))), dim=1)
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out).numpy()


def cnn_predictor(settings: ClassifierSettings) -> Predictor:
    """A Predictor that trains a fresh backbone classifier on each call."""

    def predict(
        train: list[np.ndarray], labels: list[int], classes: int, test: list[np.ndarray]
    ) -> np.ndarray:
        return predict_proba(train_classifier(train, labels, classes, settings), test)

    return predict


@dataclass
class FoldTally:
    """Confusion matrix summed over folds and each fold's own balanced accuracy."""

    confusion: np.ndarray
    per_fold: list[float] = field(default_factory=list)

    def add(self, truth: np.ndarray, predicted: np.ndarray) -> None:
        """Count one fold's (or one evaluation's) true and predicted class indices."""
        fold = np.zeros_like(self.confusion)
        np.add.at(fold, (truth, predicted), 1)
        self.confusion += fold
        self.per_fold.append(balanced_accuracy(fold))

    def summary(self, labels: list[str]) -> dict[str, Any]:
        """JSON-able figures: balanced accuracy, its spread over folds, the confusion matrix."""
        return {
            "balanced_accuracy": balanced_accuracy(self.confusion),
            "fold_std": float(np.std(self.per_fold)),
            "per_fold": self.per_fold,
            "labels": labels,
            "confusion": self.confusion.tolist(),
        }


def _coins_in_every_fold(
    images: Sequence[LabelledImage], folds: int, warn: Callable[[str], None]
) -> tuple[list[CoinSamples], list[str]]:
    """The coins of types with at least `folds` coins, and the types left out (named to `warn`)."""
    coins = group_coins(images)
    counts = Counter(c.type_class for c in coins)
    dropped = sorted(t for t, n in counts.items() if n < folds)
    if dropped:
        warn(f"left out {len(dropped)} type(s) with fewer than {folds} coins: {', '.join(dropped)}")
    return [c for c in coins if c.type_class not in dropped], dropped


def _predict_fold(
    images: Sequence[LabelledImage],
    predictor: Predictor,
    labels: LabelSpace,
    train: Sequence[CoinSamples],
    test: Sequence[CoinSamples],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One fold's true type and ruler indices and predicted ruler and type probabilities."""
    type_index, ruler_index = labels.type_index, labels.ruler_index
    obv = [i for c in train for i in c.obverse]
    rev = [i for c in train for i in c.reverse]
    # each test coin gives pairs (k-th obverse, k-th reverse): one prediction per pair
    pairs = [(c, o, r) for c in test for o, r in zip(c.obverse, c.reverse, strict=False)]
    p_ruler = predictor(
        [images[i].image for i in obv],
        [ruler_index[images[i].ruler] for i in obv],
        len(labels.rulers),
        [images[o].image for _, o, _ in pairs],
    )
    p_type = predictor(
        [images[i].image for i in rev],
        [type_index[images[i].type_class] for i in rev],
        len(labels.types),
        [images[r].image for _, _, r in pairs],
    )
    true_type = np.array([type_index[c.type_class] for c, _, _ in pairs])
    true_ruler = np.array([ruler_index[c.ruler] for c, _, _ in pairs])
    return true_type, true_ruler, p_ruler, p_type


def cross_validate(
    images: Sequence[LabelledImage],
    predictor: Predictor,
    *,
    folds: int = 5,
    seed: int = 0,
    warn: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Reverse-only, obverse-only and hierarchy balanced accuracy over class-balanced coin folds.

    Types with fewer coins than folds cannot be in every fold's test set, so they are left out
    (named through `warn` and in the result's "dropped_types").

    Raises:
        SettingsError: fewer than two folds, or fewer than two types with enough coins.
    """
    if folds < 2:
        raise SettingsError(f"cross-validation needs at least 2 folds, got {folds}")
    coins, dropped = _coins_in_every_fold(images, folds, warn)
    labels = LabelSpace.of(coins)
    types, rulers = labels.types, labels.rulers
    if len(types) < 2:
        raise SettingsError(
            f"need at least 2 types with >= {folds} coins each (both sides imaged); "
            f"found {len(types)}"
        )
    tallies = {
        "reverse_only": FoldTally(np.zeros((len(types), len(types)), np.int64)),
        "obverse_only": FoldTally(np.zeros((len(rulers), len(rulers)), np.int64)),
        "hierarchy": FoldTally(np.zeros((len(types), len(types)), np.int64)),
    }
    only_hierarchy = only_reverse = 0
    for train_pos, test_pos in class_balanced_folds([c.type_class for c in coins], folds, seed):
        true_type, true_ruler, p_ruler, p_type = _predict_fold(
            images, predictor, labels, [coins[i] for i in train_pos], [coins[i] for i in test_pos]
        )
        tallies["reverse_only"].add(true_type, p_type.argmax(1))
        tallies["obverse_only"].add(true_ruler, p_ruler.argmax(1))
        hierarchy = hierarchy_predict(p_ruler, p_type, labels.ruler_of_type)
        tallies["hierarchy"].add(true_type, hierarchy)
        reverse_right = p_type.argmax(1) == true_type
        only_hierarchy += int(np.sum((hierarchy == true_type) & ~reverse_right))
        only_reverse += int(np.sum((hierarchy != true_type) & reverse_right))
    # Both methods see the same test coins in a fold, so the per-fold figures are paired (the
    # t-test); the sign test counts test pairs one method gets right and the other wrong (pairs
    # of one coin are not independent, so its p is a rough guide, the fold test the firmer one)
    per_fold = tallies["hierarchy"].per_fold, tallies["reverse_only"].per_fold
    gains = [h - r for h, r in zip(*per_fold, strict=True)]
    return {
        "folds": folds,
        "coins": len(coins),
        "types": len(types),
        "rulers": len(rulers),
        "dropped_types": dropped,
        "reverse_only": tallies["reverse_only"].summary(types),
        "obverse_only": tallies["obverse_only"].summary(rulers),
        "hierarchy": tallies["hierarchy"].summary(types),
        "hierarchy_vs_reverse": {
            "fold_gain_mean": float(np.mean(gains)),
            "fold_gain_std": float(np.std(gains)),
            "per_fold_gain": gains,
            "only_hierarchy_right": only_hierarchy,
            "only_reverse_right": only_reverse,
            "sign_test_p": sign_test_p(only_hierarchy, only_reverse),
            "fold_t_test_p": fold_t_test_p(*per_fold),
        },
    }


def run_hierarchy_cv(
    images: Sequence[LabelledImage],
    settings: ClassifierSettings | None = None,
    *,
    folds: int = 5,
    seed: int = 0,
    warn: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Cross-validate backbone classifiers: reverse-only, obverse-only and the hierarchy."""
    settings = settings or ClassifierSettings()
    size = settings.image_size
    if any(item.image.shape[:2] != (size, size) for item in images):
        raise SettingsError(f"every image must be {size}×{size} (the classifier's image_size)")
    result = cross_validate(images, cnn_predictor(settings), folds=folds, seed=seed, warn=warn)
    return {"method": f"cnn:{settings.model}", "settings": asdict(settings), **result}


def paired_line(result: dict[str, Any]) -> str:
    """One line: the hierarchy's gain over reverse-only, per fold and pair by pair."""
    h = result["hierarchy_vs_reverse"]
    return (
        f"{result['method']}: hierarchy − reverse-only {100 * h['fold_gain_mean']:+.1f} points "
        f"per fold (± {100 * h['fold_gain_std']:.1f}; paired t-test over folds "
        f"p = {h['fold_t_test_p']:.2g}); test pairs only the hierarchy gets right "
        f"{h['only_hierarchy_right']}, only reverse-only {h['only_reverse_right']} "
        f"(sign test p = {h['sign_test_p']:.2g})"
    )
