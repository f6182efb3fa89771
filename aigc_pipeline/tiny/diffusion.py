"""A tiny Stable-Diffusion-style pipeline: a standard diffusers folder with random weights.

The folder has the layout of `stable-diffusion-v1-5` (`model_index.json`, `unet/`, `vae/`,
`text_encoder/`, `tokenizer/`, `scheduler/`), safetensors weights, no safety checker, and loads
with `AutoPipelineForText2Image.from_pretrained`. The geometry is the real one (a VAE that
downsamples by 8, 4 latent channels, a CLIP tokenizer of 77 tokens, the SD 1.5 scheduler
config), the sizes are tiny: a 64x64 image is an 8x8 latent and takes milliseconds a step on CPU.

The CLIP tokenizer is a real byte-level BPE in CLIP's format (`vocab.json` + `merges.txt`, words
end in `</w>`): all 256 bytes, each also as a word end, so any text tokenizes, plus merges learnt
here from a few sentences.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

CORPUS = """
a photo of a red running shoe on a white background, studio lighting, high detail
an espresso machine in a bright modern kitchen, product photography, soft shadows
a watercolor painting of a lighthouse by the sea at sunset
a cozy wool sweater folded on a wooden table, morning light
portrait of a smiling woman wearing headphones, city street, shallow depth of field
a bottle of olive oil with fresh tomatoes and basil, rustic style
the new phone in the hand of a person walking in the park
a cat sleeping on a sofa next to a window, warm colors, photo
mountains and a lake under a blue sky with clouds, landscape, wide angle
"""
NUM_MERGES = 300
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77
LATENT_CHANNELS = 4


def build(folder: str | Path, seed: int = 0) -> Path:
    """Write the tiny pipeline to `folder` (created) and return it."""
    import torch
    import transformers
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    vocab, merges = clip_bpe(CORPUS, NUM_MERGES)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LENGTH)  # type: ignore[arg-type]
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**_text_config(vocab)))
    unet = UNet2DConditionModel(**UNET_CONFIG)
    vae = AutoencoderKL(**VAE_CONFIG)
    scheduler = PNDMScheduler(**SCHEDULER_CONFIG)
    pipe: Any = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    transformers.utils.logging.disable_progress_bar()  # "Writing model shards" bars
    pipe.save_pretrained(folder, safe_serialization=True)
    _write_bpe_files(folder / "tokenizer", vocab, merges)
    return folder


def _text_config(vocab: dict[str, int]) -> dict[str, Any]:
    return dict(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH, projection_dim=32,
        bos_token_id=vocab[BOS], eos_token_id=vocab[EOS], pad_token_id=vocab[EOS],
    )


UNET_CONFIG: dict[str, Any] = dict(
    sample_size=8, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, layers_per_block=1,
    block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=8,
    norm_num_groups=16,
)
# Four blocks: the VAE downsamples by 2**3 = 8, as Stable Diffusion's does.
VAE_CONFIG: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, layers_per_block=1,
    block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8, sample_size=64,
)
# Stable Diffusion 1.5's own scheduler config, so swapping schedulers works as on the real model.
SCHEDULER_CONFIG: dict[str, Any] = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
)


# ------------------------------------------------------------------ CLIP-format BPE


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's reversible map from bytes to printable characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def clip_bpe(corpus: str, num_merges: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learn `num_merges` BPE merges from `corpus`; return (vocab, merges) in CLIP's layout.

    The vocabulary is ordered as CLIP's: the 256 byte characters, the same with `</w>`, the
    merged tokens in merge order, then the start and end tokens.
    """
    alphabet = list(bytes_to_unicode().values())
    encode = bytes_to_unicode()
    words = Counter(
        tuple("".join(encode[b] for b in word.encode("utf-8"))[:-1])
        + ("".join(encode[b] for b in word.encode("utf-8"))[-1] + "</w>",)
        for word in corpus.lower().replace(",", " ").split()
    )
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:], strict=False):
                pairs[pair] += count
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]  # ties broken by the pair: deterministic
        merges.append(best)
        words = Counter({_merge(word, best): count for word, count in words.items()})
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(pair) for pair in merges] + [BOS, EOS]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def _merge(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    merged: list[str] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            merged.append(word[i] + word[i + 1])
            i += 2
        else:
            merged.append(word[i])
            i += 1
    return tuple(merged)


def _write_bpe_files(folder: Path, vocab: dict[str, int], merges: list[tuple[str, str]]) -> None:
    """`vocab.json` + `merges.txt` beside `tokenizer.json`, as real SD folders have: the file pair
    the Python `CLIPTokenizer` of transformers 4 loads from."""
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
