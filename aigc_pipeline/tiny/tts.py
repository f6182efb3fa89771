"""A tiny VITS text-to-speech model (the architecture of Meta's MMS-TTS), built offline in a second.

The tokenizer is a `VitsTokenizer` over a character vocabulary written here (`vocab.json`:
lowercase letters, digits, space and a little punctuation; blank `<pad>` between characters),
with `normalize=True` and `phonemize=False`, as the MMS models use it, so no phonemizer is
needed. The model is a `VitsModel` with a small config (hidden size 16, one layer per block,
a 256x HiFi-GAN upsampler at 16 kHz) and random weights saved as safetensors: ~100 kB on disk,
a waveform in tens of milliseconds on one CPU core. It speaks noise.
"""

from __future__ import annotations

import json
from pathlib import Path

CHARACTERS = list(" abcdefghijklmnopqrstuvwxyz0123456789'-.,!?")
PAD, UNK = "<pad>", "<unk>"
SAMPLE_RATE = 16_000


def build(folder: Path, seed: int = 0) -> Path:
    """Write the tokenizer and the random-weight model to `folder`; deterministic given `seed`."""
    import torch
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {token: index for index, token in enumerate([PAD, UNK, *CHARACTERS])}  # the blank must be id 0
    vocab_file = folder / "vocab.json"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    tokenizer = VitsTokenizer(
        str(vocab_file), pad_token=PAD, unk_token=UNK, add_blank=True, normalize=True, phonemize=False
    )
    tokenizer.save_pretrained(folder)
    config = VitsConfig(
        vocab_size=len(vocab), pad_token_id=0, sampling_rate=SAMPLE_RATE,
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=32, flow_size=16,
        spectrogram_bins=17, upsample_initial_channel=16, upsample_rates=[8, 8, 4],
        upsample_kernel_sizes=[16, 16, 8], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
        duration_predictor_filter_channels=16, duration_predictor_num_flows=1, depth_separable_num_layers=1,
        prior_encoder_num_flows=1, prior_encoder_num_wavenet_layers=1, posterior_encoder_num_wavenet_layers=1,
    )
    with torch.random.fork_rng(devices=[]):  # seeded weights, without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = VitsModel(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return folder
