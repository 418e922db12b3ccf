r"""Twin pretraining: a model pretrained on a twin collection, then fine-tuned.

One command runs the whole comparison (docs/pretraining.md) and prints its table:

1. two twin collections with `rig simulate --direct` (the twin's frames, no emulated rig): a
   large one to pretrain on and a held-out one to evaluate on, of other seeds (other coins,
   other dies and designs: nothing of the evaluation collection is ever seen in pretraining);
2. `--model` (default resnet50-truncated) pretrained on the large one (every coin trains, no
   validation);
3. for each split seed of the held-out collection: the model fine-tuned from the
   pretrained run (`pipeline train --init RUN`), the same model from scratch, and
   `--baseline-model` (resnet-tiny) from scratch, each trained on the same training coins and
   scored on the same test coins with the catalog protocol (one catalog image per test coin
   side as the gallery, every capture of those coins a query);
4. top-1 per model: mean and spread over the split seeds.

    .venv/bin/python benchmarks/pretrain_finetune.py --out /tmp/pretrain        # CPU scale
    .venv/bin/python benchmarks/pretrain_finetune.py --gpu-scale --out runs/pretrain

Finished steps are kept in --out (datasets, runs, results.json), so a rerun goes on where one
stopped. The CPU scale is the one docs/pretraining.md measured: 300 pretraining coins (600
coin sides, few enough that each class is pulled ~80 times in 3,000 steps of 32), models at
48 px, 600 steps on the held-out collection; about 1.5 hours of one core. --gpu-scale is the
full-size recipe: 5,000 pretraining coins at 128 px, 30 epochs of pretraining and 8 of
fine-tuning at batch 128 (any flag given after it still wins).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from training.data import load_images, read_datasets
from training.evaluate import load_run, run_protocol
from training.losses import LossSettings
from training.train import train
from training.train_config import TrainConfig

RIG = Path(sys.executable).with_name("rig")
# --gpu-scale: the settings of the full-size run (flags given on the command line still win)
GPU_SCALE = {
    "pretrain_coins": 5000,
    "pretrain_types": 60,
    "eval_coins": 200,
    "render_size": 160,
    "image_size": 128,
    "batch_size": 128,
    "pretrain_epochs": 30,
    "pretrain_steps": None,  # a whole epoch of the pretraining collection
    "epochs": 8,
    "steps": None,
    "threads": 0,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; --gpu-scale fills in the full-size settings flags did not give."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/pretrain-finetune"))
    p.add_argument("--model", default="resnet50-truncated", help="pretrained, fine-tuned, scratch")
    p.add_argument("--baseline-model", default="resnet-tiny", help="from scratch, for reference")
    p.add_argument("--gpu-scale", action="store_true", help="the full-size recipe (one GPU)")
    p.add_argument("--pretrain-coins", type=int, default=300)
    p.add_argument("--pretrain-types", type=int, default=24)
    p.add_argument("--pretrain-seed", type=int, default=1000)
    p.add_argument("--eval-coins", type=int, default=120)
    p.add_argument("--eval-seed", type=int, default=7)
    p.add_argument("--render-size", type=int, default=512, help="px of the twin's frames")
    p.add_argument("--image-size", type=int, default=48, help="px the models see")
    p.add_argument("--embedding-dim", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--pretrain-epochs", type=int, default=10)
    p.add_argument("--pretrain-steps", type=int, default=300, help="per pretraining epoch")
    p.add_argument("--pretrain-lr", type=float, default=3e-3)
    p.add_argument("--pretrain-scale", type=float, default=16.0, help="ArcFace scale")
    p.add_argument("--epochs", type=int, default=10, help="fine-tuning and scratch epochs")
    p.add_argument("--steps", type=int, default=60, help="steps per epoch (--gpu-scale: one pass)")
    p.add_argument("--lr", type=float, default=3e-3, help="from scratch")
    p.add_argument("--finetune-lr", type=float, default=1e-3)
    p.add_argument("--seeds", default="0,1,2", help="split seeds of the held-out collection")
    p.add_argument("--split", default="0.6,0.1,0.3")
    p.add_argument("--rotations", type=int, default=8, help="evaluation rotation pooling")
    p.add_argument("--workers", type=int, default=0, help="rig simulate --workers")
    p.add_argument(
        "--shared-reverses", type=float, default=None, help="rig simulate's (default: its own)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's choice)")
    args = p.parse_args(argv)
    if args.gpu_scale:
        given = {a.lstrip("-").replace("-", "_") for a in (argv or sys.argv[1:]) if a[:2] == "--"}
        for key, value in GPU_SCALE.items():
            if key not in given:
                setattr(args, key, value)
    return args


def simulate(out: Path, coins: int, types: int, seed: int, args: argparse.Namespace) -> float:
    """A twin collection straight from the twin (`rig simulate --direct`); its seconds.

    A collection this benchmark finished before (every coin in coins.jsonl) is kept as it is,
    even if the twin has changed since: it is the data the kept runs were trained on.
    """
    started = time.perf_counter()
    listed = out / "coins.jsonl"
    if listed.is_file() and len(listed.read_text().splitlines()) == coins:
        return 0.0
    command = [str(RIG), "simulate", "--direct", "--coins", str(coins), "--types", str(types)]
    command += ["--seed", str(seed), "--image-size", str(args.render_size), "--plan", "quick"]
    command += ["--workers", str(args.workers), "--out", str(out)]
    if args.shared_reverses is not None:
        command += ["--shared-reverses", str(args.shared_reverses)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def config(
    data: Path, run: Path, model: str, args: argparse.Namespace, **changes: Any
) -> TrainConfig:
    """The settings every run here shares (48 px, small embedding), with `changes`."""
    base = TrainConfig(
        data=[str(data)],
        out=str(run),
        model=model,
        image_size=args.image_size,
        embedding_dim=args.embedding_dim,
        batch_size=args.batch_size,
        epochs=args.epochs,
        steps_per_epoch=args.steps,
        lr=args.lr,
        split=args.split,
        rotations=args.rotations,
        cache_dir=str(args.out / "cache"),
    )
    for key, value in changes.items():
        setattr(base, key, value)
    base.val_every = base.epochs  # validate once, at the end: best is the last epoch's
    base.check()
    return base


def pretrain_config(data: Path, run: Path, args: argparse.Namespace) -> TrainConfig:
    """The pretraining run: every coin trains (no validation), at its own epochs, lr and scale."""
    return config(
        data, run, args.model, args, epochs=args.pretrain_epochs,
        steps_per_epoch=args.pretrain_steps, lr=args.pretrain_lr, split="1,0,0",
        loss=LossSettings(scale=args.pretrain_scale),  # 16 pulled 600 classes off their random loss
    )  # fmt: skip


def train_once(cfg: TrainConfig) -> dict[str, Any]:
    """Train unless the run finished before; its summary (with the CPU seconds it took)."""
    done = Path(cfg.out) / "summary.json"
    if done.exists():
        return dict(json.loads(done.read_text()))
    cpu = time.process_time()
    summary = train(cfg, show_progress=False, workers=1)
    summary["cpu_seconds"] = time.process_time() - cpu
    done.write_text(json.dumps(summary, indent=2, default=str))
    return summary


def catalog_top1(run: Path, cache: Path, data: Path | None = None) -> float:
    """Catalog-protocol top-1 of a run's best checkpoint on its held-out coins (kept in RUN).

    On `data`, a collection the run never saw, every coin is held out.
    """
    done = run / ("top1-" + (data.name if data else "test") + ".json")
    if done.exists():
        return float(json.loads(done.read_text()))
    trained = load_run(run)
    roots = [data] if data else trained.data
    bank, _ = load_images(read_datasets(roots), trained.preprocess, cache, workers=1)
    metrics = run_protocol(trained.model, bank, trained.held_out(bank), "catalog")[0]
    done.write_text(json.dumps(float(metrics["top1"])))
    return float(metrics["top1"])


def main(argv: list[str] | None = None) -> None:
    """Run every step not yet done in --out, then print the table (and write results.json)."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    pre_data, eval_data = out / "twin-pretrain", out / "twin-eval"
    timings: dict[str, float] = {}
    timings["render pretrain"] = simulate(
        pre_data, args.pretrain_coins, args.pretrain_types, args.pretrain_seed, args
    )
    timings["render eval"] = simulate(eval_data, args.eval_coins, 6, args.eval_seed, args)
    pre_run = out / "runs" / f"pretrain-{args.model}"
    pretrain = pretrain_config(pre_data, pre_run, args)
    timings["pretrain cpu"] = float(train_once(pretrain).get("cpu_seconds", 0.0))
    # the pretrained model as it is, on every coin of the held-out collection (it saw none)
    cache = out / "cache"
    results: dict[str, list[float]] = {"pretrained only": [catalog_top1(pre_run, cache, eval_data)]}
    runs = {
        "pretrained, fine-tuned": (args.model, str(pre_run), args.finetune_lr),
        "scratch": (args.model, None, args.lr),
    }
    if args.baseline_model != args.model:
        runs["baseline scratch"] = (args.baseline_model, None, args.lr)
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name, (model, init, lr) in runs.items():
            run = out / "runs" / f"{model}-{name.replace(', ', '-').replace(' ', '-')}-seed{seed}"
            cfg = config(eval_data, run, model, args, seed=seed, init=init, lr=lr)
            timings[f"{name} cpu"] = timings.get(f"{name} cpu", 0.0) + float(
                train_once(cfg).get("cpu_seconds", 0.0)
            )
            results.setdefault(name, []).append(catalog_top1(run, cache))
    report = {"settings": {k: str(v) for k, v in vars(args).items()}, "top1": results}
    report["seconds"] = timings
    (out / "results.json").write_text(json.dumps(report, indent=2))
    print_table(args, results, timings)


def print_table(
    args: argparse.Namespace, results: dict[str, list[float]], timings: dict[str, float]
) -> None:
    """The Markdown table of docs/pretraining.md: top-1 mean ± sd over the split seeds."""
    print(
        f"\nheld-out twin collection (seed {args.eval_seed}, {args.eval_coins} coins), "
        f"catalog protocol, {args.image_size} px, split seeds {args.seeds}\n"
    )
    print("| model | start | top-1 (mean ± sd) | per seed |")
    print("| --- | --- | --- | --- |")
    starts = {
        "pretrained only": "twin-pretrained only (all coins)",
        "pretrained, fine-tuned": f"twin-pretrained ({args.pretrain_coins} coins), fine-tuned",
        "scratch": "scratch",
        "baseline scratch": "scratch",
    }
    for name, values in results.items():
        model = args.baseline_model if name == "baseline scratch" else args.model
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        seeds = ", ".join(f"{100 * v:.1f}" for v in values)
        mean = 100 * statistics.mean(values)
        print(f"| {model} | {starts[name]} | {mean:.1f} ± {100 * spread:.1f} % | {seeds} |")
    print("\n" + ", ".join(f"{k}: {v:.0f} s" for k, v in timings.items()))


if __name__ == "__main__":
    main()
