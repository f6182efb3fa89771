"""A third-party generator architecture: `checker_gan`, a latent -> RGB image through one linear layer,
registered through the aigc_register_generators hook (torch is imported only when the hook runs)."""

from aigc_pipeline import hookimpl


def _architecture():
    import torch
    from torch import nn

    class CheckerGenerator(nn.Module):
        architecture = "checker_gan"

        def __init__(self, latent_dim=4, size=6):
            super().__init__()
            self.config = {"latent_dim": latent_dim, "size": size}
            self.latent_dim, self.num_classes, self.size = latent_dim, 0, size
            self.linear = nn.Linear(latent_dim, 3 * size * size)

        def generate(self, z, labels=None):
            return torch.tanh(self.linear(z)).view(-1, 3, self.size, self.size)

    return CheckerGenerator


@hookimpl
def aigc_register_generators():
    return [_architecture()]
