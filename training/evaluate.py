"""Evaluate a trained run on its held-out coins: retrieval metrics, breakdowns, failures, report.

Test coins are every coin of the given datasets that the run neither trained nor validated on,
a coin being (collection, coin id): on a dataset the run trained on that is its held-out part;
on a collection the run never saw it is every coin (same ids in another collection are other
coins), so evaluating on a new collection needs nothing but --data.

Besides the embedding's own figures (`overall`), `outline_fusion` gives them with each query's
nearest entries re-ranked by the flan's outline too (training.fusion), its weight fitted on the
validation coins and kept in RUN/fusion.json.

Protocols:
- `catalog`: the gallery is one reference image per coin side (the catalog image, else the
  capture the plan flags as reference); every other capture of those coins is a query.
- `all`: leave-one-out retrieval over every image of the test coins.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.augment import build_augment, grey_coin, normalize
from training.cache import Preprocess, default_cache_dir
from training.checkpoint import load_checkpoint
from training.collapse import spread
from training.data import (
    ImageBank,
    Record,
    catalog_protocol,
    load_images,
    read_datasets,
    to_tensor,
)
from training.errors import DataError, SettingsError
from training.evaluate_fusion import fit_on_validation, fused_figures
from training.fusion import Fusion
from training.metrics import (
    Retrieval,
    breakdown,
    genuine_impostor,
    pooled_top1,
    retrieval_metrics,
    verification_summary,
    worst_failures,
)
from training.models.embedding import EmbeddingModel
from training.outputs import check_output_folder
from training.report import markdown_report, write_failures
from training.run_folder import check_same_size, checkpoint_folder, read_run_config, read_run_split
from training.run_state import json_safe
from training.split import CoinKey, RunSplit, by_collection
from training.verdict import write_verdict

PROTOCOLS = ("catalog", "all")
FAILURES_SHOWN = 8


@dataclass(frozen=True)
class TrainedRun:
    """What evaluation needs from a run folder: data, preprocessing, coin split and model."""

    data: list[Path]
    preprocess: Preprocess
    cache_dir: Path
    split: RunSplit
    model: EmbeddingModel

    def held_out(self, bank: ImageBank) -> list[CoinKey]:
        """Coins in bank the run neither trained nor validated on."""
        return sorted({r.coin for r in bank.records if not self.split.seen(r.coin)})

    def collections(self, bank: ImageBank) -> list[dict[str, Any]]:
        """Per collection in bank: whether the run saw it, its coins, how many are evaluated.

        A collection the run saw (some of its coins are in split.json) is evaluated on its
        held-out coins; one it never saw on all of its coins.
        """
        out = []
        for name, coins in by_collection(r.coin for r in bank.records).items():
            seen = any(self.split.has(part, c) for c in coins for part in self.split.parts)
            held = [c for c in coins if not self.split.seen(c)]
            out.append(
                {"collection": name, "seen": seen, "coins": len(coins), "held_out": len(held)}
            )
        return out


def load_run(run: Path, checkpoint: str = "best") -> TrainedRun:
    """Read RUN/config.json and RUN/split.json and load a checkpoint (default: the best).

    Raises:
        DataError: the folder is not a training run with that checkpoint.
        RunFolderError: config.json, split.json or the checkpoint is damaged, or they disagree.
    """
    folder = checkpoint_folder(run, checkpoint)
    if not (run / "config.json").exists() or not (folder / "model.json").exists():
        raise DataError(f"not a training run with a {checkpoint!r} checkpoint: {run}")
    config, raw = read_run_config(run)
    split = read_run_split(run, config.data)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_checkpoint(folder, device=device)
    check_same_size(raw, model.config, run)
    return TrainedRun(
        data=[Path(d) for d in config.data],
        # settings the config lacks were added after the run was trained (Preprocess.of_run)
        preprocess=Preprocess.of_run(raw, image_size=int(model.config["image_size"])),
        # never the config's cache_dir: a run folder must not say where this machine writes
        cache_dir=default_cache_dir(),
        split=split,
        model=model,
    )


def autocast(device: torch.device) -> Any:
    """bf16 autocast on CUDA (no loss scaling needed); full precision on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def embed(
    model: nn.Module,
    bank: ImageBank,
    positions: list[int],
    device: torch.device,
    batch_size: int = 64,
    *,
    grey: bool = False,
) -> torch.Tensor:
    """L2-normalised embeddings (float32, on the CPU) of the bank images at positions.

    With `grey`, each crop's coin is turned grey first (its masked background stays), as a
    black-and-white photo's crop looks.
    """
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(positions), batch_size):
        x = to_tensor(bank.pixels(positions[start : start + batch_size]), device)
        x = normalize(grey_coin(x) if grey else x)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device):
            out.append(model(x).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def _labels(records: list[Record]) -> dict[str, int]:
    return {v: i for i, v in enumerate(sorted({r.view for r in records}))}


def protocol_sets(
    bank: ImageBank, coins: list[CoinKey], protocol: str
) -> tuple[list[int], list[int], bool]:
    """Query positions, gallery positions, and whether the gallery is the queries (leave-one-out)."""
    position = {id(r): i for i, r in enumerate(bank.records)}
    if protocol == "catalog":
        gallery, queries = catalog_protocol(bank.records, coins)
        return [position[id(r)] for r in queries], [position[id(r)] for r in gallery], False
    if protocol == "all":
        wanted = set(coins)
        mine = [i for i, r in enumerate(bank.records) if r.coin in wanted]
        return mine, mine, True
    raise SettingsError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")


def run_protocol(
    model: EmbeddingModel, bank: ImageBank, coins: list[CoinKey], protocol: str
) -> tuple[dict[str, Any], Retrieval, list[int], list[int]]:
    """Metrics and per-query results of one protocol on the given coins.

    Besides retrieval_metrics' figures, training.collapse.spread's (None where not measurable).
    """
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
    sides = [bank.records[i].side for i in q_pos], [bank.records[i].side for i in g_pos]
    figures: dict[str, Any] = {**metrics}
    if not loo:  # every capture of a coin side answering together (a rig-captured coin)
        figures["pooled"] = pooled_top1(result, [bank.records[i].view for i in q_pos])
    figures.update(spread(result.similarity, *sides, [bank.records[i].coin for i in g_pos]))
    return figures, result, q_pos, g_pos


@torch.no_grad()
def augmented_catalog_top1(
    model: EmbeddingModel,
    bank: ImageBank,
    coins: list[CoinKey],
    *,
    preset: str = "tuned",
    copies: int = 4,
    seed: int = 0,
    batch_size: int = 64,
) -> float:
    """Top-1 when queries are augmented copies of each reference image (the poster's column)."""
    device = next(model.parameters()).device
    gallery, _ = catalog_protocol(bank.records, coins)
    position = {id(r): i for i, r in enumerate(bank.records)}
    g_pos = [position[id(r)] for r in gallery]
    g_emb = embed(model, bank, g_pos, device)
    augment = build_augment(preset)
    torch.manual_seed(seed)  # the same augmented queries for every model in a benchmark
    was_training = model.training
    model.eval()
    hits = 0
    for start in range(0, len(g_pos), batch_size):
        pixels = to_tensor(bank.pixels(g_pos[start : start + batch_size]), device)
        truth = torch.arange(start, start + len(pixels))
        for _ in range(copies):
            with autocast(device):
                q_emb = model(normalize(augment(pixels))).float().cpu()
            hits += int(((q_emb @ g_emb.T).argmax(dim=1) == truth).sum())
    model.train(was_training)
    return hits / (copies * len(g_pos))


def _write_failures(
    bank: ImageBank, result: Retrieval, q_pos: list[int], g_pos: list[int], path: Path
) -> None:
    """The worst failures as a picture: each query beside its wrong and its right match."""
    queries = [bank.records[i] for i in q_pos]
    gallery = [bank.records[i] for i in g_pos]
    failures = []
    for q, wrong, right in worst_failures(result, FAILURES_SHOWN):
        query = queries[q]
        failures.append(
            (
                (
                    bank.pixels([q_pos[q]])[0],
                    f"query {query.view}\n{query.light}, {query.turntable_deg:g}°",
                ),
                (bank.pixels([g_pos[wrong]])[0], f"wrong match\n{gallery[wrong].view}"),
                (bank.pixels([g_pos[right]])[0], f"right match\n{gallery[right].view}"),
            )
        )
    write_failures(failures, path)


def evaluate_run(
    run: Path,
    *,
    data: list[Path] | None = None,
    protocol: str = "catalog",
    cache_dir: Path | None = None,
    checkpoint: str = "best",
    strict: bool = False,
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate a run on its held-out coins; writes RUN/eval-PROTOCOL/{metrics.json, report.md, ...}.

    `report["collections"]` says, per collection, whether the run saw it and how many of its
    coins are evaluated. A cache build runs on `workers` processes (None: every core).

    Raises:
        DataError: missing run or dataset, or nothing to evaluate.
        SettingsError: unknown protocol.
    """
    if protocol not in PROTOCOLS:
        raise SettingsError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    trained = load_run(run, checkpoint)
    out = run / f"eval-{protocol}"
    check_output_folder(out, "an evaluation", lambda p: (p / "metrics.json").is_file())
    check_output_folder(run, "a training run", lambda p: True)  # verdict.json, roc.png
    model = trained.model
    roots = data or trained.data
    bank, load = load_images(
        read_datasets(roots),
        trained.preprocess,
        cache_dir or trained.cache_dir,
        strict=strict,
        workers=workers,
        progress=progress,
    )
    test_coins = trained.held_out(bank)
    metrics, result, q_pos, g_pos = run_protocol(model, bank, test_coins, protocol)
    queries = [bank.records[i] for i in q_pos]
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "run": str(run),
        "protocol": protocol,
        "checkpoint": checkpoint,
        "datasets": [str(r) for r in roots],
        "coins": len(test_coins),
        "collections": trained.collections(bank),
        "overall": metrics,
        "breakdown": {
            "light": breakdown(result, [r.light for r in queries]),
            "angle": breakdown(result, [f"{r.turntable_deg:g}°" for r in queries]),
            "side": breakdown(result, [r.side for r in queries]),
        },
        "images_skipped": len(load.skipped),
    }
    fusion = _validation_calibrations(run, trained, bank, out, report)
    report["fusion_fit"] = fusion.to_json()
    report["outline_fusion"] = fused_figures(
        bank, result, q_pos, g_pos, fusion, pooled=protocol == "catalog"
    )
    _write_failures(bank, result, q_pos, g_pos, out / "failures.png")
    (out / "metrics.json").write_text(json.dumps(json_safe(report), indent=2))
    (out / "report.md").write_text(markdown_report(report))
    return report


def _validation_calibrations(
    run: Path, trained: TrainedRun, bank: ImageBank, out: Path, report: dict[str, Any]
) -> Fusion:
    """The verdict and the outline weights, fitted on validation coins, never the test coins.

    Writes RUN/verdict.json, RUN/roc.png, RUN/fusion.json and OUT/verification_val.npz, and
    adds their summaries to `report`. Without validation coins in `bank` (a collection the run
    never saw), the outline weights its own evaluation fitted, if any, are returned.
    """
    model = trained.model
    val_coins = sorted({r.coin for r in bank.records if trained.split.has("val", r.coin)})
    if not val_coins:
        return Fusion.load(run) or Fusion(0.0, 0, None, None, "no validation coins")
    _, val_result, val_q, val_g = run_protocol(model, bank, val_coins, "catalog")
    genuine, impostor = genuine_impostor(val_result)
    np.savez_compressed(out / "verification_val.npz", genuine=genuine, impostor=impostor)
    report["verification"] = verification_summary(genuine, impostor)
    # the run's same-coin verdict (verdict.json + roc.png) is what `pipeline search` labels by
    report["verdict"] = write_verdict(run, genuine, impostor).summary()
    # the grey weight is fitted on the same queries turned grey, against the catalog's grey
    # view, as `pipeline search` routes a grey query to an index's grey view (training.index)
    device = next(model.parameters()).device
    grey_q, grey_g = (embed(model, bank, pos, device, grey=True) for pos in (val_q, val_g))
    grey = grey_q @ grey_g.T
    fusion = fit_on_validation(bank, val_result, val_q, val_g, grey.numpy())
    fusion.save(run)
    return fusion
