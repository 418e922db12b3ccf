"""Confusion-matrix heat maps of the hierarchy's rows (cross-validation and evaluation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

_LABEL_CHARS = 32  # longest tick label that stays legible beside a dozen others


def short_label(label: str, limit: int = _LABEL_CHARS) -> str:
    """`label` cut to `limit` characters in the middle, so a class's ruler (its end) stays."""
    if len(label) <= limit:
        return label
    head = (limit - 1) // 2
    return f"{label[:head]}…{label[len(label) - (limit - 1 - head) :]}"


def write_confusion_png(path: Path, summary: dict[str, Any], title: str) -> None:
    """Row-normalised confusion matrix as a PNG heat map with class names."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    confusion = np.asarray(summary["confusion"], float)
    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    labels = [short_label(str(label)) for label in summary["labels"]]
    side = max(4.5, 2.5 + 0.5 * len(labels))
    figure = Figure(figsize=(side + 1.5, side + 0.5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    shown = ax.imshow(rows, vmin=0, vmax=1, cmap="Blues")
    if len(labels) <= 12:  # counts stay legible up to a dozen classes
        for (i, j), count in np.ndenumerate(confusion):
            colour = "white" if rows[i, j] > 0.6 else "black"
            ax.text(j, i, f"{count:.0f}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(
        f"{title}\nbalanced accuracy {100 * summary['balanced_accuracy']:.1f}%", fontsize=9
    )
    figure.colorbar(shown, ax=ax, fraction=0.046)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(str(path), dpi=110)
