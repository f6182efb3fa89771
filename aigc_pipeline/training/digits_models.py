"""The digits data and the training-only parts: the GAN's discriminator and the VAE's loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

TEST_SHARE = 0.2


@dataclass
class DigitsData:
    train_x: torch.Tensor  # (N, 1, 8, 8), pixels in [0, 1]
    train_y: torch.Tensor  # (N,) digits 0-9
    test_x: torch.Tensor
    test_y: torch.Tensor


def load_digits_data(seed: int) -> DigitsData:
    """scikit-learn's 1,797 real digits, split 80/20 (stratified by digit, seeded)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    train_x, test_x, train_y, test_y = train_test_split(images, labels, test_size=TEST_SHARE,
                                                        stratify=labels.numpy(), random_state=seed)
    return DigitsData(train_x, train_y, test_x, test_y)


class GanDiscriminator(nn.Module):
    """8x8 image -> (real/fake logit, digit logits): two strided convolutions, then two heads."""

    def __init__(self, width: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, width * 2, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(),
        )
        self.real = nn.Linear(width * 2 * 4, 1)
        self.digit = nn.Linear(width * 2 * 4, num_classes)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(images)
        return self.real(features), self.digit(features)


def vae_loss(recon: torch.Tensor, target: torch.Tensor, mean: torch.Tensor, log_var: Any) -> torch.Tensor:
    """Binary cross-entropy of the pixels plus the KL divergence from N(0, I), per image."""
    bce = nn.functional.binary_cross_entropy(recon, target, reduction="sum")
    kl = -0.5 * torch.sum(1 + log_var - mean.pow(2) - log_var.exp())
    return (bce + kl) / len(target)
