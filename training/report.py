"""Files a person reads after a run: curves, failure gallery, Markdown reports."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np


def pyplot() -> ModuleType:
    """matplotlib.pyplot on the Agg backend, imported when a figure is drawn.

    Not at module level: pyplot adds ~0.7 s to every `pipeline` command's start-up.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines; must precede pyplot's import
    import matplotlib.pyplot as plt

    return plt


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl file (a torn last line from a killed run is skipped)."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def write_curves(metrics_path: Path, png_path: Path) -> None:
    """Loss per logged step and validation top-1 per epoch, side by side."""
    rows = _read_jsonl(metrics_path) if metrics_path.exists() else []
    steps = [r for r in rows if r.get("kind") == "step"]
    epochs = [r for r in rows if r.get("kind") == "epoch"]
    plt = pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=1, label="step")
    ax_loss.plot(
        [r["step"] for r in epochs], [r["train_loss"] for r in epochs], "o-", label="epoch mean"
    )
    ax_loss.set(xlabel="step", ylabel="training loss", title="Loss")
    ax_loss.legend()
    with_val = [r for r in epochs if r.get("val")]
    ax_acc.plot(
        [r["epoch"] for r in with_val], [r["val"]["top1"] for r in with_val], "o-", label="top-1"
    )
    ax_acc.plot(
        [r["epoch"] for r in with_val], [r["val"]["top5"] for r in with_val], "s--", label="top-5"
    )
    ax_acc.set(
        xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02), title="Validation (catalog protocol)"
    )
    ax_acc.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def write_failures(
    rows: Sequence[tuple[tuple[np.ndarray, str], tuple[np.ndarray, str], tuple[np.ndarray, str]]],
    png_path: Path,
) -> None:
    """A grid with one failure per row: query, wrong match, right match, each with a title."""
    if not rows:
        return
    plt = pyplot()
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.6 * len(rows)), squeeze=False)
    for row, ax_row in zip(rows, axes, strict=True):
        for ax, (image, title) in zip(ax_row, row, strict=True):
            ax.imshow(image)
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def markdown_report(metrics: dict[str, Any]) -> str:
    """A short Markdown summary of an evaluation's metrics.json."""
    overall = metrics["overall"]
    lines = [
        f"# Evaluation: {metrics['run']}",
        "",
        f"Protocol `{metrics['protocol']}` on {metrics['coins']} held-out coins: "
        f"{overall['queries']} queries against {overall['gallery']} gallery images "
        f"(checkpoint `{metrics['checkpoint']}`).",
        "",
        "| metric | value |",
        "| --- | --- |",
    ]
    for key in ("top1", "top5", "precision_at_1", "map_at_r", "r_precision"):
        lines.append(f"| {key} | {_percent(overall[key])} |")
    if "pooled" in overall:
        pooled = overall["pooled"]
        lines.append(
            f"| top1, each coin side's captures searched together ({pooled['queries']} sides) "
            f"| {_percent(pooled['top1'])} |"
        )
    for name, groups in metrics["breakdown"].items():
        lines += [
            "",
            f"## By {name}",
            "",
            "| value | queries | top-1 | top-5 |",
            "| --- | --- | --- | --- |",
        ]
        for value, row in groups.items():
            lines.append(
                f"| {value} | {row['queries']} | {_percent(row['top1'])} | {_percent(row['top5'])} |"
            )
    fused = metrics.get("outline_fusion")
    if fused and fused["weight"] > 0:
        lines += [
            "",
            "## With the flan's outline (training.fusion)",
            "",
            f"Each query's {fused['rerank_depth']} nearest entries re-ranked by cosine minus "
            f"{fused['weight']:.3g} × outline distance (weight fitted on validation coins): "
            f"top-1 {_percent(fused['top1'])}, top-5 {_percent(fused['top5'])}"
            + (
                f", each coin side's captures together {_percent(fused['pooled']['top1'])}"
                if "pooled" in fused
                else ""
            )
            + f"; {fused['queries_without_outline']} queries without a usable outline.",
        ]
    verification = metrics.get("verification")
    if verification:
        lines += [
            "",
            "## Verification (validation pairs, cosine similarity)",
            "",
            f"genuine {verification['genuine_mean']:.3f} ± {verification['genuine_std']:.3f} "
            f"({verification['genuine_pairs']} pairs), impostor {verification['impostor_mean']:.3f} ± "
            f"{verification['impostor_std']:.3f} ({verification['impostor_pairs']} pairs), "
            f"EER {_percent(verification['eer'])} at {verification['eer_threshold']:.3f}.",
        ]
    lines += ["", "Worst failures: `failures.png`.", ""]
    return "\n".join(lines)
