"""Training throughput: images/s of the data pipeline alone, the model step alone, and both.

The data pipeline is what a training step reads (training.batches.BatchSource): a balanced
batch drawn, gathered from a memory-mapped cache (into pinned memory on a GPU), moved to the
device, augmented with kornia and normalised. The model step is forward, ArcFace loss, backward
and AdamW on a batch already on the device. A training step is both: `train` makes the batch
ahead in a background thread (training.batches.Prefetcher, as `pipeline train` does), `serial`
between steps (--prefetch 0). `train/model` is the share of the model-alone rate a training
step keeps: at least 0.9 wherever the data alone is faster than the model (`data/model` > 1).
On a CPU the prefetcher leaves its thread a core, so `model` is the model alone on the threads
left to it and `model all` the model alone on every thread (as `serial` runs). `--rounds N`
reports medians of N rounds, for a shared machine.

Usage:
    .venv/bin/python benchmarks/train_throughput.py
    .venv/bin/python benchmarks/train_throughput.py --models resnet-tiny --sizes 64 \
        --batch-size 32 --steps 20
    python3 benchmarks/train_throughput.py \
        --models resnet50,resnet50-truncated,convnext-tiny,resnet18 \
        --sizes 224 --batch-size 128 --json table.json          # on a GPU
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from training.augment import build_augment
from training.batches import BatchSource, Prefetcher, TrainingSet, intra_op_threads
from training.data import BalancedSampler, ImageBank, Record
from training.evaluate import autocast
from training.losses import LossSettings, build_loss
from training.models.embedding import build_model
from training.train_config import TrainConfig

N_IMAGES = 512
N_CLASSES = 64

Batch = tuple[torch.Tensor, torch.Tensor]


def timed(step: Callable[[], object], steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of step, after warm-up calls (compilation, allocator, caches)."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()  # queued kernels would otherwise land in the timed window
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / max(1, steps)


def fake_bank(folder: Path, size: int) -> ImageBank:
    """A memory-mapped cache of random images, laid out as training.cache writes it."""
    path = folder / f"bench-{size}.npy"
    array = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.uint8, shape=(N_IMAGES, size, size, 3)
    )
    array[:] = np.random.default_rng(0).integers(0, 256, array.shape, dtype=np.uint8)
    array.flush()
    mapped = np.load(path, mmap_mode="r")
    records = [
        Record(
            folder, f"{i}.png", f"C{i % N_CLASSES}", "obverse", "catalog", "diffuse", 0.0, i, None
        )
        for i in range(N_IMAGES)
    ]
    return ImageBank(records, [(mapped, i) for i in range(N_IMAGES)])


def batch_source(
    bank: ImageBank, batch: int, aug: str, device: torch.device, threads: int
) -> BatchSource:
    """The training data pipeline over `bank`: one class per fake coin, two images per class.

    Augmentation runs on `threads` intra-op threads, as in the background thread.
    """
    labels = [i % N_CLASSES for i in range(N_IMAGES)]
    data = TrainingSet(
        list(range(N_IMAGES)), [f"C{c}" for c in range(N_CLASSES)], labels, [False] * N_IMAGES
    )
    sampler = BalancedSampler(labels, batch, 2, seed=0)
    return BatchSource(
        bank, data, sampler, np.random.default_rng(0), 0.0, build_augment(aug), device, threads
    )


def model_stepper(
    name: str, size: int, device: torch.device, *, compile_model: bool = False
) -> Callable[[Batch], None]:
    """One optimisation step (forward, ArcFace, backward, AdamW) of a fresh model on a batch."""
    model = build_model(name, embedding_dim=512, image_size=size).to(device)
    loss_fn = build_loss(LossSettings(), N_CLASSES, 512).to(device)
    opt = torch.optim.AdamW([*model.parameters(), *loss_fn.parameters()], lr=1e-4)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    forward = torch.compile(model) if compile_model else model

    def step(batch: Batch) -> None:
        x, y = batch
        with autocast(device):
            emb = forward(x)
        loss = loss_fn(emb.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def measure(
    name: str,
    size: int,
    bank: ImageBank,
    args: argparse.Namespace,
    device: torch.device,
    *,
    compile_model: bool,
) -> dict[str, float | str | int]:
    """Images/s of data alone, model alone, the prefetched and the serial training step.

    On a CPU the prefetcher leaves its thread a core: `model` is the model step alone on the
    threads the training step's model gets, `model_all` on every thread, as is `serial` (what
    --prefetch 0 runs). Each of `args.rounds` rounds times them back to back, and each figure is
    the median over the rounds (the ratios too, per round): on a shared machine the load
    changes between rounds far more than within one.
    """
    b = args.batch_size
    source = batch_source(bank, b, args.aug, device, args.data_threads)
    step = model_stepper(name, size, device, compile_model=compile_model)
    fixed = source.next()
    every = torch.get_num_threads()
    times: dict[str, list[float]] = {}
    with Prefetcher(
        batch_source(bank, b, args.aug, device, args.data_threads),
        args.prefetch,
        args.data_threads,
    ) as ahead:
        # the background thread starts at the second batch
        timed(lambda: step(ahead.next()), 0, max(2, args.warmup), device)
        model_threads = torch.get_num_threads()
        for r in range(args.rounds):
            warmup = args.warmup if r == 0 else 0
            for key, run in (
                ("data", source.next),
                ("model", lambda: step(fixed)),
                ("train", lambda: step(ahead.next())),
            ):
                times.setdefault(key, []).append(timed(run, args.steps, warmup, device))
            with intra_op_threads(every):
                for key, run in (
                    ("model_all", lambda: step(fixed)),
                    ("serial", lambda: step(source.next())),
                ):
                    times.setdefault(key, []).append(timed(run, args.steps, warmup, device))
    row: dict[str, float | str | int] = {
        "model": name + (" compiled" if compile_model else ""),
        "size": size,
        "batch": b,
        "model_threads": model_threads,
        **{
            ("model_step" if k == "model" else k): b / float(np.median(v)) for k, v in times.items()
        },
    }
    for ratio, (top, bottom) in {
        "train_over_model": ("model", "train"),
        "train_over_model_all": ("model_all", "train"),
        "data_over_model": ("model", "data"),
    }.items():
        row[ratio] = float(
            np.median([t / u for t, u in zip(times[top], times[bottom], strict=True)])
        )
    return row


def main() -> None:
    """Print images/s per model and size, and the ratios."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="resnet-tiny,resnet18,resnet50-truncated")
    parser.add_argument("--sizes", default="64,224", help="demo size and full size")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="median of this many rounds")
    parser.add_argument("--aug", default="tuned")
    parser.add_argument("--prefetch", type=int, default=TrainConfig.prefetch)
    parser.add_argument("--data-threads", type=int, default=TrainConfig.data_threads)
    parser.add_argument("--threads", type=int, default=0, help="model's torch threads (0: as is)")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model")
    parser.add_argument("--compiled", default="", help="models measured compiled too (a row each)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(
        f"device {device}, torch threads {torch.get_num_threads()} (data thread "
        f"{args.data_threads}), batch {args.batch_size}, augmentation {args.aug}, prefetch "
        f"{args.prefetch}{', compiled' if args.compile else ''}"
    )
    header = ["model", "size", "data", "model", "train", "train/model"]
    header += ["model all", "serial", "data/model"]
    print(f"{header[0]:<28}{header[1]:>5}" + "".join(f"{h:>12}" for h in header[2:]))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            bank = fake_bank(Path(tmp), size)
            runs = [(name, args.compile) for name in args.models.split(",")]
            runs += [(name, True) for name in args.compiled.split(",") if name]
            for name, compile_model in runs:
                row = measure(name, size, bank, args, device, compile_model=compile_model)
                rows.append(row)
                print(
                    f"{row['model']:<28}{size:>5}{row['data']:>12.0f}{row['model_step']:>12.1f}"
                    f"{row['train']:>12.1f}{row['train_over_model']:>12.2f}"
                    f"{row['model_all']:>12.1f}{row['serial']:>12.1f}"
                    f"{row['data_over_model']:>12.1f}",
                    flush=True,
                )
    if args.json:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        table = {"device": str(device), "device_name": name, "rows": rows}
        args.json.write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
