"""A same-coin verdict calibrated on validation pairs: thresholds with their measured error rates.

Genuine pairs are two images of the same physical coin, impostor pairs two different coins;
their cosine similarities come from `pipeline evaluate`. A threshold t is chosen so that the
measured false-match rate FAR(t) = share of impostor scores above t stays at or below a target,
then the true-accept rate TAR(t) = share of genuine scores above t is what that costs.
`match` means above the FAR 1e-3 threshold, `possible` above the FAR 1e-2 one. The open-set
case (the coin simply is not in the catalog) is the common one, so a search whose best score
clears neither says "no catalog coin matches" rather than naming its nearest neighbour.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from training.report import pyplot
from training.search_errors import SearchError

VERDICT_FILE = "verdict.json"
ROC_FILE = "roc.png"
MATCH_FAR = 1e-3
POSSIBLE_FAR = 1e-2
LABELS = ("match", "possible", "no match")
NO_MATCH_TEXT = "no catalog coin matches"


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold, the FAR it was chosen for and the rates measured at it."""

    target_far: float
    threshold: float
    far: float  # measured false-match rate: impostor scores > threshold
    frr: float  # measured false-non-match rate: genuine scores <= threshold
    tar: float  # 1 - frr
    # Fewer than 1/target_far impostor pairs cannot show a rate this low: the threshold is then
    # the highest impostor score, and the measured FAR (0) is only an upper-bound guess.
    resolved: bool


@dataclass(frozen=True)
class Verdict:
    """Same-coin thresholds: `match` at FAR 1e-3, `possible` at FAR 1e-2, with pair counts."""

    match: OperatingPoint
    possible: OperatingPoint
    genuine_pairs: int
    impostor_pairs: int
    auc: float
    # What validation impostor pairs scored: the reference a search query's typical similarity
    # to the indexed coins is held against (None in verdicts written before it was kept).
    impostor_mean: float | None = None
    impostor_std: float | None = None

    def label(self, score: float) -> str:
        """`match`, `possible` or `no match` for one cosine similarity."""
        if score > self.match.threshold:
            return "match"
        if score > self.possible.threshold:
            return "possible"
        return "no match"

    def summary(self) -> str:
        """One line per operating point, for reports and the command line."""
        lines = []
        for name, p in (("match", self.match), ("possible", self.possible)):
            note = "" if p.resolved else f" (only {self.impostor_pairs} impostor pairs)"
            lines.append(
                f"{name}: cosine > {p.threshold:.4f}, FAR {p.far:.2e} (target {p.target_far:.0e})"
                f"{note}, TAR {p.tar:.3f}, FRR {p.frr:.3f}"
            )
        return "\n".join(lines)

    def save(self, run_dir: Path) -> Path:
        """Write verdict.json into the run directory; returns its path."""
        path = Path(run_dir) / VERDICT_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> Verdict:
        """Read verdict.json (or RUN/verdict.json when given the run directory).

        Raises:
            SearchError: the file is missing or malformed.
        """
        path = Path(path)
        if path.is_dir():
            path = path / VERDICT_FILE
        try:
            raw = json.loads(path.read_text())
            return cls(
                match=OperatingPoint(**raw["match"]),
                possible=OperatingPoint(**raw["possible"]),
                genuine_pairs=int(raw["genuine_pairs"]),
                impostor_pairs=int(raw["impostor_pairs"]),
                auc=float(raw["auc"]),
                impostor_mean=_optional_float(raw.get("impostor_mean")),
                impostor_std=_optional_float(raw.get("impostor_std")),
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SearchError(f"{path}: not a readable verdict ({e})") from e


def _optional_float(value: object) -> float | None:
    """A finite float, or None for a missing value.

    Raises:
        ValueError: present but not a finite number.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise ValueError(f"{value!r:.20} is not a finite number")
    return float(value)


def _scores(values: np.ndarray | list[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0 or not np.all(np.isfinite(array)):
        raise SearchError(f"{name} scores must be a non-empty array of finite numbers")
    return array


def impostor_threshold(impostor: np.ndarray, target_far: float) -> tuple[float, float, bool]:
    """(threshold, measured FAR, resolved): the lowest threshold with FAR <= target_far.

    FAR is the share of impostor scores strictly above the threshold; `resolved` is False when
    there are fewer than 1/target_far scores, and the threshold is then the highest of them.
    """
    ranked = np.sort(impostor)[::-1]
    allowed = int(np.floor(target_far * len(ranked)))  # impostors allowed above the threshold
    # Thresholding at the (allowed+1)-th highest impostor score lets exactly `allowed` (fewer
    # with ties) through; strict ">" keeps ties below, so FAR never exceeds the target.
    threshold = float(ranked[min(allowed, len(ranked) - 1)])
    return threshold, float(np.mean(impostor > threshold)), len(ranked) * target_far >= 1


def operating_point(genuine: np.ndarray, impostor: np.ndarray, target_far: float) -> OperatingPoint:
    """The lowest threshold whose measured FAR (impostor > threshold) is at most target_far."""
    threshold, far, resolved = impostor_threshold(impostor, target_far)
    tar = float(np.mean(genuine > threshold))
    return OperatingPoint(
        target_far=target_far,
        threshold=threshold,
        far=far,
        frr=1.0 - tar,
        tar=tar,
        resolved=resolved,
    )


def roc_points(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FAR, TAR) at every distinct threshold, from the strictest down."""
    thresholds = np.unique(np.concatenate([genuine, impostor]))[::-1]
    g, i = np.sort(genuine), np.sort(impostor)
    # Count of scores strictly above each threshold, via binary search on sorted arrays.
    tar = (len(g) - np.searchsorted(g, thresholds, side="right")) / len(g)
    far = (len(i) - np.searchsorted(i, thresholds, side="right")) / len(i)
    return np.concatenate([[0.0], far, [1.0]]), np.concatenate([[0.0], tar, [1.0]])


def calibrate_from_pairs(
    genuine: np.ndarray | list[float], impostor: np.ndarray | list[float]
) -> Verdict:
    """Choose the `match` (FAR 1e-3) and `possible` (FAR 1e-2) thresholds from validation pairs.

    Raises:
        SearchError: an empty or non-finite score array.
    """
    g = _scores(genuine, "genuine")
    i = _scores(impostor, "impostor")
    far, tar = roc_points(g, i)
    return Verdict(
        match=operating_point(g, i, MATCH_FAR),
        possible=operating_point(g, i, POSSIBLE_FAR),
        genuine_pairs=len(g),
        impostor_pairs=len(i),
        auc=float(np.trapezoid(tar, far)),
        impostor_mean=float(i.mean()),
        impostor_std=float(i.std()),
    )


def plot_roc(
    genuine: np.ndarray | list[float],
    impostor: np.ndarray | list[float],
    verdict: Verdict,
    path: Path,
) -> Path:
    """Write the ROC curve (TAR against FAR, log FAR axis) with both thresholds marked."""
    plt = pyplot()
    g, i = _scores(genuine, "genuine"), _scores(impostor, "impostor")
    far, tar = roc_points(g, i)
    floor = 0.5 / len(i)  # a FAR of 0 cannot sit on a log axis: draw it at half a pair
    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    ax.plot(np.maximum(far, floor), tar, color="tab:blue", label=f"ROC (AUC {verdict.auc:.3f})")
    for name, p, colour in (
        ("match", verdict.match, "tab:green"),
        ("possible", verdict.possible, "tab:orange"),
    ):
        ax.plot(
            max(p.far, floor),
            p.tar,
            "o",
            color=colour,
            label=f"{name}: t={p.threshold:.3f}, TAR {p.tar:.3f} @ FAR {p.far:.1e}",
        )
    ax.set_xscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false-match rate (FAR)")
    ax.set_ylabel("true-accept rate (TAR)")
    ax.set_title(f"same-coin verdict: {len(g)} genuine, {len(i)} impostor pairs", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def write_verdict(
    run_dir: Path, genuine: np.ndarray | list[float], impostor: np.ndarray | list[float]
) -> Verdict:
    """Calibrate on validation pairs and write RUN/verdict.json and RUN/roc.png (for evaluate)."""
    verdict = calibrate_from_pairs(genuine, impostor)
    verdict.save(run_dir)
    plot_roc(genuine, impostor, verdict, Path(run_dir) / ROC_FILE)
    return verdict
