"""Embed catalog coins into an index and search photos against it, with a same-coin verdict.

Both sides use the same preprocessing as training: find the coin, crop a tight square, resize
to the run's image_size, ImageNet-normalise. The index records which run (config and a hash of
the weights) made its embeddings; searching re-loads exactly that run, because similarities
between two models' embeddings mean nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.augment import normalize
from training.cache import Preprocess, crop_photo
from training.catalog import Entry, already_indexed, find_sources, load_entries, read_meta_csv
from training.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_checkpoint, read_checkpoint_meta
from training.coinfind import Circle
from training.detect import Coin, crop, detect_coins
from training.imageio import load_rgb
from training.index import INFO_FILE, CatalogIndex, Hit
from training.models.embedding import EmbeddingModel
from training.search_errors import NoCoinFound, SearchError
from training.verdict import NO_MATCH_TEXT, VERDICT_FILE, Verdict

EMBED_BATCH = 32
# Side of the query crop kept for contact sheets: the model-size crop is often only 64 px.
PREVIEW_PX = 160


@dataclass
class RunModel:
    """A trained model with the identity recorded in indexes it builds."""

    model: EmbeddingModel
    identity: dict[str, Any]
    run: Path

    @property
    def image_size(self) -> int:
        """Square input side the model was trained at."""
        return int(self.model.config["image_size"])

    @cached_property
    def preprocess(self) -> Preprocess:
        """How the run's training turned photos into model inputs (size, margin, masking)."""
        config_path = self.run / "config.json"
        # a bare checkpoint folder records no training settings: crop as runs before masking did
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        return Preprocess.of_run(config, image_size=self.image_size)

    def crop(self, image: np.ndarray, coin: Coin) -> np.ndarray:
        """The coin cropped exactly as the run's training preprocessed it (margin, masking).

        A query must look like what the model learned from: the same margin around the flan and,
        for masked runs, the same flat colour outside its outline, whatever the photo's background.
        """
        return crop_photo(image, Circle(coin.x, coin.y, coin.r, coin.method), self.preprocess)


def load_run_model(run: Path, checkpoint: str = "best") -> RunModel:
    """Load RUN/checkpoints/CHECKPOINT (or a bare checkpoint folder) for embedding.

    Raises:
        SearchError: no such run or checkpoint.
    """
    folder = run / "checkpoints" / checkpoint
    if not (folder / CONFIG_FILE).is_file() and (run / CONFIG_FILE).is_file():
        folder = run  # a checkpoint folder given directly
    if not (folder / CONFIG_FILE).is_file():
        raise SearchError(f"not a training run with a {checkpoint!r} checkpoint: {run}")
    try:
        meta = read_checkpoint_meta(folder)
        model = load_checkpoint(folder)
    except (OSError, ValueError, RuntimeError) as e:
        raise SearchError(f"cannot load the model in {folder}: {e}") from e
    sha = hashlib.sha256((folder / WEIGHTS_FILE).read_bytes()).hexdigest()
    identity = {
        "run": str(run.resolve()),
        "checkpoint": checkpoint,
        "config": meta["config"],
        "weights_sha256": sha,
    }
    return RunModel(model.eval(), identity, run)


@torch.no_grad()
def embed_crops(model: EmbeddingModel, crops: Sequence[np.ndarray]) -> np.ndarray:
    """L2-normalised float32 N×D embeddings of uint8 H×W×3 crops already at the model's size."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(crops), EMBED_BATCH):
        batch = np.stack(crops[start : start + EMBED_BATCH])
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).to(device).float().div_(255)
        out.append(model(normalize(x)).float().cpu().numpy())
    dim = int(model.config["embedding_dim"])
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


# -- building an index --------------------------------------------------------------------


@dataclass
class IndexReport:
    """What one `pipeline index` run did."""

    added: int = 0
    already: int = 0
    total: int = 0
    problems: list[str] = field(default_factory=list)


def index_folder(
    run_model: RunModel,
    images: Path,
    out: Path,
    *,
    meta_csv: Path | None = None,
    kind: str | None = None,
    warn: Callable[[str], None] = lambda _: None,
) -> IndexReport:
    """Embed the coins of every not-yet-indexed image under `images` into the index at `out`.

    An existing index is extended (its embeddings are kept, not recomputed); `kind` (auto,
    flat, hnsw, ivf) changes its faiss structure, None keeps it.

    Raises:
        SearchError: bad folder or CSV, an index from another model, or nothing indexable.
    """
    meta = read_meta_csv(meta_csv) if meta_csv else None
    sources = find_sources(images, meta)
    if (out / INFO_FILE).exists():
        index = CatalogIndex.load(out)
        index.check_model(run_model.identity)
        if kind is not None and kind != index.kind:
            index.set_kind(kind)
    else:
        dim = int(run_model.model.config["embedding_dim"])
        index = CatalogIndex(dim=dim, model=run_model.identity, kind=kind or "auto")
    report = IndexReport()
    entries: list[Entry] = []
    crops: list[np.ndarray] = []
    for source in sources:
        if already_indexed(source, index):
            report.already += 1
            continue
        try:
            image, found = load_entries(source)
        except SearchError as e:
            report.problems.append(str(e))
            warn(f"skipped: {e}")
            continue
        entries.extend(found)
        crops.extend(run_model.crop(image, e.coin) for e in found)
    if entries:
        index.add(embed_crops(run_model.model, crops), [e.item() for e in entries])
    report.added = len(entries)
    report.total = len(index)
    if not len(index):
        raise SearchError(f"no coin could be indexed from {images} ({len(report.problems)} failed)")
    index.save(out)
    return report


# -- searching ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A ranked catalog coin with its similarity and same-coin label."""

    rank: int
    score: float
    label: str
    item: dict[str, Any]


@dataclass
class QueryResult:
    """The candidates for one coin of one query photo, and what they amount to."""

    photo: str
    coin_number: int
    coin: Coin
    crop: np.ndarray  # PREVIEW_PX square, for contact sheets
    candidates: list[Candidate]

    @property
    def conclusion(self) -> str:
        """`match: ID`, `possible: ID`, `no catalog coin matches`, or uncalibrated."""
        if not self.candidates:
            return NO_MATCH_TEXT
        best = self.candidates[0]
        if best.label in ("match", "possible"):
            return f"{best.label}: {best.item['id']}"
        if best.label == "n/a":
            return f"uncalibrated (no {VERDICT_FILE}): nearest {best.item['id']}"
        return NO_MATCH_TEXT

    def to_json(self) -> dict[str, Any]:
        """JSON-able form for `pipeline search --json`."""
        return {
            "photo": self.photo,
            "coin": self.coin_number,
            "circle": [round(self.coin.x, 1), round(self.coin.y, 1), round(self.coin.r, 1)],
            "conclusion": self.conclusion,
            "candidates": [
                {"rank": c.rank, "score": round(c.score, 5), "label": c.label, **c.item}
                for c in self.candidates
            ],
        }


@dataclass
class Searcher:
    """An opened index with its run's model and verdict, ready for photos."""

    index: CatalogIndex
    run_model: RunModel
    verdict: Verdict | None

    @classmethod
    def open(cls, index_dir: Path) -> Searcher:
        """Open an index and load the model (and verdict.json, when calibrated) of its run.

        Raises:
            SearchError: missing index, missing run, or a run whose weights changed since.
        """
        index = CatalogIndex.load(index_dir)
        recorded = index.model
        run = Path(str(recorded.get("run", "")))
        run_model = load_run_model(run, str(recorded.get("checkpoint", "best")))
        index.check_model(run_model.identity)
        verdict = Verdict.load(run) if (run / VERDICT_FILE).is_file() else None
        return cls(index, run_model, verdict)

    def label(self, hit: Hit) -> Candidate:
        """A hit with its verdict label (`n/a` without a calibrated verdict)."""
        label = self.verdict.label(hit.score) if self.verdict else "n/a"
        return Candidate(hit.rank, hit.score, label, hit.item)

    def search_image(self, image: np.ndarray, name: str, top: int = 5) -> list[QueryResult]:
        """Candidates for every coin found in an RGB image.

        Raises:
            NoCoinFound: nothing in the image looks like a coin.
        """
        coins = detect_coins(image)
        if not coins:
            raise NoCoinFound(f"{name}: no coin found in the photo")
        crops = [self.run_model.crop(image, c) for c in coins]
        hits = self.index.search(embed_crops(self.run_model.model, crops), top)
        return [
            QueryResult(
                name, n, coin, crop(image, coin, PREVIEW_PX), [self.label(h) for h in found]
            )
            for n, (coin, found) in enumerate(zip(coins, hits, strict=True), 1)
        ]

    def search_photo(self, photo: Path, top: int = 5) -> list[QueryResult]:
        """Candidates for every coin in a photo file.

        Raises:
            SearchError: unreadable file (ImageReadError) or no coin in it (NoCoinFound).
        """
        return self.search_image(load_rgb(photo), str(photo), top)
