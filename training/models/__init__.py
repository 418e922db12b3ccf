"""Plain-PyTorch backbones with torchvision parameter names, and embedding heads."""

from training.models.convnext import ConvNeXt, convnext_tiny
from training.models.embedding import (
    EmbeddingModel,
    build_model,
    load_torchvision_weights,
    model_names,
)
from training.models.inception import Inception3, inception_v3
from training.models.resnet import ResNet, resnet18, resnet50, resnet_tiny

__all__ = [
    "ConvNeXt",
    "EmbeddingModel",
    "Inception3",
    "ResNet",
    "build_model",
    "convnext_tiny",
    "inception_v3",
    "load_torchvision_weights",
    "model_names",
    "resnet18",
    "resnet50",
    "resnet_tiny",
]
