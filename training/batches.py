"""Training batches: drawn, gathered, moved to the device, augmented; ahead in a background thread.

A batch is made in four steps: draw (which images: the balanced sampler and the cut-out-alone
coin flips, both numpy generators), gather (copy their uint8 pixels out of the memory-mapped
cache, into pinned host memory on a GPU), move (one non-blocking uint8 copy to the device,
converted to float there) and finish (kornia augmentation on the device, ImageNet
normalisation, channels-last on a GPU). `BatchSource.next` does all four in the caller's thread:
the serial pipeline. `Prefetcher` does them in a background thread, `depth` batches ahead, so
they overlap the model step; on a GPU on a CUDA stream of its own, joined to the training
stream by an event.

Same seed, same batches: the producer draws batches in the same order from the same generators
as the serial pipeline, and the serial and the prefetched runs train to bit-identical weights
(tests/test_prefetch.py). Augmentation draws from torch's global generators, which the model
step may share (dropout, ConvNeXt's stochastic depth): two threads drawing from one generator
would interleave by chance. So the first batch is made in the caller's thread, and at the second
the prefetcher looks whether the model step drew from torch's generators; if it did, the
background thread only draws, gathers and moves, and augmentation stays in the caller's thread,
in the serial order.

CPU threads: a background thread competes with torch's intra-op threads for the cores. It runs
torch on `data_threads` intra-op threads of its own (torch keeps the count per thread), and
while it runs the training thread leaves it those cores: the model step gets at most the other
cores (restored on close). On two cores the model alone already keeps both busy and
augmentation is about a fifth of the work, so a third thread only slowed the model's two
(resnet-tiny at 64 px: 0.67 of the model-alone rate, no faster than the serial pipeline); one
core each kept 0.96-0.98 of the one-thread model's rate and beat the serial pipeline on both
(benchmarks/train_throughput.py). Augmentation runs on `data_threads` threads wherever it runs,
the serial pipeline included (a mean over two threads can differ in the last bit from one over
one); the model's arithmetic follows its own thread count, so a serial run equals a prefetched
one to the bit at the thread count the prefetcher leaves the model.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from training.augment import normalize
from training.data import BalancedSampler, ImageBank, Split, training_records
from training.errors import SettingsError

# How long the producer waits on a full queue before it looks whether it should stop.
_POLL_S = 0.05
# How long close() waits for the producer to notice (it finishes the batch in hand first).
_JOIN_S = 30.0


@dataclass(frozen=True)
class TrainingSet:
    """The images trained on: bank positions, one class per coin side (view), pose membership."""

    positions: list[int]  # into the bank
    views: list[str]  # class index → view
    labels: list[int]  # class of each training image
    in_pose: list[bool]  # whether each training image is a frame of a turntable pose


def training_set(bank: ImageBank, split: Split, train_on: str, where: str) -> TrainingSet:
    """The training images of the split's training coins, under the --train-on regime.

    Raises:
        SettingsError: the regime leaves no training image.
    """
    train_set = {id(r) for r in training_records(bank.records, split.train, train_on)}
    positions = [i for i, r in enumerate(bank.records) if id(r) in train_set]
    if not positions:
        raise SettingsError(f"no training images for --train-on {train_on} in {where}")
    views = sorted({bank.records[i].view for i in positions})
    class_of = {v: i for i, v in enumerate(views)}
    return TrainingSet(
        positions=positions,
        views=views,
        labels=[class_of[bank.records[i].view] for i in positions],
        in_pose=[bank.records[i].pose is not None for i in positions],
    )


@dataclass(frozen=True)
class Draw:
    """Which images make one batch: bank positions, cut out alone or not, class labels."""

    positions: list[int]
    alone: list[bool]
    labels: list[int]


@dataclass
class _Slot:
    """A pinned host buffer a batch is gathered into, and the copy that still reads it."""

    pixels: torch.Tensor  # pinned uint8 B×S×S×3
    copied: torch.cuda.Event | None = None


@dataclass
class BatchSource:
    """Balanced batches of training images, augmented and on the device: the serial pipeline."""

    bank: ImageBank
    data: TrainingSet
    sampler: BalancedSampler
    coin_flips: np.random.Generator  # draws which captures are shown cut out alone
    single_photo_p: float
    augment: Callable[[torch.Tensor], torch.Tensor]
    device: torch.device
    # torch intra-op threads augmentation runs on (CPU; None: the calling thread's): the same
    # count in every thread keeps the serial and the prefetched batches equal to the bit
    threads: int | None = None
    _slots: list[_Slot] = field(default_factory=list)
    _turn: int = 0

    def draw(self) -> Draw:
        """The next batch's images (numpy generators only: no torch randomness)."""
        batch = self.sampler.next_batch()
        in_pose, positions = self.data.in_pose, self.data.positions
        alone = [in_pose[i] and self.coin_flips.random() < self.single_photo_p for i in batch]
        return Draw([positions[i] for i in batch], alone, [self.data.labels[i] for i in batch])

    def move(self, draw: Draw) -> tuple[torch.Tensor, torch.Tensor]:
        """Gather a draw's pixels and move them to the device: float B×3×H×W in [0, 1], labels.

        On a GPU the pixels are gathered into a pinned buffer (a ring of them, each reused once
        the copy that read it is done) and cross the bus as uint8, on the calling thread's
        current stream; the conversion to float runs on the GPU.
        """
        labels = torch.tensor(draw.labels)
        if self.device.type != "cuda":
            pixels = torch.from_numpy(self.bank.pixels(draw.positions, draw.alone))
            return pixels.permute(0, 3, 1, 2).float().div_(255), labels
        slot = self._slot(len(draw.positions))
        staged = slot.pixels[: len(draw.positions)]
        self.bank.pixels(draw.positions, draw.alone, out=staged.numpy())
        x = staged.to(self.device, non_blocking=True)
        y = labels.pin_memory().to(self.device, non_blocking=True)
        slot.copied = torch.cuda.Event()
        slot.copied.record()
        return x.permute(0, 3, 1, 2).float().div_(255), y

    def _slot(self, rows: int) -> _Slot:
        """The next pinned buffer of the ring, once the copy that last read it has finished."""
        if not self._slots or self._slots[0].pixels.shape[0] < rows:
            shape = (rows, *self.bank.pixels([0]).shape[1:])
            # one per batch waiting in the queue, one being copied, one being gathered
            self._slots = [
                _Slot(torch.empty(shape, dtype=torch.uint8, pin_memory=True)) for _ in range(4)
            ]
        slot = self._slots[self._turn % len(self._slots)]
        self._turn += 1
        if slot.copied is not None:
            slot.copied.synchronize()
        return slot

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """Augment and normalise a moved batch (channels-last on a GPU)."""
        threads = self.threads if self.device.type != "cuda" else None
        with torch.no_grad(), intra_op_threads(threads):
            x = normalize(self.augment(x))
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch, made now in this thread: normalised augmented images, class labels."""
        x, y = self.move(self.draw())
        return self.finish(x), y

    def close(self) -> None:
        """Nothing to stop (the same interface as Prefetcher)."""


def cpus() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """Run the block on `threads` torch intra-op threads (None: as it is), then restore.

    A reduction's result can depend on how many threads share it (augmentation's means differ
    in the last bit between one and two threads at 96 px and above).
    """
    before = torch.get_num_threads()
    if threads is None or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def rng_state(device: torch.device) -> list[torch.Tensor]:
    """The state of torch's generators a batch or a model step may draw from on `device`."""
    states = [torch.random.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


@dataclass(frozen=True)
class _Ready:
    """A batch made by the producer: images (augmented or not), labels, the event to wait on."""

    x: torch.Tensor
    y: torch.Tensor
    augmented: bool
    done: torch.cuda.Event | None


@dataclass(frozen=True)
class _Failed:
    """What the producer raised, handed to the consumer to raise."""

    error: BaseException


class Prefetcher:
    """Batches of a BatchSource made `depth` ahead in a background thread, in the same order.

    Use as a context manager (or call close()): the thread is stopped and joined on the way out.
    """

    def __init__(self, source: BatchSource, depth: int = 2, data_threads: int = 1):
        """Prefetch from `source`; the producer runs torch on `data_threads` intra-op threads."""
        if depth < 1:
            raise SettingsError(f"--prefetch must be at least 1 to prefetch, got {depth}")
        self.source = source
        self.depth = depth
        self.data_threads = data_threads
        source.threads = data_threads  # batches augmented in this thread too (see finish)
        # None until the second batch: whether augmentation runs in the background thread
        self.augments: bool | None = None
        self._after_first: list[torch.Tensor] | None = None
        self._queue: queue.Queue[_Ready | _Failed] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed: BaseException | None = None
        self._model_threads: int | None = None  # the training thread's count, to restore

    @property
    def device(self) -> torch.device:
        """Where the batches are."""
        return self.source.device

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch: normalised augmented images and their class labels, on the device.

        Raises:
            RuntimeError: the prefetcher was closed.
            Exception: whatever making a batch raised in the background thread (then again on
                every later call: the thread has ended).
        """
        if self._stop.is_set():
            raise RuntimeError("the prefetcher is closed")
        if self._failed is not None:
            raise self._failed
        if self._thread is None:
            if self._after_first is None:
                batch = self.source.next()  # made here: the model step has not run yet
                self._after_first = rng_state(self.source.device)
                return batch
            # Did the step after the first batch draw from torch's generators? Then augmenting
            # in the background would interleave the two threads' draws by chance.
            drew = any(
                not torch.equal(a, b)
                for a, b in zip(rng_state(self.source.device), self._after_first, strict=True)
            )
            self._start(augment=not drew)
        item = self._queue.get()
        if isinstance(item, _Failed):
            self._failed = item.error
            raise item.error
        x, y = item.x, item.y
        if item.done is not None:
            stream = torch.cuda.current_stream(self.source.device)
            stream.wait_event(item.done)
            # the producer's stream allocated them: tell the allocator this stream uses them
            x.record_stream(stream)
            y.record_stream(stream)
        return (x, y) if item.augmented else (self.source.finish(x), y)

    def _start(self, *, augment: bool) -> None:
        """Start the producer thread, leaving it its cores (on a CPU)."""
        self.augments = augment
        if self.source.device.type != "cuda":
            self._model_threads = torch.get_num_threads()
            torch.set_num_threads(min(self._model_threads, max(1, cpus() - self.data_threads)))
        self._thread = threading.Thread(
            target=self._produce, args=(augment,), name="batch-prefetch", daemon=True
        )
        self._thread.start()

    def _produce(self, augment: bool) -> None:
        """The producer thread: make batches until stopped; a failure is handed on, then ends."""
        torch.set_num_threads(self.data_threads)
        cuda = self.source.device.type == "cuda"
        if cuda:  # the current device is per thread: this one's is cuda:0 until told
            torch.cuda.set_device(self.source.device)
        stream = torch.cuda.Stream(self.source.device) if cuda else None
        try:
            while not self._stop.is_set():
                with torch.cuda.stream(stream) if stream is not None else nullcontext():
                    x, y = self.source.move(self.source.draw())
                    if augment:
                        x = self.source.finish(x)
                    done = None
                    if stream is not None:
                        done = torch.cuda.Event()
                        done.record(stream)
                self._put(_Ready(x, y, augment, done))
        except BaseException as e:  # handed to the training thread, which raises it
            self._put(_Failed(e))

    def _put(self, item: _Ready | _Failed) -> None:
        """Queue `item`, waiting while the queue is full unless asked to stop."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Stop the producer and wait for it; batches made ahead are dropped."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=_JOIN_S)
            self._thread = None
            # The producer's set_num_threads also set the count threads started later inherit;
            # put back this thread's own as it was before the producer started.
            if self._model_threads is not None:
                torch.set_num_threads(self._model_threads)
            else:
                torch.set_num_threads(torch.get_num_threads())


def make_batches(source: BatchSource, prefetch: int, data_threads: int) -> BatchSource | Prefetcher:
    """The serial pipeline when `prefetch` is 0, else a Prefetcher that many batches ahead.

    Either way augmentation runs on `data_threads` intra-op threads, so both give the same bits.
    """
    source.threads = data_threads
    return source if prefetch == 0 else Prefetcher(source, prefetch, data_threads)
