"""Embed catalog coins into an index and search photos against it, with a same-coin verdict.

Both sides use the same preprocessing as training: find the coin, crop a tight square, resize
to the run's image_size, ImageNet-normalise. The index records which run (config and a hash of
the weights) made its embeddings; searching re-loads exactly that run, because similarities
between two models' embeddings mean nothing. A search labels by the stricter of the run's
verdict and the index's own calibration, and says when a query is unlike the run's validation
photos (training/index_calibration.py, docs/verdict.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.augment import grey_coin, normalize
from training.cache import Preprocess
from training.catalog import Source, already_indexed, find_sources, read_meta_csv
from training.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_checkpoint, read_checkpoint_meta
from training.coinfind import BACKGROUND_RGB
from training.detect import Coin
from training.fusion import RERANK_DEPTH, Fusion, fused_scores, looks_grey
from training.index import INFO_FILE, CatalogIndex, Hit
from training.index_calibration import (
    Bars,
    DomainCheck,
    IndexCalibration,
    calibration_rows,
    combine,
    domain_check,
)
from training.models.embedding import EmbeddingModel
from training.outline import OUTLINE_BINS, outline_distances
from training.outputs import check_output_folder
from training.parallel import ordered_map, progress_bar, resolve_workers
from training.run_folder import check_same_size, checkpoint_folder, read_preprocess_settings
from training.search_errors import IndexStoreError, SearchError
from training.search_prep import (
    PreparedQuery,
    crop_detected,
    prepare_image,
    prepare_photo,
    prepare_source,
)
from training.verdict import NO_MATCH_TEXT, VERDICT_FILE, Verdict

EMBED_BATCH = 32


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
        # a bare checkpoint folder records no training settings: crop as runs before masking did
        config = read_preprocess_settings(self.run)
        check_same_size(config, self.model.config, self.run)
        return Preprocess.of_run(config, image_size=self.image_size)

    def crop(self, image: np.ndarray, coin: Coin) -> np.ndarray:
        """The coin cropped exactly as the run's training preprocessed it (search_prep)."""
        return crop_detected(image, coin, self.preprocess)


def load_run_model(run: Path, checkpoint: str = "best") -> RunModel:
    """Load RUN/checkpoints/CHECKPOINT (or a bare checkpoint folder) for embedding.

    Raises:
        SearchError: no such run or checkpoint.
        RunFolderError: the checkpoint or the run's config.json is damaged, or they disagree.
    """
    folder = checkpoint_folder(run, checkpoint)
    if not (folder / CONFIG_FILE).is_file() and (run / CONFIG_FILE).is_file():
        folder = run  # a checkpoint folder given directly
    if not (folder / CONFIG_FILE).is_file():
        raise SearchError(f"not a training run with a {checkpoint!r} checkpoint: {run}")
    meta = read_checkpoint_meta(folder)
    model = load_checkpoint(folder)
    sha = hashlib.sha256((folder / WEIGHTS_FILE).read_bytes()).hexdigest()
    identity = {
        "run": str(run.resolve()),
        "checkpoint": checkpoint,
        "config": meta["config"],
        "weights_sha256": sha,
    }
    loaded = RunModel(model.eval(), identity, run)
    _ = loaded.preprocess  # read config.json now: a damaged one fails before any image is read
    return loaded


@torch.no_grad()
def embed_crops(
    model: EmbeddingModel, crops: Sequence[np.ndarray], *, grey: bool = False
) -> np.ndarray:
    """L2-normalised float32 N×D embeddings of uint8 H×W×3 crops already at the model's size.

    With `grey`, each crop's coin is turned grey first: the index's grey view.
    """
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(crops), EMBED_BATCH):
        batch = np.stack(crops[start : start + EMBED_BATCH])
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).to(device).float().div_(255)
        out.append(model(normalize(grey_coin(x) if grey else x)).float().cpu().numpy())
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
    calibration: IndexCalibration | None = None
    # The index's typical cosine against the run's validation (None: the run kept no reference)
    domain: DomainCheck | None = None


def index_folder(
    run_model: RunModel,
    images: Path,
    out: Path,
    *,
    meta_csv: Path | None = None,
    kind: str | None = None,
    warn: Callable[[str], None] = lambda _: None,
    workers: int | None = None,
    progress: bool = False,
) -> IndexReport:
    """Embed the coins of every not-yet-indexed image under `images` into the index at `out`.

    An existing index is extended (its embeddings are kept, not recomputed); `kind` (auto,
    flat, hnsw, ivf) changes its faiss structure, None keeps it. Pictures are read and cropped
    on `workers` processes (None: every core, one for a few pictures); the index is the same
    whatever the count.

    Raises:
        SearchError: bad folder or CSV, an index from another model, or nothing indexable.
    """
    check_output_folder(out, "a catalog index", lambda p: (p / INFO_FILE).is_file())
    verdict = run_verdict(run_model.run)  # read first: a damaged one fails before any work
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
    todo = [source for source in sources if not already_indexed(source, index)]
    report.already = len(sources) - len(todo)
    if len(index) and not index.has_grey:
        warn(
            f"{out} has no grey view (built before grey views were kept): grey photos search "
            "its colour view; build a new index to give them one"
        )
    embedded = _embed_sources(run_model, todo, report, warn, workers, progress)
    embeddings, grey, items, outlines = embedded
    if items:
        index.add(embeddings, items, outlines, grey)
    report.added = len(items)
    report.total = len(index)
    if not len(index):
        raise SearchError(f"no coin could be indexed from {images} ({len(report.problems)} failed)")
    index.save(out)
    report.calibration = index.calibration
    if report.calibration.typical_cosine is not None:
        report.domain = domain_check(report.calibration.typical_cosine, verdict)
    return report


def run_verdict(run: Path) -> Verdict | None:
    """RUN/verdict.json when `pipeline evaluate` wrote one, else None.

    Raises:
        SearchError: the file exists but is not a verdict.
    """
    return Verdict.load(run) if (run / VERDICT_FILE).is_file() else None


# Pictures below this many are read here: a pool's start-up would cost more than it saves.
PARALLEL_FROM = 16
# Crops embedded at a time while indexing: memory stays bounded however large the catalog.
EMBED_CHUNK = 32 * EMBED_BATCH


def pool_size(workers: int | None, tasks: int) -> int:
    """Processes for `tasks` pictures: `workers`, else every core unless the job is small."""
    return 1 if workers is None and tasks < PARALLEL_FROM else resolve_workers(workers)


def _embed_sources(
    run_model: RunModel,
    sources: Sequence[Source],
    report: IndexReport,
    warn: Callable[[str], None],
    workers: int | None,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]], np.ndarray]:
    """Embeddings, grey views, items and outlines of every coin of `sources`; bad ones reported.

    Crops are embedded in whole EMBED_BATCH batches as they arrive, the batches falling where
    one embed_crops call over all of them would put them, so the embeddings are identical.
    """
    tasks = [(source, run_model.preprocess) for source in sources]
    out: list[np.ndarray] = []
    grey: list[np.ndarray] = []
    items: list[dict[str, Any]] = []
    outlines: list[np.ndarray] = []
    crops: list[np.ndarray] = []
    results = closing(ordered_map(prepare_source, tasks, pool_size(workers, len(tasks))))
    with progress_bar(len(tasks), "indexing", progress) as advance, results as done:
        for prepared in done:
            advance(1)
            if prepared.problem is not None:  # unreadable, too large, no coin: this file only
                report.problems.append(prepared.problem)
                warn(f"skipped: {prepared.problem}")
                continue
            items.extend(e.item() for e in prepared.entries)
            outlines.extend(prepared.outlines)
            crops.extend(prepared.crops)
            if len(crops) >= EMBED_CHUNK:
                whole = len(crops) - len(crops) % EMBED_BATCH
                out.append(embed_crops(run_model.model, crops[:whole]))
                grey.append(embed_crops(run_model.model, crops[:whole], grey=True))
                crops = crops[whole:]
    out.append(embed_crops(run_model.model, crops))
    grey.append(embed_crops(run_model.model, crops, grey=True))
    stacked = np.stack(outlines) if outlines else np.zeros((0, OUTLINE_BINS), np.float32)
    return np.concatenate(out), np.concatenate(grey), items, stacked


# -- searching ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A ranked catalog coin with its similarity and same-coin label."""

    rank: int
    score: float  # cosine similarity: what the verdict's thresholds are on
    label: str
    item: dict[str, Any]
    outline_distance: float | None = None  # None: an outline unknown, or re-ranking off


@dataclass
class QueryResult:
    """The candidates for one coin of one query photo, and what they amount to."""

    photo: str
    coin_number: int
    coin: Coin
    crop: np.ndarray  # PREVIEW_PX square, for contact sheets
    candidates: list[Candidate]
    bars: Bars | None = None  # the thresholds the labels came from (None: uncalibrated)
    domain: DomainCheck | None = None  # None: the run kept no validation reference

    @property
    def conclusion(self) -> str:
        """`match: ID`, `possible: ID`, `no catalog coin matches`, or uncalibrated."""
        if not self.candidates:
            return NO_MATCH_TEXT
        best = self.candidates[0]
        if best.label in ("match", "possible"):
            return f"{best.label}: {best.item['id']}"
        if best.label == "n/a":
            return (
                f"uncalibrated (no {VERDICT_FILE}, too few indexed coins to calibrate): "
                f"nearest {best.item['id']}"
            )
        return NO_MATCH_TEXT

    def to_json(self) -> dict[str, Any]:
        """JSON-able form for `pipeline search --json`."""
        return {
            "photo": self.photo,
            "coin": self.coin_number,
            "circle": [round(self.coin.x, 1), round(self.coin.y, 1), round(self.coin.r, 1)],
            "conclusion": self.conclusion,
            "thresholds": None if self.bars is None else self.bars.to_json(),
            "out_of_domain": None if self.domain is None else self.domain.to_json(),
            "candidates": [
                {
                    "rank": c.rank,
                    "score": round(c.score, 5),
                    "label": c.label,
                    "outline_distance": None
                    if c.outline_distance is None
                    else round(c.outline_distance, 5),
                    **c.item,
                }
                for c in self.candidates
            ],
        }


@dataclass
class Searcher:
    """An opened index with its run's model and verdict, ready for photos."""

    index: CatalogIndex
    run_model: RunModel
    verdict: Verdict | None
    fusion: Fusion | None = None  # the run's outline weight (RUN/fusion.json), if evaluated

    @classmethod
    def open(cls, index_dir: Path) -> Searcher:
        """Open an index and load the model (and verdict.json, when calibrated) of its run.

        Raises:
            SearchError: missing index, missing run, or a run whose weights changed since.
        """
        index = CatalogIndex.load(index_dir)
        recorded = index.model
        run, checkpoint = recorded.get("run"), recorded.get("checkpoint", "best")
        if not (isinstance(run, str) and Path(run).is_absolute() and isinstance(checkpoint, str)):
            raise IndexStoreError(f"{index_dir / INFO_FILE}: no run recorded for its model")
        run_model = load_run_model(Path(run), checkpoint)
        index.check_model(run_model.identity)
        return cls(index, run_model, run_verdict(Path(run)), Fusion.load(Path(run)))

    @property
    def bars(self) -> Bars | None:
        """The stricter of the run's and the index's thresholds (None: neither exists)."""
        return combine(self.verdict, self.index.calibration)

    def bars_for(self, grey: bool) -> Bars | None:
        """The bars of the view a query searches: the grey view's own impostors for grey ones."""
        return combine(self.verdict, self.index.calibration_for(grey))

    @cached_property
    def reference(self) -> np.ndarray:
        """The indexed coins a query's typical similarity is measured on (a sample if many)."""
        return self._reference(grey=False)

    @cached_property
    def grey_reference(self) -> np.ndarray:
        """The same coins in the grey view, for grey queries."""
        return self._reference(grey=True)

    def _reference(self, *, grey: bool) -> np.ndarray:
        rows = calibration_rows(len(self.index))
        return np.asarray(self.index.view(grey)[rows], dtype=np.float32)

    def label(
        self, hit: Hit, bars: Bars | None = None, outline_distance: float | None = None
    ) -> Candidate:
        """A hit with its verdict label (`n/a` when neither run nor index is calibrated)."""
        bars = self.bars if bars is None else bars
        label = bars.label(hit.score) if bars else "n/a"
        return Candidate(hit.rank, hit.score, label, hit.item, outline_distance)

    def rerank(
        self, hits: list[Hit], outline: np.ndarray, top: int, *, grey: bool = False
    ) -> list[Candidate]:
        """The best `top` of a query's hits by cosine and outline together, labelled.

        Without a fitted weight (no RUN/fusion.json, or weight 0) the cosine order stands; a
        grey query takes the weight fitted for grey queries, and the grey view's bars.
        """
        bars = self.bars_for(grey)
        weight = self.fusion.weight_for(grey) if self.fusion is not None else 0.0
        if not hits:
            return []
        rows = [h.row for h in hits]
        distance = outline_distances(outline[None], self.index.outlines[rows])
        scores = fused_scores(np.array([[h.score for h in hits]]), distance, weight, len(hits))
        order = np.argsort(-scores[0], kind="stable")[:top]
        return [
            replace(
                self.label(hits[i], bars, None if np.isnan(d := distance[0, i]) else float(d)),
                rank=rank,
            )
            for rank, i in enumerate(order, 1)
        ]

    def domain(self, embeddings: np.ndarray, *, grey: bool = False) -> list[DomainCheck | None]:
        """Each query's median cosine to the indexed coins, held against the run's validation."""
        reference = self.grey_reference if grey else self.reference
        if not len(reference):
            return [None for _ in embeddings]
        medians = np.median(embeddings @ reference.T, axis=1)
        return [domain_check(float(m), self.verdict) for m in medians]

    def search_image(self, image: np.ndarray, name: str, top: int = 5) -> list[QueryResult]:
        """Candidates for every coin found in an RGB image.

        Raises:
            NoCoinFound: nothing in the image looks like a coin.
        """
        return self._rank(prepare_image(image, name, self.run_model.preprocess), top)

    def _rank(self, query: PreparedQuery, top: int) -> list[QueryResult]:
        """Embed a prepared photo's coins and rank the catalog for each.

        A coin without colour searches the index's grey view (training.index), where there is
        one, with that view's bars and the grey outline weight.
        """
        embeddings = embed_crops(self.run_model.model, query.crops)
        results = []
        for n, (coin, preview, outline, crop, embedding) in enumerate(
            zip(query.coins, query.previews, query.outlines, query.crops, embeddings, strict=True),
            1,
        ):
            grey = looks_grey(crop, BACKGROUND_RGB)
            # the outline re-ranks the cosine's RERANK_DEPTH nearest (training.fusion)
            found = self.index.search(embedding[None], max(top, RERANK_DEPTH), grey=grey)[0]
            ranked = self.rerank(found, outline, top, grey=grey)
            domain = self.domain(embedding[None], grey=grey and self.index.has_grey)[0]
            results.append(
                QueryResult(query.name, n, coin, preview, ranked, self.bars_for(grey), domain)
            )
        return results

    def search_photo(self, photo: Path, top: int = 5) -> list[QueryResult]:
        """Candidates for every coin in a photo file.

        Raises:
            SearchError: unreadable file (ImageReadError) or no coin in it (NoCoinFound).
        """
        return self.search_photos([photo], top)

    def search_photos(
        self,
        photos: Sequence[Path],
        top: int = 5,
        *,
        workers: int | None = None,
        progress: bool = False,
    ) -> list[QueryResult]:
        """Candidates for every coin of every photo, in photo order.

        Photos are read and cropped on `workers` processes (None: every core, one for a few
        photos); the first photo that fails, in photo order, raises as with one worker.

        Raises:
            SearchError: an unreadable photo (ImageReadError) or one without a coin.
        """
        tasks = [(photo, self.run_model.preprocess) for photo in photos]
        results: list[QueryResult] = []
        prepared = closing(ordered_map(prepare_photo, tasks, pool_size(workers, len(tasks))))
        with progress_bar(len(tasks), "searching", progress) as advance, prepared as done:
            for query in done:
                if isinstance(query, SearchError):
                    raise query
                results.extend(self._rank(query, top))
                advance(1)
        return results
