"""Evaluate a trained run on its held-out coins: retrieval metrics, breakdowns, failures, report.

Test coins are every coin of the given datasets that the run neither trained nor validated on,
so evaluating on a new dataset of unseen coins needs nothing but --data.

Protocols:
- `catalog`: the gallery is one reference image per coin side (the catalog image, else the
  capture the plan flags as reference); every other capture of those coins is a query.
- `all`: leave-one-out retrieval over every image of the test coins.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.augment import build_augment, normalize
from training.checkpoint import load_checkpoint
from training.data import ImageBank, Record, catalog_protocol, load_images, read_datasets, to_tensor
from training.errors import DataError, SettingsError
from training.metrics import (
    Retrieval,
    breakdown,
    genuine_impostor,
    retrieval_metrics,
    verification_summary,
    worst_failures,
)
from training.models.embedding import EmbeddingModel
from training.report import markdown_report, write_failures
from training.train import TrainConfig, autocast, embed

PROTOCOLS = ("catalog", "all")
FAILURES_SHOWN = 8


def load_run(
    run: Path, checkpoint: str = "best"
) -> tuple[TrainConfig, dict[str, list[str]], EmbeddingModel]:
    """The run's config, split and model (from checkpoints/best, or another checkpoint folder).

    Raises:
        DataError: the folder is not a finished or checkpointed run.
    """
    folder = run / "checkpoints" / checkpoint
    if not (run / "config.json").exists() or not (folder / "model.json").exists():
        raise DataError(f"not a training run with a {checkpoint!r} checkpoint: {run}")
    cfg = TrainConfig.from_json(json.loads((run / "config.json").read_text()))
    split = json.loads((run / "split.json").read_text())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return cfg, split, load_checkpoint(folder, device=device)


def _labels(records: list[Record]) -> dict[str, int]:
    return {v: i for i, v in enumerate(sorted({r.view for r in records}))}


def protocol_sets(
    bank: ImageBank, coins: list[str], protocol: str
) -> tuple[list[int], list[int], bool]:
    """Query positions, gallery positions, and whether the gallery is the queries (leave-one-out)."""
    position = {id(r): i for i, r in enumerate(bank.records)}
    if protocol == "catalog":
        gallery, queries = catalog_protocol(bank.records, coins)
        return [position[id(r)] for r in queries], [position[id(r)] for r in gallery], False
    if protocol == "all":
        wanted = set(coins)
        mine = [i for i, r in enumerate(bank.records) if r.coin_id in wanted]
        return mine, mine, True
    raise SettingsError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")


def run_protocol(
    model: EmbeddingModel, bank: ImageBank, coins: list[str], protocol: str
) -> tuple[dict[str, float], Retrieval, list[int], list[int]]:
    """Metrics and per-query results of one protocol on the given coins."""
    device = next(model.parameters()).device
    q_pos, g_pos, loo = protocol_sets(bank, coins, protocol)
    if not q_pos or not g_pos:
        raise DataError(f"no {protocol}-protocol queries among {len(coins)} held-out coins")
    label = _labels([bank.records[i] for i in g_pos])
    q_emb = embed(model, bank, q_pos, device)
    g_emb = q_emb if loo else embed(model, bank, g_pos, device)
    metrics, result = retrieval_metrics(
        q_emb,
        [label.get(bank.records[i].view, -1) for i in q_pos],
        g_emb,
        [label[bank.records[i].view] for i in g_pos],
        leave_one_out=loo,
    )
    return metrics, result, q_pos, g_pos


@torch.no_grad()
def augmented_catalog_top1(
    model: EmbeddingModel,
    bank: ImageBank,
    coins: list[str],
    *,
    preset: str = "tuned",
    copies: int = 4,
    seed: int = 0,
) -> float:
    """Top-1 when queries are augmented copies of each reference image (the poster's column)."""
    device = next(model.parameters()).device
    gallery, _ = catalog_protocol(bank.records, coins)
    position = {id(r): i for i, r in enumerate(bank.records)}
    g_pos = [position[id(r)] for r in gallery]
    g_emb = embed(model, bank, g_pos, device)
    augment = build_augment(preset)
    torch.manual_seed(seed)  # the same augmented queries for every model in a benchmark
    model.eval()
    hits = 0
    pixels = to_tensor(bank.pixels(g_pos), device)
    for _ in range(copies):
        with autocast(device):
            q_emb = model(normalize(augment(pixels))).float().cpu()
        nearest = (q_emb @ g_emb.T).argmax(dim=1)
        hits += int((nearest == torch.arange(len(g_pos))).sum())
    return hits / (copies * len(g_pos))


def evaluate_run(
    run: Path,
    *,
    data: list[Path] | None = None,
    protocol: str = "catalog",
    cache_dir: Path | None = None,
    checkpoint: str = "best",
    strict: bool = False,
) -> dict[str, Any]:
    """Evaluate a run on its held-out coins; writes RUN/eval-PROTOCOL/{metrics.json, report.md, ...}.

    Raises:
        DataError: missing run or dataset, or nothing to evaluate.
        SettingsError: unknown protocol.
    """
    if protocol not in PROTOCOLS:
        raise SettingsError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    cfg, split, model = load_run(run, checkpoint)
    roots = data or [Path(d) for d in cfg.data]
    records = read_datasets(roots)
    bank, load = load_images(
        records, cfg.preprocess(), cache_dir or cfg.cache_path(), strict=strict
    )
    seen = set(split["train"]) | set(split["val"])
    test_coins = sorted({r.coin_id for r in bank.records} - seen)
    metrics, result, q_pos, g_pos = run_protocol(model, bank, test_coins, protocol)
    queries = [bank.records[i] for i in q_pos]
    out = run / f"eval-{protocol}"
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "run": str(run),
        "protocol": protocol,
        "checkpoint": checkpoint,
        "datasets": [str(r) for r in roots],
        "coins": len(test_coins),
        "overall": metrics,
        "breakdown": {
            "light": breakdown(result, [r.light for r in queries]),
            "angle": breakdown(result, [f"{r.turntable_deg:g}°" for r in queries]),
            "side": breakdown(result, [r.side for r in queries]),
        },
        "images_skipped": len(load.skipped),
    }
    val_coins = sorted(set(split["val"]) & {r.coin_id for r in bank.records})
    if val_coins:
        # Verification thresholds must be chosen on validation pairs, never on the test coins.
        _, val_result, _, _ = run_protocol(model, bank, val_coins, "catalog")
        genuine, impostor = genuine_impostor(val_result)
        np.savez_compressed(out / "verification_val.npz", genuine=genuine, impostor=impostor)
        report["verification"] = verification_summary(genuine, impostor)
    gallery = [bank.records[i] for i in g_pos]
    failures = []
    for q, wrong, right in worst_failures(result, FAILURES_SHOWN):
        caption = f"{queries[q].file_name} → {gallery[wrong].view} (right: {gallery[right].view})"
        failures.append(
            (*(bank.pixels([i])[0] for i in (q_pos[q], g_pos[wrong], g_pos[right])), caption)
        )
    write_failures(failures, out / "failures.png")
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown_report(report))
    return report
