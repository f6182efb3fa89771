"""A variational autoencoder's decoder (Kingma & Welling 2013) as a torch module, and its encoder.

`VAEDecoder` is what the `latent.image` stage runs: a latent drawn from N(0, I) -> an image. Its
folder holds the decoder only (`config.json` + `model.safetensors`); `VAEEncoder` exists for
training and for measuring reconstruction (`aigc models train-digits`). The decoder is a small
MLP (linear layers and ReLU, sigmoid out), so each image depends only on its own latent.
"""

from __future__ import annotations

from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn


class VAEDecoder(nn.Module, PyTorchModelHubMixin):
    """Latent of `latent_dim` -> a `channels` x `image_size`^2 image, pixels in [-1, 1]."""

    architecture = "vae_decoder"

    def __init__(self, latent_dim: int = 8, image_size: int = 8, channels: int = 1, hidden: int = 256) -> None:
        super().__init__()
        self.config: dict[str, Any] = dict(latent_dim=latent_dim, image_size=image_size, channels=channels,
                                           hidden=hidden)
        self.latent_dim, self.num_classes = latent_dim, 0
        self.shape = (channels, image_size, image_size)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, channels * image_size * image_size),
        )

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] (the training target's range)."""
        return torch.sigmoid(self.net(z)).view(-1, *self.shape)

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(z) * 2 - 1

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.generate(z, labels)


class VAEEncoder(nn.Module):
    """Image in [0, 1] -> the mean and log-variance of its latent."""

    def __init__(self, latent_dim: int = 8, image_size: int = 8, channels: int = 1, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(channels * image_size * image_size, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU())
        self.mean = nn.Linear(hidden, latent_dim)
        self.log_var = nn.Linear(hidden, latent_dim)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.net(images)
        return self.mean(hidden), self.log_var(hidden)
