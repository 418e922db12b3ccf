"""Training throughput: images/s of the model step alone, the data pipeline alone, and both.

The data pipeline is what a training step reads: a batch gathered from the memory-mapped cache,
moved to the device, augmented with kornia and normalised. The model step is forward, ArcFace
loss, backward and AdamW on a batch already on the device. Their ratio says which one bounds
training (data/model > 1: the model is the bottleneck, as it should be).

Usage:
    .venv/bin/python benchmarks/train_throughput.py
    .venv/bin/python benchmarks/train_throughput.py --models resnet-tiny,resnet50 --sizes 64,224 --batch-size 16
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from training.augment import build_augment, normalize
from training.data import ImageBank, Record, to_tensor
from training.losses import LossSettings, build_loss
from training.models.embedding import build_model

N_IMAGES = 512
N_CLASSES = 64


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
    return (time.perf_counter() - start) / steps


def fake_bank(folder: Path, size: int) -> ImageBank:
    """A memory-mapped cache of random images, laid out as training.cache writes it."""
    array = np.lib.format.open_memmap(
        folder / f"bench-{size}.npy", mode="w+", dtype=np.uint8, shape=(N_IMAGES, size, size, 3)
    )
    array[:] = np.random.default_rng(0).integers(0, 256, array.shape, dtype=np.uint8)
    array.flush()
    mapped = np.load(folder / f"bench-{size}.npy", mmap_mode="r")
    records = [
        Record(
            folder, f"{i}.png", f"C{i % N_CLASSES}", "obverse", "capture", "diffuse", 0.0, i, None
        )
        for i in range(N_IMAGES)
    ]
    return ImageBank(records, [(mapped, i) for i in range(N_IMAGES)])


def model_stepper(
    name: str, size: int, batch: int, device: torch.device
) -> Callable[[torch.Tensor], None]:
    """One optimisation step (forward, ArcFace, backward, AdamW) of a fresh model on a batch."""
    model = build_model(name, embedding_dim=512, image_size=size).to(device)
    loss_fn = build_loss(LossSettings(), N_CLASSES, 512).to(device)
    opt = torch.optim.AdamW([*model.parameters(), *loss_fn.parameters()], lr=1e-4)
    labels = torch.randint(0, N_CLASSES, (batch,), device=device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def step(x: torch.Tensor) -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            emb = model(x)
        loss = loss_fn(emb.float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _chain(produce: Callable[[], torch.Tensor], consume: Callable[[torch.Tensor], None]) -> None:
    consume(produce())


def main() -> None:
    """Print images/s per model and size, and the data/model ratio."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="resnet-tiny,resnet18,resnet50-truncated")
    parser.add_argument("--sizes", default="64,224", help="demo size and full size")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--aug", default="tuned")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rng = np.random.default_rng(0)
    augment = build_augment(args.aug)
    b = args.batch_size
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, batch {b}, augmentation {args.aug}"
    )
    print(
        f"{'model':<22}{'size':>5}{'data img/s':>12}{'model img/s':>13}{'train img/s':>13}{'data/model':>12}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            bank = fake_bank(Path(tmp), size)

            def data_step(bank: ImageBank = bank) -> torch.Tensor:
                x = to_tensor(bank.pixels(rng.integers(0, N_IMAGES, b).tolist()), device)
                with torch.no_grad():
                    return normalize(augment(x))

            data_s = timed(data_step, args.steps * 3, args.warmup, device)
            fixed = data_step()
            for name in args.models.split(","):
                step = model_stepper(name, size, b, device)
                model_s = timed(functools.partial(step, fixed), args.steps, args.warmup, device)
                train_s = timed(functools.partial(_chain, data_step, step), args.steps, 0, device)
                print(
                    f"{name:<22}{size:>5}{b / data_s:>12.0f}{b / model_s:>13.1f}{b / train_s:>13.1f}{model_s / data_s:>12.1f}"
                )


if __name__ == "__main__":
    main()
