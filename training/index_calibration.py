"""Same-coin thresholds from a catalog index's own coins: impostor pairs of the searched domain.

The run's verdict (training.verdict) is chosen on validation pairs of the training data, so on
photos unlike them (another photographer, another light, real coins for a twin-trained model)
its `match` can be said of two different coins. An index's entries are (nearly all) different
coins, so the cosine similarity of any two of them is an impostor score of the very domain that
is searched. Entries that may show one coin (one file, as the two halves of a plate; one coin
id; one lot) are not paired.

A search compares its query with every indexed coin, so its false-match rate is that of the
best of N-1 impostors, not of one pair. By the union bound a search over N coins says `match`
of a coin not in the index at most (N-1) × the per-pair FAR, whatever the scores' dependence;
the index's bars are therefore chosen at a per-pair FAR of target/(N-1): FAR 1e-3 per search
for `match`, 1e-2 for `possible`. Fewer pairs than that needs cannot resolve the target: the bar
is then the higher of the highest impostor score seen and the per-pair FAR's point on an
exponential tail fitted to the top impostor scores' Fisher z, flagged unresolved, and `pipeline search` uses the
stricter of the run's and the index's bars, so a small index can only tighten, never loosen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from training.search_errors import IndexStoreError
from training.verdict import MATCH_FAR, POSSIBLE_FAR, Verdict, impostor_threshold

# All pairs of up to this many coins are scored (2M pairs, 16 MB of scores, well under a second);
# a larger index is calibrated on a seeded sample of this many coins, all pairs among them.
CALIBRATION_ROWS = 2000
CALIBRATION_SEED = 0
# A query is out of the calibrated domain when its median cosine to the indexed coins lies
# more than this many standard deviations of the run's validation impostor scores from their
# mean. Chosen by measurement (docs/verdict.md): 1.5 flagged no in-domain query of three runs
# while flagging 25-100 % of grey or catalog-style queries; 1.0 flagged 12-17 % of in-domain
# queries of the weakest run.
DOMAIN_SPREADS = 1.5


@dataclass(frozen=True)
class Bar:
    """An index-side threshold: the per-search FAR it targets and what was measured at it."""

    target_far: float  # false-match rate of one search over the whole index
    pair_far: float  # target_far / (entries - 1): what each compared pair may contribute
    threshold: float
    far: float  # measured share of the index's impostor pairs above the threshold
    resolved: bool  # enough pairs to show a per-pair rate of pair_far


@dataclass(frozen=True)
class IndexCalibration:
    """The index's impostor pairs, the `match` / `possible` bars chosen on them, and their spread."""

    entries: int  # coins in the index when it was calibrated
    rows: int  # coins whose pairs were scored: every coin, or a seeded sample
    pairs: int  # impostor pairs scored
    excluded_pairs: int  # pairs that may show one coin (same file, coin id or lot): not used
    match: Bar | None  # None: fewer than two coins to pair
    possible: Bar | None
    impostor_mean: float | None
    impostor_std: float | None
    # Leave-one-out: share of the index's coins (all rows, not a sample) whose nearest other
    # coin scores above the match bar, i.e. the open-set false-match rate of the index
    # searched against itself. None when sampled or too small.
    open_set_match_rate: float | None
    # A coin's median cosine to the other coins, the median over coins: what a search query of
    # this index's kind is held against the run's validation by (DomainCheck).
    typical_cosine: float | None

    @property
    def usable(self) -> bool:
        """Whether there were pairs to choose bars on."""
        return self.match is not None and self.possible is not None

    def summary(self) -> str:
        """One line for `pipeline index` and `pipeline search`."""
        if self.match is None or self.possible is None:
            return (
                f"index calibration: {self.entries} coins give no impostor pair; "
                "the run's thresholds alone apply"
            )
        sample = f" (a sample of {self.rows} coins)" if self.rows < self.entries else ""
        unresolved = [
            name
            for name, bar in (("match", self.match), ("possible", self.possible))
            if not bar.resolved
        ]
        note = (
            f"; too few pairs to resolve the FAR of {' and '.join(unresolved)}: the highest "
            "impostor score or the impostors' fitted tail, whichever is higher, is used"
            if unresolved
            else ""
        )
        loo = (
            ""
            if self.open_set_match_rate is None
            else f"; each coin searched against the rest: false match "
            f"{100 * self.open_set_match_rate:.1f} %"
        )
        return (
            f"index calibration: {self.pairs:,} impostor pairs of {self.entries} coins{sample}, "
            f"cosine {self.impostor_mean:.3f} ± {self.impostor_std:.3f}; match > "
            f"{self.match.threshold:.4f}, possible > {self.possible.threshold:.4f} "
            f"(FAR {self.match.target_far:.0e} / {self.possible.target_far:.0e} per search)"
            f"{note}{loo}"
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON form stored in index.json."""
        return asdict(self)

    @classmethod
    def from_json(cls, raw: object) -> IndexCalibration:
        """Read the form to_json wrote, every field checked (index.json may be damaged).

        Raises:
            IndexStoreError: not a calibration.
        """
        try:
            if not isinstance(raw, dict) or set(raw) != set(cls.__dataclass_fields__):
                raise ValueError("not an object with the calibration's fields")
            count = {k: _count(raw[k], k) for k in ("entries", "rows", "pairs", "excluded_pairs")}
            rate = {
                k: None if raw[k] is None else _number(raw[k], k)
                for k in ("impostor_mean", "impostor_std", "open_set_match_rate", "typical_cosine")
            }
            if (raw["match"] is None) != (raw["possible"] is None) or (
                raw["match"] is not None and None in (rate["impostor_mean"], rate["impostor_std"])
            ):
                raise ValueError("bars without their impostor scores")
            return cls(
                entries=count["entries"],
                rows=count["rows"],
                pairs=count["pairs"],
                excluded_pairs=count["excluded_pairs"],
                match=None if raw["match"] is None else _read_bar(raw["match"]),
                possible=None if raw["possible"] is None else _read_bar(raw["possible"]),
                impostor_mean=rate["impostor_mean"],
                impostor_std=rate["impostor_std"],
                open_set_match_rate=rate["open_set_match_rate"],
                typical_cosine=rate["typical_cosine"],
            )
        except ValueError as e:
            raise IndexStoreError(f"index calibration is not valid ({e})") from e


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} {value!r:.20} is not a count")
    return value


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise ValueError(f"{name} {value!r:.20} is not a finite number")
    return float(value)


def _read_bar(raw: object) -> Bar:
    if not isinstance(raw, dict) or set(raw) != set(Bar.__dataclass_fields__):
        raise ValueError("a bar is not an object with a bar's fields")
    if not isinstance(raw["resolved"], bool):
        raise ValueError("resolved is not true or false")
    numbers = {k: _number(raw[k], k) for k in ("target_far", "pair_far", "threshold", "far")}
    return Bar(**numbers, resolved=raw["resolved"])


def _coin_keys(item: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """What says two items may be one coin: one source file, one coin id, one sale lot."""
    keys: list[tuple[str, ...]] = []
    if item.get("file") not in (None, ""):
        keys.append(("file", str(item["file"])))
    if item.get("coin_id") not in (None, ""):
        keys.append(("coin", str(item.get("collection") or ""), str(item["coin_id"])))
    if item.get("lot") not in (None, ""):
        keys.append(("lot", str(item.get("sale") or ""), str(item["lot"])))
    return keys


def coin_groups(items: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """A group number per item; items that may show one coin share it (transitively)."""
    parent = list(range(len(items)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, ...], int] = {}
    for i, item in enumerate(items):
        for key in _coin_keys(item):
            j = first.setdefault(key, i)
            parent[root(i)] = root(j)
    return np.array([root(i) for i in range(len(items))], dtype=np.int64)


def calibration_rows(count: int, seed: int = CALIBRATION_SEED) -> np.ndarray:
    """The rows whose pairs are scored: all of them, or a seeded sample of CALIBRATION_ROWS."""
    if count <= CALIBRATION_ROWS:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, CALIBRATION_ROWS, replace=False))


# The impostors' upper tail is modelled from this top share of their scores (peaks over a
# threshold): enough pairs to fit, few enough that the bulk's shape does not matter.
TAIL_SHARE = 0.05


def fitted_tail(impostor: np.ndarray, pair_far: float) -> float:
    """Where the impostors' fitted upper tail puts the per-pair FAR `pair_far`.

    Scores are taken to Fisher's z (atanh of the cosine: cosines are bounded by 1, z is not);
    above their 95th percentile u, the excess over u is fitted by an exponential of the mean
    excess β (peaks over a threshold), so P(z > u + t) = TAIL_SHARE · exp(-t / β). An
    exponential tail follows whatever the top scores do, where a normal fitted to all of them
    follows the bulk: a model that crowds some strangers together has a heavy top tail.
    """
    z = np.arctanh(np.clip(impostor, -0.999999, 0.999999))
    u = float(np.quantile(z, 1.0 - TAIL_SHARE))
    excess = z[z > u] - u
    if excess.size == 0 or pair_far >= TAIL_SHARE:
        return float(np.tanh(u))
    beta = float(excess.mean())
    return float(np.tanh(u + beta * np.log(TAIL_SHARE / pair_far)))


def _bar(impostor: np.ndarray, target_far: float, entries: int) -> Bar:
    pair_far = target_far / max(entries - 1, 1)
    threshold, far, resolved = impostor_threshold(impostor, pair_far)
    if not resolved:
        # Too few pairs to see a per-pair rate of pair_far. The highest impostor seen is not
        # such a bar: a new query's best of N-1 impostors beats the best of the index's P
        # pairs about (N-1)/P of the time (2 % for 50 coins of two sides), so the bar is also
        # raised to where the impostors' fitted tail puts pair_far.
        threshold = max(threshold, fitted_tail(impostor, pair_far))
        far = float(np.mean(impostor > threshold))
    return Bar(target_far, pair_far, threshold, far, resolved)


def calibrate_index(
    embeddings: np.ndarray, items: Sequence[Mapping[str, Any]], *, seed: int = CALIBRATION_SEED
) -> IndexCalibration:
    """Choose the index-side `match` / `possible` bars on the impostor pairs among its coins."""
    entries = len(items)
    rows = calibration_rows(entries, seed)
    # Rows of a memory-mapped file are read here, and only these.
    x = np.asarray(embeddings[rows], dtype=np.float32)
    groups = coin_groups([items[int(r)] for r in rows])
    scores = x @ x.T
    same = groups[:, None] == groups[None, :]  # the diagonal included: a coin is not its impostor
    upper = np.triu_indices(len(rows), 1)
    paired = ~same[upper]
    impostor = scores[upper][paired].astype(np.float64)
    if not np.all(np.isfinite(impostor)):
        raise IndexStoreError("index embeddings are not all finite: cannot calibrate")
    excluded = int(paired.size - paired.sum())
    if impostor.size == 0:
        return IndexCalibration(entries, len(rows), 0, excluded, *(None,) * 6)
    match, possible = (_bar(impostor, far, entries) for far in (MATCH_FAR, POSSIBLE_FAR))
    others = np.where(same, np.nan, scores)
    has_other = ~np.all(same, axis=1)
    nearest = np.nanmax(others[has_other], axis=1)
    typical = float(np.median(np.nanmedian(others[has_other], axis=1)))
    loo = float(np.mean(nearest > match.threshold)) if len(rows) == entries else None
    return IndexCalibration(
        entries=entries,
        rows=len(rows),
        pairs=int(impostor.size),
        excluded_pairs=excluded,
        match=match,
        possible=possible,
        impostor_mean=float(impostor.mean()),
        impostor_std=float(impostor.std()),
        open_set_match_rate=loo,
        typical_cosine=typical,
    )


@dataclass(frozen=True)
class Threshold:
    """One verdict bar after combining the run's and the index's: the stricter decides."""

    threshold: float
    decided_by: str  # "run" or "index"
    run: float | None
    index: float | None
    index_resolved: bool | None


@dataclass(frozen=True)
class Bars:
    """The `match` and `possible` bars a search labels by, each with where it came from."""

    match: Threshold
    possible: Threshold
    index_pairs: int

    def label(self, score: float) -> str:
        """`match`, `possible` or `no match` for one cosine similarity."""
        if score > self.match.threshold:
            return "match"
        if score > self.possible.threshold:
            return "possible"
        return "no match"

    def to_json(self) -> dict[str, Any]:
        """JSON-able form for `pipeline search --json`."""
        return {"match": asdict(self.match), "possible": asdict(self.possible)}

    def summary(self) -> str:
        """One line: each bar, which calibration set it, and the other's value."""
        parts = []
        for name, bar in (("match", self.match), ("possible", self.possible)):
            run = "none" if bar.run is None else f"{bar.run:.4f}"
            index = "none" if bar.index is None else f"{bar.index:.4f}"
            if bar.index is not None and not bar.index_resolved:
                index += f" (unresolved: {self.index_pairs:,} pairs)"
            parts.append(
                f"{name} > {bar.threshold:.4f} set by the {bar.decided_by} (run {run}, index {index})"
            )
        return "thresholds: " + "; ".join(parts)


def _combine(run: float | None, index: Bar | None) -> Threshold:
    if index is None or (run is not None and run >= index.threshold):
        assert run is not None
        return Threshold(run, "run", run, None if index is None else index.threshold, None)
    return Threshold(index.threshold, "index", run, index.threshold, index.resolved)


def combine(verdict: Verdict | None, index: IndexCalibration | None) -> Bars | None:
    """The stricter of the run's and the index's bars (None: neither is calibrated)."""
    usable = index if index is not None and index.usable else None
    if verdict is None and usable is None:
        return None
    return Bars(
        match=_combine(
            verdict.match.threshold if verdict else None, usable.match if usable else None
        ),
        possible=_combine(
            verdict.possible.threshold if verdict else None, usable.possible if usable else None
        ),
        index_pairs=usable.pairs if usable else 0,
    )


@dataclass(frozen=True)
class DomainCheck:
    """A query's median cosine to the indexed coins against what validation queries showed."""

    median: float
    low: float
    high: float

    @property
    def outside(self) -> bool:
        """Whether the query lies outside the run's calibrated domain."""
        return not self.low <= self.median <= self.high

    def to_json(self) -> dict[str, Any]:
        """JSON-able form for `pipeline search --json`."""
        return {
            "outside": self.outside,
            "median_cosine": round(self.median, 5),
            "validation_range": [round(self.low, 5), round(self.high, 5)],
        }

    def warning(self, what: str, measured: str = "median cosine to the indexed coins") -> str:
        """One line saying that `what` lies outside the calibrated domain, and what it means."""
        return (
            f"{what}: unlike the run's validation photos ({measured} {self.median:.3f}, "
            f"validation {self.low:.3f}..{self.high:.3f}); the run's thresholds do not hold "
            "there, only the index's calibration does"
        )


def domain_check(median: float, verdict: Verdict | None) -> DomainCheck | None:
    """Hold a median cosine against the run's validation impostors (None: no reference kept)."""
    if verdict is None or verdict.impostor_mean is None or verdict.impostor_std is None:
        return None
    spread = DOMAIN_SPREADS * verdict.impostor_std
    return DomainCheck(median, verdict.impostor_mean - spread, verdict.impostor_mean + spread)
