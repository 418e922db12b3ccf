"""Backbones match torchvision's state_dict layout; embedding models have the promised shapes."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from training.models import (
    EmbeddingModel,
    build_model,
    convnext_tiny,
    inception_v3,
    load_torchvision_weights,
    model_names,
    resnet18,
    resnet50,
    resnet_tiny,
)
from training.models.embedding import rotated_copies

FIXTURE = Path(__file__).parent / "fixtures" / "torchvision_state_dicts.json"
META = torch.device("meta")

# Fixture model name -> (our full backbone, with classifier; the embedding model's name).
BACKBONES: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "resnet18": (resnet18, "resnet18"),
    "resnet50": (resnet50, "resnet50"),
    "convnext_tiny": (convnext_tiny, "convnext-tiny"),
    "inception_v3": (inception_v3, "inception-v3"),
}


@pytest.fixture(scope="module")
def torchvision_shapes() -> dict[str, dict[str, list[int]]]:
    data = json.loads(FIXTURE.read_text())
    assert data["torchvision_version"] == "0.28.0"
    return data["models"]


def shapes(model: nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbone_keys_and_shapes_match_torchvision(
    name: str, torchvision_shapes: dict[str, dict[str, list[int]]]
) -> None:
    with META:  # no memory allocated, names and shapes only
        ours = shapes(BACKBONES[name][0]())
    theirs = torchvision_shapes[name]
    assert sorted(set(theirs) - set(ours)) == []
    assert sorted(set(ours) - set(theirs)) == []
    assert {k: v for k, v in ours.items() if v != theirs[k]} == {}


def test_fixture_includes_batchnorm_buffers(
    torchvision_shapes: dict[str, dict[str, list[int]]],
) -> None:
    rn50 = torchvision_shapes["resnet50"]
    assert rn50["layer1.0.downsample.1.running_var"] == [256]
    assert rn50["bn1.num_batches_tracked"] == []
    assert torchvision_shapes["inception_v3"]["Mixed_7c.branch_pool.bn.running_mean"] == [192]


@pytest.mark.parametrize("name", list(BACKBONES))
def test_parameter_counts_match_torchvision(name: str) -> None:
    expected = json.loads(FIXTURE.read_text())["num_parameters"][name]
    with META:
        assert sum(p.numel() for p in BACKBONES[name][0]().parameters()) == expected


@pytest.mark.parametrize("name", list(BACKBONES))
def test_embedding_backbone_takes_every_torchvision_key_but_the_head(
    name: str, torchvision_shapes: dict[str, dict[str, list[int]]]
) -> None:
    # What load_torchvision_weights will drop from a real torchvision file, and nothing else.
    with META:
        backbone = build_model(BACKBONES[name][1]).backbone
    ours = shapes(backbone)
    theirs = torchvision_shapes[name]
    dropped = set(theirs) - set(ours)
    assert dropped and all(k.startswith(backbone.head_prefixes) for k in dropped)
    assert set(ours) <= set(theirs)
    assert all(ours[k] == theirs[k] for k in ours)


def test_truncated_resnet50_keeps_layer3_and_drops_layer4(
    torchvision_shapes: dict[str, dict[str, list[int]]],
) -> None:
    with META:
        model = build_model("resnet50-truncated", embedding_dim=64, image_size=224)
        x = torch.empty(2, 3, 224, 224)
        grid = model.spatial_features(x)
        emb = model(x)
    keys = set(model.backbone.state_dict())
    expected = {k for k in torchvision_shapes["resnet50"] if not k.startswith(("layer4.", "fc."))}
    assert keys == expected
    assert model.backbone.out_channels == 1024
    assert tuple(grid.shape) == (2, 32, 14, 14)
    assert tuple(emb.shape) == (2, 64)
    assert model.fc.in_features == 32 * 14 * 14


def test_model_names_lists_every_required_model() -> None:
    required = {
        "resnet18",
        "resnet50",
        "resnet50-truncated",
        "convnext-tiny",
        "inception-v3",
        "resnet-tiny",
    }
    assert required <= set(model_names())


@pytest.mark.parametrize("name", model_names())
def test_every_model_embeds_to_batch_by_dim_on_meta(name: str) -> None:
    with META:
        model = build_model(name, embedding_dim=96)
        size = model.config["image_size"]
        out = model(torch.empty(3, 3, size, size))
        feats = model.spatial_features(torch.empty(3, 3, size, size))
    assert tuple(out.shape) == (3, 96)
    assert feats.ndim == 4 and feats.shape[0] == 3
    assert model.config == {
        "name": name,
        "embedding_dim": 96,
        "image_size": 299 if name == "inception-v3" else 224,
        "in_channels": 3,
        "bn_neck": False,
        "rotations": 1,
    }


@pytest.mark.parametrize("name", ["resnet-tiny", "resnet-tiny-truncated"])
def test_tiny_models_give_unit_embeddings_on_cpu(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, embedding_dim=16, image_size=64, bn_neck=True).eval()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        emb = model(x)
        again = model.embed_spatial(model.spatial_features(x))
    assert emb.shape == (4, 16)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(emb, again)


@pytest.mark.parametrize("name", ["resnet-tiny", "resnet-tiny-truncated"])
def test_quarter_turn_pooling_makes_embeddings_rotation_invariant(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, embedding_dim=16, image_size=64, bn_neck=True, rotations=4).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        upright = model(x)
        turned = [model(torch.rot90(x, k, dims=(2, 3))) for k in (1, 2, 3)]
        single = model.embed_spatial(model.spatial_features(x))
    for t in turned:
        torch.testing.assert_close(t, upright, atol=1e-5, rtol=0)
    torch.testing.assert_close(upright.norm(dim=1), torch.ones(2))
    assert not torch.allclose(single, upright, atol=1e-3)  # pooling really changed the embedding


def test_eight_way_pooling_is_nearly_invariant_to_a_45_degree_turn() -> None:
    torch.manual_seed(0)
    model = build_model("resnet-tiny", embedding_dim=16, image_size=64, rotations=8).eval()
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disc = (((yy - 31.5) ** 2 + (xx - 31.5) ** 2) < 30**2).float()
    x = torch.randn(2, 3, 64, 64) * disc  # a coin-like disc on a plain backdrop
    turned = torch.stack([torch.rot90(img, 1, dims=(1, 2)) for img in x])
    rotated_45 = rotated_copies(x, 8)[1]
    unpooled = build_model("resnet-tiny", embedding_dim=16, image_size=64).eval()
    unpooled.load_state_dict(model.state_dict())
    with torch.no_grad():
        pooled_cos = (model(x) * model(rotated_45)).sum(dim=1)
        plain_cos = (unpooled(x) * unpooled(rotated_45)).sum(dim=1)
        exact_cos = (model(x) * model(turned)).sum(dim=1)
    assert torch.all(exact_cos > 0.999)
    assert torch.all(pooled_cos > plain_cos) and torch.all(pooled_cos > 0.95)


def test_training_mode_embeds_a_single_rotation() -> None:
    torch.manual_seed(0)
    model = build_model("resnet-tiny", embedding_dim=8, image_size=64, rotations=8).train()
    x = torch.randn(4, 3, 64, 64)
    torch.testing.assert_close(model(x), model.embed_spatial(model.spatial_features(x)))


def test_grid_model_rejects_other_input_sizes() -> None:
    model = build_model("resnet-tiny-truncated", embedding_dim=8, image_size=64).eval()
    assert model.keeps_grid and model.grid_size == 4
    with torch.no_grad(), pytest.raises(ValueError, match="4×4 grid"):
        model(torch.randn(1, 3, 96, 96))


def test_pooled_model_accepts_any_input_size() -> None:
    model = build_model("resnet-tiny", embedding_dim=8).eval()
    assert not model.keeps_grid
    with torch.no_grad():
        assert model(torch.randn(1, 3, 48, 80)).shape == (1, 8)


@pytest.mark.parametrize("size", [32, 33, 64, 65, 100, 224])
def test_output_size_matches_the_real_grid(size: int) -> None:
    backbone = resnet_tiny(num_stages=3, num_classes=None).eval()
    with torch.no_grad():
        feats = backbone.forward_features(torch.zeros(1, 3, size, size))
    assert feats.shape[-1] == feats.shape[-2] == backbone.output_size(size)


def test_build_model_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rotations"):
        build_model("resnet-tiny", rotations=0)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet-huge")
    with pytest.raises(ValueError, match="image_size >= 75"):
        build_model("inception-v3", image_size=64)


def test_inception_transform_input_matches_torchvision_formula() -> None:
    # torchvision: x_c * (std_c / 0.5) + (mean_c - 0.5) / 0.5, channel by channel.
    with META:
        model = inception_v3(transform_input=True)
    x = torch.randn(2, 3, 5, 5)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = torch.stack(
        [x[:, c] * (std[c] / 0.5) + (mean[c] - 0.5) / 0.5 for c in range(3)], dim=1
    )
    scale = torch.tensor([s / 0.5 for s in std]).view(1, 3, 1, 1)
    shift = torch.tensor([(m - 0.5) / 0.5 for m in mean]).view(1, 3, 1, 1)
    assert model._in_scale.shape == scale.shape  # the buffers exist (on meta)
    torch.testing.assert_close(x * scale + shift, expected)


def test_convnext_stochastic_depth_grows_linearly_to_point_one() -> None:
    with META:
        model = convnext_tiny()
    probs = [m.stochastic_depth.p for m in model.modules() if hasattr(m, "stochastic_depth")]
    assert len(probs) == 18
    assert probs[0] == 0.0 and probs[-1] == pytest.approx(0.1)
    assert all(b > a for a, b in itertools.pairwise(probs))


def _save_state(model: nn.Module, path: Path) -> Path:
    torch.save(model.state_dict(), path)
    return path


def test_load_torchvision_weights_loads_a_full_checkpoint_ignoring_fc(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = resnet18()
    path = _save_state(source, tmp_path / "resnet18.pth")
    target = resnet18(num_classes=None)
    load_torchvision_weights(target, path)
    want = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    got = target.state_dict()
    assert set(got) == set(want)
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0)


def test_build_model_loads_weights_into_a_truncated_backbone(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = resnet_tiny()
    path = _save_state(source, tmp_path / "tiny.pth")
    model = build_model("resnet-tiny-truncated", weights=path, image_size=64)
    src = source.state_dict()
    for key, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, src[key], rtol=0, atol=0)


def test_load_torchvision_weights_accepts_wrapped_and_ddp_files(tmp_path: Path) -> None:
    source = resnet_tiny()
    wrapped = {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}
    torch.save(wrapped, tmp_path / "ddp.pth")
    target = resnet_tiny()
    load_torchvision_weights(target, tmp_path / "ddp.pth")
    torch.testing.assert_close(target.conv1.weight, source.conv1.weight, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda sd: sd.pop("layer2.0.bn1.running_mean"), "missing"),
        (lambda sd: sd.__setitem__("layer9.weight", torch.zeros(1)), "unexpected"),
        (lambda sd: sd.__setitem__("bn1.weight", torch.zeros(5)), "size mismatch"),
    ],
    ids=["missing-key", "unexpected-key", "wrong-shape"],
)
def test_load_torchvision_weights_is_strict_outside_the_head(
    tmp_path: Path, edit: Callable[[dict[str, torch.Tensor]], object], message: str
) -> None:
    state = resnet_tiny().state_dict()
    edit(state)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=message):
        load_torchvision_weights(resnet_tiny(), tmp_path / "bad.pth")


def test_load_torchvision_weights_refuses_pickled_objects(tmp_path: Path) -> None:
    torch.save({"conv1.weight": torch.zeros(1), "hook": nn.ReLU()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="not a plain state_dict"):
        load_torchvision_weights(resnet_tiny(), tmp_path / "evil.pth")


def test_rgb_weights_fit_a_one_channel_stem(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = resnet_tiny(num_classes=None).eval()
    path = _save_state(source, tmp_path / "rgb.pth")
    model = build_model("resnet-tiny", weights=path, in_channels=1).eval()
    assert isinstance(model, EmbeddingModel)
    grey = torch.randn(2, 1, 40, 40)
    with torch.no_grad():
        # A grey image as one channel must look exactly like the same image as RGB.
        got = model.backbone.forward_features(grey)
        want = source.forward_features(grey.expand(-1, 3, -1, -1))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
