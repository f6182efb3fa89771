"""A tiny text-to-video pipeline: a standard diffusers folder with random weights.

The layout of ModelScope's `damo-vilab/text-to-video-ms-1.7b` (`TextToVideoSDPipeline`:
`model_index.json`, `unet/` a `UNet3DConditionModel`, `vae/`, `text_encoder/`, `tokenizer/`,
`scheduler/`), safetensors weights, loadable with `DiffusionPipeline.from_pretrained`. It shares
the tiny Stable Diffusion's CLIP tokenizer, text encoder and VAE geometry (8x downsampling, 4
latent channels), so a 32x32 clip of 8 frames is a 4x4x8 latent and takes milliseconds a step.
Its frames are noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .diffusion import CORPUS, NUM_MERGES, SCHEDULER_CONFIG, VAE_CONFIG, _text_config, _write_bpe_files, clip_bpe

UNET3D_CONFIG: dict[str, Any] = dict(
    sample_size=4, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
    down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
    cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
)


def build(folder: str | Path, seed: int = 0) -> Path:
    """Write the tiny text-to-video pipeline to `folder` (created) and return it."""
    import torch
    import transformers
    from diffusers import AutoencoderKL, DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    vocab, merges = clip_bpe(CORPUS, NUM_MERGES)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)  # type: ignore[arg-type]
    torch.manual_seed(seed)
    pipe: Any = TextToVideoSDPipeline(
        vae=AutoencoderKL(**VAE_CONFIG), text_encoder=CLIPTextModel(CLIPTextConfig(**_text_config(vocab))),
        tokenizer=tokenizer, unet=UNet3DConditionModel(**UNET3D_CONFIG),
        scheduler=DDIMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items() if k != "skip_prk_steps"}),
    )
    transformers.utils.logging.disable_progress_bar()
    pipe.save_pretrained(folder, safe_serialization=True)
    _write_bpe_files(folder / "tokenizer", vocab, merges)
    return folder
