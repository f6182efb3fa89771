"""Latent-variable image generators (GAN, conditional GAN, VAE decoder): architectures and folders.

A generator architecture is a `torch.nn.Module` class that provides:

- `architecture`: a class attribute, the name pipeline files use (`dcgan`, `conditional_dcgan`,
  `vae_decoder`, or a plugin's own such as `stylegan2`);
- `__init__(**config)`: JSON-able keyword arguments only, as `config.json` stores them;
- `latent_dim` (int) and `num_classes` (int, 0 when unconditional) attributes;
- `generate(z, labels) -> images`: `z` of shape (N, latent_dim) drawn from N(0, I), `labels` a
  long tensor of N class indices or None; images of shape (N, channels, H, W) in [-1, 1];
- `config` (optional): the init keyword arguments, which `save_generator` writes to `config.json`.

A model folder is what huggingface_hub's `PyTorchModelHubMixin` reads and writes: `config.json`
(the init keyword arguments; ours add `"architecture"`) and `model.safetensors`. Built-in
architectures are registered through the `aigc_register_generators` hook by this module, exactly
as a plugin registers its own (see `hookspecs.py`). Importing this module imports no torch.
"""

from __future__ import annotations

from typing import Any

from ..plugin_manager import hookimpl


@hookimpl
def aigc_register_generators() -> list[type[Any]]:
    from .dcgan import ConditionalDCGANGenerator, DCGANGenerator
    from .vae import VAEDecoder

    return [DCGANGenerator, ConditionalDCGANGenerator, VAEDecoder]
