"""A tiny image classifier with random weights: a ViT with the labels `safe` and `nsfw`.

A standard transformers folder (`config.json`, `model.safetensors`,
`preprocessor_config.json`) that `pipeline("image-classification", model=folder)` loads, so the
`filter.image` classifier check runs its real code path. Its scores are noise.
"""

from __future__ import annotations

from pathlib import Path

LABELS = {0: "safe", 1: "nsfw"}
IMAGE_SIZE = 32


def build(folder: str | Path, seed: int = 0) -> Path:
    """Write the tiny classifier to `folder` (created) and return it."""
    import torch
    import transformers
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    folder = Path(folder)
    config = ViTConfig(
        image_size=IMAGE_SIZE, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, id2label=dict(LABELS),
        label2id={label: index for index, label in LABELS.items()},
    )
    torch.manual_seed(seed)
    model = ViTForImageClassification(config).eval()
    processor = ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    transformers.utils.logging.disable_progress_bar()  # "Writing model shards" bars
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder
