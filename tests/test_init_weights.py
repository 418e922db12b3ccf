"""Starting weights: `pipeline train --init RUN` (fine-tuning) and `--weights` names in torch's hub.

--init copies every tensor of a run's checkpoint that fits (name and shape) and leaves the rest
freshly initialised; a run of another model family is refused in one line. `--weights NAME`
finds torchvision's file in torch's hub cache (`$TORCH_HOME`), never downloads, and says in one
line (exit 2) when the file is absent or of another family.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from synthetic_dataset import Spec, write_dataset
from typer.testing import CliRunner

from pipeline.cli import app
from training.checkpoint import save_checkpoint
from training.errors import SettingsError
from training.init_weights import hub_checkpoints, init_from, resolve_weights
from training.models.embedding import EmbeddingModel, build_model

runner = CliRunner()


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _trained(run: Path, name: str, **settings: object) -> EmbeddingModel:
    """A run folder whose best checkpoint holds `name` with weights unlike a fresh model's."""
    torch.manual_seed(1)
    model = build_model(name, **settings)  # type: ignore[arg-type]
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor))
    save_checkpoint(run / "checkpoints" / "best", model)
    return model


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.equal(a, b))


def test_init_copies_every_tensor_of_the_same_model(tmp_path: Path) -> None:
    source = _trained(tmp_path / "run", "resnet-tiny", embedding_dim=16, image_size=32)
    model = build_model("resnet-tiny", embedding_dim=16, image_size=32)
    report = init_from(model, tmp_path / "run")
    assert report.fresh == []
    given = source.state_dict()
    assert all(_equal(t, given[n]) for n, t in model.state_dict().items())
    assert "init from" in report.line() and str(len(given)) in report.line()


def test_a_head_of_another_shape_starts_fresh_and_the_backbone_is_copied(tmp_path: Path) -> None:
    """Another embedding size (fc, bn) and another grid (a truncated model at another image size:
    fc's inputs) keep their fresh weights; every backbone tensor comes from the run."""
    settings = {"embedding_dim": 16, "image_size": 32, "bn_neck": True}
    source = _trained(tmp_path / "run", "resnet-tiny-truncated", **settings)
    fresh = build_model("resnet-tiny-truncated", embedding_dim=8, image_size=48, bn_neck=True)
    before = {n: t.clone() for n, t in fresh.state_dict().items()}
    report = init_from(fresh, tmp_path / "run")
    after, given = fresh.state_dict(), source.state_dict()
    assert {"fc.weight", "fc.bias", "bn.weight", "bn.bias"} <= set(report.fresh)
    for name in report.fresh:
        assert _equal(after[name], before[name]), name  # left as initialised
    backbone = [n for n in after if n.startswith(("backbone.", "reduce."))]
    assert backbone and all(n in report.copied for n in backbone)
    assert all(_equal(after[n], given[n]) for n in backbone)


def test_a_run_of_another_family_is_refused_in_one_line(tmp_path: Path) -> None:
    _trained(tmp_path / "run", "resnet18", embedding_dim=8, image_size=32)
    model = build_model("resnet-tiny", embedding_dim=8, image_size=32)
    with pytest.raises(SettingsError) as caught:
        init_from(model, tmp_path / "run")
    message = str(caught.value)
    assert "\n" not in message and "resnet18" in message and "resnet-tiny" in message
    with pytest.raises(SettingsError, match="not a training run"):
        init_from(model, tmp_path / "nothing-here")


def test_hub_names_are_found_in_torch_home_and_never_downloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = hub_checkpoints()
    assert folder == tmp_path / "torch" / "hub" / "checkpoints"
    # absent: one line naming the folder and the file pattern
    with pytest.raises(SettingsError) as caught:
        resolve_weights("resnet18", "resnet18")
    message = str(caught.value)
    assert "\n" not in message and "resnet18-*.pth" in message and str(folder) in message
    # present: torchvision's file name, a backbone state_dict with torchvision's names
    folder.mkdir(parents=True)
    backbone = build_model("resnet18", embedding_dim=8, image_size=32).backbone
    torch.save(backbone.state_dict(), folder / "resnet18-f37072fd.pth")
    path = resolve_weights("resnet18", "resnet18")
    assert path == folder / "resnet18-f37072fd.pth"
    loaded = build_model("resnet18", embedding_dim=8, image_size=32, weights=path).backbone
    assert all(_equal(t, backbone.state_dict()[n]) for n, t in loaded.state_dict().items())
    # a file path still works as it always has
    assert resolve_weights(str(path), "resnet18") == path


def test_weights_of_another_family_are_refused_in_one_line() -> None:
    with pytest.raises(SettingsError) as caught:
        resolve_weights("resnet50", "convnext-tiny")
    message = str(caught.value)
    assert "\n" not in message and "resnet50-truncated" in message and "convnext-tiny" in message
    with pytest.raises(SettingsError, match="not a torchvision name"):
        resolve_weights("vgg16", "resnet50")


def _train_args(data: Path, run: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "train", "--data", str(data), "--out", str(run), "--cache-dir", str(cache),
        "--model", "resnet-tiny", "--image-size", "32", "--batch-size", "16", "--epochs", "1",
        "--steps-per-epoch", "2", "--rotations", "1", "--no-progress", "--workers", "1", *extra,
    ]  # fmt: skip


def test_pipeline_train_init_fine_tunes_from_a_run(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "ds", Spec(n_coins=10, size=40))
    cache = tmp_path / "cache"
    result = runner.invoke(app, _train_args(data, tmp_path / "pre", cache))
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        _train_args(
            data,
            tmp_path / "tuned",
            cache,
            "--embedding-dim",
            "64",
            "--init",
            str(tmp_path / "pre"),
        ),
    )
    assert result.exit_code == 0, result.output
    assert "init from" in result.output and "fc.weight" in result.output  # 64 ≠ 512: a new head
    summary = json.loads((tmp_path / "tuned" / "summary.json").read_text())
    assert summary["init"].startswith("init from")
    config = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert config["init"] == str(tmp_path / "pre")


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        pytest.param(["--init", "no-such-run"], "not a training run", id="init-missing"),
        pytest.param(["--weights", "resnet50"], "not resnet-tiny", id="weights-other-family"),
        pytest.param(["--weights", "resnet18", "--model", "resnet18"], "hub", id="hub-absent"),
        pytest.param(["--weights", "x.pth", "--init", "run"], "no such file", id="bad-file"),
    ],
)
def test_bad_starting_weights_are_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str], words: str
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    data = write_dataset(tmp_path / "ds", Spec(n_coins=4, size=32))
    args = _train_args(data, tmp_path / "run", tmp_path / "cache", *extra)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.output
    assert not (tmp_path / "cache").exists()  # refused before any image was read
