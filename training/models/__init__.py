"""Plain-PyTorch backbones with torchvision parameter names, and embedding heads."""
