"""Appearance and outline together: re-rank a query's nearest catalog entries by both.

The embedding finds the right coin among its five nearest entries almost always; what it
misses is which of a few die-siblings (same dies, same design) it is, and there the flan's
outline (training.outline) speaks. A query's RERANK_DEPTH nearest entries by cosine are
re-scored as

    cosine - weight × outline distance

and the rest keep their order below them. `weight` is fitted per run on its validation coins
(never the test coins) by `pipeline evaluate` and kept in RUN/fusion.json, which `pipeline
search` reads as it reads verdict.json. The fit maximises the likelihood of the right entry
under a softmax of the fused score (a conditional logit: weight and a temperature, chosen on a
grid), so it is defined even where validation top-1 is already 100 % and prefers the weight
that separates right from wrong by the widest margin.

Where an outline is unknown (training.outline's NaN profile), that pair takes the query's best
known outline distance among its candidates: a missing outline never counts against a coin.
The verdict (match / possible) keeps reading the cosine alone, whose thresholds it calibrated.

Grey queries get a weight of their own (`grey_weight`), fitted on the same validation queries
turned grey: a colour-trained embedding says much less about a grey photo, while its outline is
the same, so the outline must count for more there. A query is grey when its coin's pixels have
no colour (looks_grey), as a black-and-white archive photo has none.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.checkpoint import write_atomic
from training.errors import RunFolderError

FUSION_FILE = "fusion.json"
# Candidates by cosine that the outline re-scores; beyond them the cosine order stands. On the
# demo runs the right coin is among the 5 nearest in 99.5-99.9 % of queries.
RERANK_DEPTH = 20
# Scores of entries beyond the depth are pushed this far down, keeping their own order.
BEYOND_DEPTH = 1e3
# Weights tried by the fit (0: appearance alone); outline distances are ~0.01 (same coin) to
# ~0.02 (another coin) of the radius, cosines span ~1.
WEIGHTS = (0.0, *np.geomspace(1.0, 256.0, 25).tolist())
TEMPERATURES = tuple(np.geomspace(2.0, 256.0, 22).tolist())
# Fewer validation queries than this with a known outline leave the weight at 0.
MIN_FIT_QUERIES = 20


@dataclass(frozen=True)
class Fusion:
    """The fitted outline weight and what it did on the validation coins."""

    weight: float
    queries: int  # validation queries the fit used
    val_top1_appearance: float | None
    val_top1_fused: float | None
    note: str = ""
    # the weight for grey queries, fitted on the same queries turned grey (None: `weight`)
    grey_weight: float | None = None
    grey_val_top1_appearance: float | None = None
    grey_val_top1_fused: float | None = None

    def weight_for(self, grey: bool) -> float:
        """The outline weight for a colour or a grey query."""
        return self.grey_weight if grey and self.grey_weight is not None else self.weight

    def to_json(self) -> dict[str, Any]:
        """The JSON record kept in RUN/fusion.json."""
        return asdict(self)

    def save(self, run: Path) -> None:
        """Write RUN/fusion.json (temp file, fsync, rename)."""
        text = json.dumps(self.to_json(), indent=2) + "\n"
        write_atomic(run / FUSION_FILE, lambda p: p.write_text(text))

    @classmethod
    def load(cls, run: Path) -> Fusion | None:
        """RUN/fusion.json, or None when `pipeline evaluate` has not written one.

        Raises:
            RunFolderError: the file exists but is not a fusion record.
        """
        path = run / FUSION_FILE
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text())
            weight = float(raw["weight"])
            grey = raw.get("grey_weight")
            grey_weight = None if grey is None else float(grey)
            for w in (weight, grey_weight):
                if w is not None and not (np.isfinite(w) and w >= 0):
                    raise ValueError(f"weight {w}")
            return cls(
                weight,
                int(raw.get("queries", 0)),
                raw.get("val_top1_appearance"),
                raw.get("val_top1_fused"),
                str(raw.get("note", "")),
                grey_weight,
                raw.get("grey_val_top1_appearance"),
                raw.get("grey_val_top1_fused"),
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RunFolderError(f"{path}: not a fusion record ({e})") from e


def fill_unknown(distance: np.ndarray) -> np.ndarray:
    """Distances with each unknown pair set to its row's best known one (0 if none is known)."""
    d = np.asarray(distance, np.float64)
    known = np.isfinite(d)
    best = np.where(known.any(axis=1), np.where(known, d, np.inf).min(axis=1), 0.0)
    return np.where(known, d, best[:, None])


def fused_scores(
    similarity: np.ndarray, distance: np.ndarray, weight: float, depth: int = RERANK_DEPTH
) -> np.ndarray:
    """Q×G ranking scores: each row's `depth` nearest by cosine re-scored with the outline.

    Entries beyond the depth keep their cosine order, BEYOND_DEPTH below every re-scored one.
    Unknown distances count as the row's best known one among the re-scored entries.
    """
    sim = np.asarray(similarity, np.float64)
    if weight == 0 or sim.size == 0:
        return sim.copy()
    depth = min(depth, sim.shape[1])
    nearest = np.argsort(-sim, axis=1, kind="stable")[:, :depth]
    rows = np.arange(len(sim))[:, None]
    candidates = fill_unknown(np.asarray(distance)[rows, nearest])
    scores = sim - BEYOND_DEPTH
    scores[rows, nearest] = sim[rows, nearest] - weight * candidates
    return scores


def _log_likelihood(scores: np.ndarray, truth: np.ndarray, temperature: float) -> float:
    """Mean log-probability of the right entry under softmax(temperature × scores)."""
    z = temperature * scores
    z -= z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(z[np.arange(len(z)), truth] - log_norm))


def fit_fusion(similarity: np.ndarray, distance: np.ndarray, same: np.ndarray) -> Fusion:
    """The outline weight that best explains which entry is right, from validation queries.

    similarity, distance: Q×G; same: Q×G booleans, True where the entry shows the query's coin
    side (one per row where the right entry is in the gallery; other rows are not used).
    """
    same = np.asarray(same, bool)
    usable = (same.sum(axis=1) == 1) & np.isfinite(np.asarray(distance)).any(axis=1)
    if usable.sum() < MIN_FIT_QUERIES:
        return Fusion(
            0.0,
            int(usable.sum()),
            None,
            None,
            f"{int(usable.sum())} validation queries with a known outline; "
            f"{MIN_FIT_QUERIES} are needed to fit a weight: appearance alone",
        )
    sim = np.asarray(similarity, np.float64)[usable]
    dist = np.asarray(distance)[usable]
    truth = same[usable].argmax(axis=1)
    # The likelihood is taken over each query's re-scored candidates only, and only for queries
    # whose right entry is among them: beyond the depth no weight can help, and the entries
    # pushed BEYOND_DEPTH down would swamp the fit with those few queries.
    depth = min(RERANK_DEPTH, sim.shape[1])
    nearest = np.argsort(-sim, axis=1, kind="stable")[:, :depth]
    reached = (nearest == truth[:, None]).any(axis=1)
    rows = np.arange(int(reached.sum()))[:, None]
    cand_sim = sim[reached][rows, nearest[reached]]
    cand_dist = fill_unknown(dist[reached][rows, nearest[reached]])
    cand_truth = (nearest[reached] == truth[reached][:, None]).argmax(axis=1)
    best: tuple[float, float] = (-np.inf, 0.0)
    for weight in WEIGHTS:
        scores = cand_sim - weight * cand_dist
        likelihood = max(_log_likelihood(scores, cand_truth, t) for t in TEMPERATURES)
        if likelihood > best[0] + 1e-9:  # ties keep the smaller weight
            best = (likelihood, weight)
    weight = best[1]

    def top1(w: float) -> float:
        return float(np.mean(fused_scores(sim, dist, w).argmax(axis=1) == truth))

    return Fusion(weight, int(usable.sum()), top1(0.0), top1(weight))


# A crop is grey when its coin pixels' channels differ by less than this on average (8-bit);
# JPEG chroma rounding leaves a grey photo within 1-2.
GREY_SPREAD = 3.0


def looks_grey(crop: np.ndarray, background: tuple[int, int, int]) -> bool:
    """Whether a masked uint8 crop's coin (its pixels other than `background`) has no colour."""
    pixels = np.asarray(crop, np.int16).reshape(-1, 3)
    coin = np.abs(pixels - np.asarray(background, np.int16)).max(axis=1) > 2
    if not coin.any():
        return False
    spread = pixels[coin].max(axis=1) - pixels[coin].min(axis=1)
    return float(spread.mean()) < GREY_SPREAD
