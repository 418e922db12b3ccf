"""benchmarks/pretrain_finetune.py: its command line and the training settings it derives.

The benchmark itself takes an hour or more of CPU (docs/pretraining.md); here only what decides
which runs it makes: `--gpu-scale` fills in the full-size settings that flags did not give, and
every run's settings pass `TrainConfig.check` as they stand.
"""

from __future__ import annotations

from pathlib import Path

from simulate_support import load_benchmark


def test_gpu_scale_fills_the_full_size_settings_and_a_given_flag_wins() -> None:
    bench = load_benchmark("pretrain_finetune")
    cpu = bench.parse_args([])
    gpu = bench.parse_args(["--gpu-scale", "--pretrain-epochs", "3"])
    assert gpu.pretrain_coins == bench.GPU_SCALE["pretrain_coins"] != cpu.pretrain_coins
    assert gpu.image_size == bench.GPU_SCALE["image_size"] != cpu.image_size
    assert gpu.pretrain_steps is None  # a whole epoch of the pretraining collection
    assert gpu.pretrain_epochs == 3  # given on the command line: kept
    assert gpu.pretrain_scale == cpu.pretrain_scale  # not a full-size setting: as the default


def test_the_default_runs_are_valid_training_settings(tmp_path: Path) -> None:
    bench = load_benchmark("pretrain_finetune")
    args = bench.parse_args(["--out", str(tmp_path)])
    pretrain = bench.pretrain_config(tmp_path / "pre", tmp_path / "runs" / "pre", args)
    assert pretrain.split == "1,0,0" and pretrain.epochs == args.pretrain_epochs
    assert pretrain.loss.scale == args.pretrain_scale and pretrain.lr == args.pretrain_lr
    finetune = bench.config(
        tmp_path / "eval", tmp_path / "runs" / "ft", args.model, args,
        seed=2, init=str(tmp_path / "runs" / "pre"), lr=args.finetune_lr,
    )  # fmt: skip
    # validated once, at the end, so `best` (what --init and scoring read) is the last epoch
    assert finetune.val_every == finetune.epochs == args.epochs
    assert finetune.seed == 2 and finetune.lr == args.finetune_lr
    assert finetune.cache_dir == str(tmp_path / "cache")
