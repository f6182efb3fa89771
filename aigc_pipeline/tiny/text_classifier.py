"""A tiny BERT text classifier with random weights and the labels `ok` and `toxic`.

The tokenizer is a WordPiece vocabulary (`vocab.txt`: the words of the sentences below, split by
`tokenizers`' BERT normalizer and pre-tokenizer, plus letter and suffix pieces) loaded by
`BertTokenizerFast`, lowercasing and stripping accents as `bert-base-uncased` does. The model is
a `BertForSequenceClassification` with a small config and random weights saved as safetensors.
`AutoTokenizer` and `AutoModelForSequenceClassification` load the folder, so the classifier check
of `filter.text` runs its real code path. Its scores are noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LABELS = {0: "ok", 1: "toxic"}
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CONTEXT = 128
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
SUFFIXES = ["s", "es", "ed", "ing", "ly", "er", "est", "ness", "ment"]
CORPUS = [
    "This backpack is waterproof, light and built for long hikes.",
    "Our espresso machine makes cafe drinks at home in under a minute.",
    "The council approved a new cycling lane along the river on Tuesday.",
    "You are an idiot and everyone hates your stupid product.",
    "What a terrible, useless company; shut up and go away.",
    "Thanks for your order! Your parcel ships tomorrow morning.",
    "Revenue grew by twelve percent in the third quarter.",
    "Call us at the office or write an email to the support team.",
    "This is garbage, a scam, and the people behind it are liars.",
    "Fresh bread, baked every morning and delivered to your door.",
    "The weather service expects heavy rain in the north this week.",
    "I hate this, it is the worst thing I have ever bought.",
]


def build(folder: str | Path, seed: int = 0) -> Path:
    """Write the tokenizer and the random-weight classifier to `folder`; deterministic given `seed`."""
    import torch
    import transformers
    from transformers import BertConfig, BertForSequenceClassification

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=CONTEXT, pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.5,  # BERT's 0.02 gives every text a score of about 0.5; this spreads them
        id2label=dict(LABELS), label2id={label: index for index, label in LABELS.items()},
    )
    with torch.random.fork_rng(devices=[]):  # seeded weights, without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = BertForSequenceClassification(config).eval()
    transformers.utils.logging.disable_progress_bar()
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def build_tokenizer(folder: Path) -> Any:
    """Write `vocab.txt` and the tokenizer files to `folder`; return the tokenizer.

    The vocabulary is every word of CORPUS as BERT's own normalizer and pre-tokenizer (from
    `tokenizers`) split it, a few common suffixes, and every letter and digit alone and as a `##`
    piece, so any lowercase word splits into known pieces. Written, not trained: the WordPiece
    trainer breaks ties between equally frequent merges differently from run to run.
    """
    import transformers
    from tokenizers import normalizers, pre_tokenizers

    # transformers 5 names the tokenizers-backed class BertTokenizer (BertTokenizerFast is an alias)
    fast = getattr(transformers, "BertTokenizerFast", None) or transformers.BertTokenizer

    normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    splitter = pre_tokenizers.BertPreTokenizer()
    words = {word for line in CORPUS for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(line))}
    pieces = words | set(ALPHABET) | {"##" + char for char in ALPHABET} | {"##" + s for s in SUFFIXES}
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("".join(token + "\n" for token in [*SPECIAL_TOKENS, *sorted(pieces)]), encoding="utf-8")
    # from_pretrained on the folder reads vocab.txt in transformers 4 and 5 alike (their __init__ differ)
    tokenizer = fast.from_pretrained(folder, do_lower_case=True, model_max_length=CONTEXT)
    tokenizer.save_pretrained(folder)
    return tokenizer
