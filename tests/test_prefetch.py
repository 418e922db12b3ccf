"""The background batch pipeline (training.batches): same batches as the serial one, overlapped.

Bit-identity is checked end to end (two short `train` runs, prefetch on and off: equal weights
and metrics) and batch by batch, including a model step that draws from torch's generator
itself (then augmentation must stay in the training thread). Overlap is shown without a clock:
the producer is seen making the next batch while the training thread still holds the last.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from synthetic_dataset import Spec, write_dataset

from training import batches, segmenter
from training.augment import build_augment
from training.batches import BatchSource, Prefetcher, TrainingSet, make_batches
from training.data import BalancedSampler, ImageBank, Record
from training.train import train
from training.train_config import TrainConfig

N, SIZE, CLASSES = 48, 16, 12


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread: None) -> Iterator[None]:
    """Serial and prefetched runs on one intra-op thread each: the same arithmetic."""
    yield


def _bank(tmp_path: Path) -> ImageBank:
    pixels = np.random.default_rng(1).integers(0, 256, (N, SIZE, SIZE, 3), dtype=np.uint8)
    alone = 255 - pixels
    records = [
        Record(tmp_path, f"{i}.png", f"C{i % CLASSES}", "obverse", "capture", "d", 0.0, i, None)
        for i in range(N)
    ]
    return ImageBank(records, [(pixels, i) for i in range(N)], [alone] * N)


def _source(
    bank: ImageBank, augment: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> BatchSource:
    labels = [i % CLASSES for i in range(N)]
    data = TrainingSet(list(range(N)), [f"C{c}" for c in range(CLASSES)], labels, [True] * N)
    return BatchSource(
        bank,
        data,
        BalancedSampler(labels, 8, 2, seed=3),
        np.random.default_rng(3),
        0.5,  # half the captures cut out alone: the coin flips are part of the order too
        augment if augment is not None else build_augment("tuned"),
        torch.device("cpu"),
    )


def _batches(
    batches: BatchSource | Prefetcher, steps: int, step: Callable[[], object]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for _ in range(steps):
        out.append(batches.next())
        step()  # what the model step would draw
    batches.close()
    return out


@pytest.mark.parametrize("model_draws", [False, True], ids=["plain-step", "step-draws"])
def test_prefetched_batches_equal_the_serial_ones(tmp_path: Path, model_draws: bool) -> None:
    bank = _bank(tmp_path)

    def step() -> None:
        if model_draws:  # dropout, stochastic depth: the step shares torch's generator
            torch.rand(7)

    torch.manual_seed(5)
    serial = _batches(_source(bank), 6, step)
    torch.manual_seed(5)
    ahead = Prefetcher(_source(bank), depth=2)
    prefetched = _batches(ahead, 6, step)
    assert ahead.augments is (not model_draws)
    for (xs, ys), (xp, yp) in zip(serial, prefetched, strict=True):
        assert torch.equal(xs, xp) and torch.equal(ys, yp)


def test_serial_and_prefetched_batches_agree_whatever_the_model_threads(tmp_path: Path) -> None:
    # At 96 px augmentation's means differ in the last bit between one thread and two: both
    # pipelines must augment on the data thread count, not on the model's.
    pixels = np.random.default_rng(2).integers(0, 256, (N, 96, 96, 3), dtype=np.uint8)
    records = _bank(tmp_path).records
    bank = ImageBank(records, [(pixels, i) for i in range(N)])
    torch.set_num_threads(2)  # the model's threads (the fixture puts back one)
    torch.manual_seed(5)
    serial = make_batches(_source(bank), 0, data_threads=1)
    first = _batches(serial, 3, lambda: None)
    torch.manual_seed(5)
    second = _batches(make_batches(_source(bank), 2, data_threads=1), 3, lambda: None)
    assert torch.get_num_threads() == 2
    for (xs, ys), (xp, yp) in zip(first, second, strict=True):
        assert torch.equal(xs, xp) and torch.equal(ys, yp)


def test_the_producer_makes_the_next_batch_while_the_step_runs(tmp_path: Path) -> None:
    started = threading.Semaphore(0)
    made = 0

    def augment(x: torch.Tensor) -> torch.Tensor:
        nonlocal made
        made += 1
        started.release()
        return x

    with Prefetcher(_source(_bank(tmp_path), augment), depth=2) as ahead:
        ahead.next()  # the first batch, made in this thread
        ahead.next()  # starts the producer
        # Still "inside the step" of batch 2, batches 3 and 4 get made: the queue holds two.
        for _ in range(4):
            assert started.acquire(timeout=10), "the producer did not work during the step"
    assert made >= 4


def test_a_producer_failure_reaches_the_training_thread(tmp_path: Path) -> None:
    calls = 0

    def augment(x: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("augmentation broke")
        return x

    with Prefetcher(_source(_bank(tmp_path), augment), depth=2) as ahead:
        ahead.next()
        ahead.next()
        with pytest.raises(RuntimeError, match="augmentation broke"):
            ahead.next()
        with pytest.raises(RuntimeError, match="augmentation broke"):  # not a wait forever
            ahead.next()
    with pytest.raises(RuntimeError, match="closed"):
        ahead.next()


def test_closing_a_full_prefetcher_stops_its_thread(tmp_path: Path) -> None:
    ahead = Prefetcher(_source(_bank(tmp_path)), depth=1)
    ahead.next()
    ahead.next()
    threads = torch.get_num_threads()
    ahead.close()  # the producer waits on a full queue: it must notice and end
    assert not any(t.name == "batch-prefetch" for t in threading.enumerate())
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize(("cores", "during"), [(2, 1), (8, 2)])
def test_on_a_cpu_the_producer_gets_its_own_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cores: int, during: int
) -> None:
    monkeypatch.setattr(batches, "cpus", lambda: cores)
    torch.set_num_threads(2)  # the fixture puts back one
    with Prefetcher(_source(_bank(tmp_path)), depth=1, data_threads=1) as ahead:
        ahead.next()
        assert torch.get_num_threads() == 2  # the first batch: no producer yet
        ahead.next()
        assert torch.get_num_threads() == during  # never more than the model had
    assert torch.get_num_threads() == 2


def test_make_batches_is_serial_at_zero(tmp_path: Path) -> None:
    source = _source(_bank(tmp_path))
    assert make_batches(source, 0, 1) is source
    made = make_batches(source, 3, 1)
    assert isinstance(made, Prefetcher) and made.depth == 3


def test_gathering_into_a_buffer_equals_stacking(tmp_path: Path) -> None:
    bank = _bank(tmp_path)
    rows, alone = [5, 0, 5, 47], [False, True, True, False]
    out = np.zeros((6, SIZE, SIZE, 3), np.uint8)
    got = bank.pixels(rows, alone, out=out[:4])
    assert np.array_equal(got, bank.pixels(rows, alone))
    assert not out[4:].any()


def _run(tmp_path: Path, data: Path, name: str, prefetch: int, **extra: object) -> Path:
    settings: dict[str, object] = dict(
        model="resnet-tiny", image_size=32, embedding_dim=32, epochs=2, batch_size=8,
        steps_per_epoch=4, rotations=1, split="0.6,0.2,0.2", single_photo_p=0.5,
    )  # fmt: skip
    workers = extra.pop("workers", None)
    settings.update(extra)
    cfg = TrainConfig(
        data=[str(data)], out=str(tmp_path / name), cache_dir=str(tmp_path / "cache"),
        prefetch=prefetch, **settings,  # type: ignore[arg-type]
    )  # fmt: skip
    train(cfg, show_progress=False, workers=workers)  # type: ignore[arg-type]
    return tmp_path / name


def _epochs(run: Path) -> list[dict[str, object]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    timing = {"seconds", "val_seconds", "images_per_s"}
    return [{k: v for k, v in r.items() if k not in timing} for r in rows]


def test_training_with_prefetch_equals_training_without(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "ds", Spec(n_coins=6, size=32, angles=(0.0, 180.0)))
    serial = _run(tmp_path, data, "serial", prefetch=0)
    ahead = _run(tmp_path, data, "ahead", prefetch=2)
    assert _epochs(serial) == _epochs(ahead)
    for part in ("model.safetensors", "loss.safetensors"):
        a = load_file(str(serial / "checkpoints" / "last" / part))
        b = load_file(str(ahead / "checkpoints" / "last" / part))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), part


def test_a_run_that_builds_its_cache_trains_what_a_run_reading_it_trains(tmp_path: Path) -> None:
    """The same command and seed give the same weights whether or not the cache was built."""
    data = write_dataset(tmp_path / "ds", Spec(n_coins=6, size=32, angles=(0.0, 180.0)))
    segmenter._shipped.cache_clear()  # its first construction draws from torch's generator
    torch.manual_seed(12345)  # whatever came before the run must not matter either
    built = _run(tmp_path, data, "built", prefetch=0, workers=1)
    read = _run(tmp_path, data, "read", prefetch=0, workers=1)
    for part in ("model.safetensors", "loss.safetensors"):
        a = load_file(str(built / "checkpoints" / "last" / part))
        b = load_file(str(read / "checkpoints" / "last" / part))
        assert all(torch.equal(a[k], b[k]) for k in a), part


def test_validation_every_n_epochs_and_after_the_last(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "ds", Spec(n_coins=6, size=32, angles=(0.0, 180.0)))
    run = _run(tmp_path, data, "run", prefetch=2, epochs=3, val_every=2)
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    validated = [r["epoch"] for r in epochs if r["kind"] == "epoch" and r["val"] is not None]
    assert validated == [2, 3]
    assert all("val_seconds" in r for r in epochs if r["kind"] == "epoch")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] in (2, 3)
    # validation draws nothing from training's generators: the weights trained are the same
    every = _run(tmp_path, data, "every", prefetch=2, epochs=3, val_every=1)
    for part in ("model.safetensors", "loss.safetensors"):
        a = load_file(str(run / "checkpoints" / "last" / part))
        b = load_file(str(every / "checkpoints" / "last" / part))
        assert all(torch.equal(a[k], b[k]) for k in a), part
