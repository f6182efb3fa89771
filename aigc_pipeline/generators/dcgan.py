"""DCGAN generators (Radford et al. 2015), unconditional and class-conditional, as torch modules.

A latent vector (and, for the conditional one, a class embedding) is projected to a 4x4 feature map,
then each transposed convolution (kernel 4, stride 2) doubles the size until `image_size`; batch
norm and ReLU between, tanh at the end, so pixels are in [-1, 1]. In eval mode batch norm uses its
running statistics, so an image depends only on its own latent, never on its batch neighbours.

Both classes follow the generator contract of `aigc_pipeline.generators` and are
`PyTorchModelHubMixin` models: `save_pretrained` / `from_pretrained` read and write
`config.json` + `model.safetensors`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn


def _check_size(image_size: int) -> int:
    steps = math.log2(image_size / 4) if image_size >= 8 else -1.0
    if steps < 1 or not float(steps).is_integer():
        raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
    return int(steps)


def upsampling_stack(in_features: int, base_channels: int, image_size: int, channels: int) -> nn.Module:
    """Linear projection to a 4x4 map, then transposed convolutions doubling it up to `image_size`."""
    steps = _check_size(image_size)
    width = base_channels * 2 ** (steps - 1)
    layers: list[nn.Module] = [
        nn.Linear(in_features, width * 16, bias=False), nn.Unflatten(1, (width, 4, 4)),
        nn.BatchNorm2d(width), nn.ReLU(),
    ]
    for step in range(steps):
        last = step == steps - 1
        out = channels if last else width // 2
        layers.append(nn.ConvTranspose2d(width, out, 4, 2, 1, bias=last))
        layers += [nn.Tanh()] if last else [nn.BatchNorm2d(out), nn.ReLU()]
        width = out
    return nn.Sequential(*layers)


class DCGANGenerator(nn.Module, PyTorchModelHubMixin):
    """Unconditional DCGAN generator: a latent of `latent_dim` -> a `channels` x `image_size`^2 image."""

    architecture = "dcgan"

    def __init__(self, latent_dim: int = 32, image_size: int = 8, channels: int = 1, base_channels: int = 64) -> None:
        super().__init__()
        self.config: dict[str, Any] = dict(latent_dim=latent_dim, image_size=image_size, channels=channels,
                                           base_channels=base_channels)
        self.latent_dim, self.num_classes = latent_dim, 0
        self.net = upsampling_stack(latent_dim, base_channels, image_size, channels)

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z)  # type: ignore[no-any-return]

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.generate(z, labels)


class ConditionalDCGANGenerator(nn.Module, PyTorchModelHubMixin):
    """Class-conditional DCGAN generator: the latent is joined by a learnt embedding of the class."""

    architecture = "conditional_dcgan"

    def __init__(self, latent_dim: int = 32, num_classes: int = 10, embed_dim: int = 16, image_size: int = 8,
                 channels: int = 1, base_channels: int = 64) -> None:
        super().__init__()
        self.config: dict[str, Any] = dict(latent_dim=latent_dim, num_classes=num_classes, embed_dim=embed_dim,
                                           image_size=image_size, channels=channels, base_channels=base_channels)
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.net = upsampling_stack(latent_dim + embed_dim, base_channels, image_size, channels)

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is None:
            raise ValueError("a conditional generator needs a class label per image")
        return self.net(torch.cat([z, self.embed(labels)], dim=1))  # type: ignore[no-any-return]

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.generate(z, labels)
