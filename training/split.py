"""Splitting coins into train, validation and test, and a run's split.json.

A coin is (collection, coin id): museums number their coins independently, and every
`rig simulate` collection names its coins SIM-0000, SIM-0001, ... whatever its seed, so an id
alone does not tell two coins apart (docs/dataset-format.md, "Collections").

split.json lists each part's coins as `[collection, coin_id]` pairs. Runs from before
collections listed bare ids; they still load (`RunSplit.from_json`): an id then stands for
that id in the collections of the run's own datasets, or in any collection when those cannot
be read, which is how such runs were evaluated.
"""

from __future__ import annotations

import json
import random
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from training.errors import SettingsError

PARTS = ("train", "val", "test")
SPLIT_FORMAT = 2
# the collection of a bare id in an old split.json: "one of the run's collections"
_ANY = ""


class CoinKey(NamedTuple):
    """One physical coin: the collection it belongs to and its id there."""

    collection: str
    coin_id: str

    def __str__(self) -> str:
        return f"{self.collection}/{self.coin_id}" if self.collection else self.coin_id


def parse_split(text: str) -> tuple[float, float, float]:
    """Parse 'train,val,test' fractions such as '0.7,0.1,0.2'.

    Raises:
        SettingsError: not three non-negative numbers summing to 1 with a positive train share.
    """
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise SettingsError(
            f"bad split {text!r}: expected three fractions like 0.7,0.1,0.2"
        ) from None
    if len(parts) != 3 or min(parts) < 0 or parts[0] <= 0 or abs(sum(parts) - 1) > 1e-6:
        raise SettingsError(
            f"bad split {text!r}: expected three fractions >= 0 summing to 1, like 0.7,0.1,0.2"
        )
    return parts[0], parts[1], parts[2]


@dataclass(frozen=True)
class Split:
    """Coins of each part; disjoint, and together every coin."""

    train: tuple[CoinKey, ...]
    val: tuple[CoinKey, ...]
    test: tuple[CoinKey, ...]

    def to_json(self) -> str:
        """split.json: each part's coins as [collection, coin_id] pairs."""
        parts = {part: [list(coin) for coin in getattr(self, part)] for part in PARTS}
        return json.dumps({"format": SPLIT_FORMAT, **parts}, indent=2) + "\n"


def split_coins(
    coins: Sequence[CoinKey], fractions: tuple[float, float, float], seed: int
) -> Split:
    """Shuffle coins with the seed and cut them by the fractions (never by image).

    Coins sort by collection, then id, so a single collection splits as it did when coins
    were keyed by id alone.
    """
    unique = sorted(set(coins))
    random.Random(seed).shuffle(unique)
    n = len(unique)
    n_test = round(fractions[2] * n)
    n_val = round(fractions[1] * n)
    # A requested part gets at least one coin when there are enough, so validation never vanishes.
    if fractions[2] > 0 and n >= 3:
        n_test = max(1, n_test)
    if fractions[1] > 0 and n >= 3:
        n_val = max(1, n_val)
    n_train = n - n_test - n_val
    if n_train < 1:
        raise SettingsError(f"{n} coins are too few for split {fractions}")
    return Split(
        tuple(sorted(unique[:n_train])),
        tuple(sorted(unique[n_train : n_train + n_val])),
        tuple(sorted(unique[n_train + n_val :])),
    )


@dataclass(frozen=True)
class RunSplit:
    """A trained run's split as read back: which part, if any, each coin was in."""

    parts: Mapping[str, frozenset[CoinKey]]
    # an old split.json's bare ids stand for these collections (None: any collection)
    legacy_collections: frozenset[str] | None = None

    @property
    def legacy(self) -> bool:
        """Whether split.json listed bare coin ids (a run from before collections)."""
        return any(coin.collection == _ANY for part in self.parts.values() for coin in part)

    def has(self, part: str, coin: CoinKey) -> bool:
        """Whether the coin was in this part of the run's split."""
        coins = self.parts[part]
        if coin in coins:
            return True
        bare = CoinKey(_ANY, coin.coin_id) in coins
        within = self.legacy_collections is None or coin.collection in self.legacy_collections
        return bare and within

    def seen(self, coin: CoinKey) -> bool:
        """Whether the run trained or validated on the coin."""
        return self.has("train", coin) or self.has("val", coin)

    def in_collections(self, collections: Collection[str]) -> RunSplit:
        """This split with its bare ids (if any) taken to be coins of `collections`."""
        return RunSplit(self.parts, frozenset(collections))

    @classmethod
    def from_json(cls, raw: Any) -> RunSplit | None:
        """The split of a parsed split.json, or None when it is not one.

        Accepts `[collection, coin_id]` pairs and, from runs before collections, bare ids.
        """
        if not isinstance(raw, dict) or not all(isinstance(raw.get(p), list) for p in PARTS):
            return None
        parts: dict[str, frozenset[CoinKey]] = {}
        for part in PARTS:
            coins = [_coin(entry) for entry in raw[part]]
            if any(coin is None for coin in coins):
                return None
            parts[part] = frozenset(c for c in coins if c is not None)
        return cls(parts)


def _coin(entry: Any) -> CoinKey | None:
    """A split.json entry as a coin: a [collection, coin_id] pair, or an old bare id."""
    if isinstance(entry, str):
        return CoinKey(_ANY, entry)
    ok = isinstance(entry, list) and len(entry) == 2 and all(isinstance(e, str) for e in entry)
    if not ok or not entry[0]:
        return None
    return CoinKey(entry[0], entry[1])


def by_collection(coins: Iterable[CoinKey]) -> dict[str, list[CoinKey]]:
    """Coins grouped by collection, both sorted."""
    groups: dict[str, list[CoinKey]] = {}
    for coin in sorted(set(coins)):
        groups.setdefault(coin.collection, []).append(coin)
    return groups
