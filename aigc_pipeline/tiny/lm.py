"""A tiny GPT-2-style causal LM with a byte-level BPE tokenizer, built offline in about a second.

The tokenizer is trained by `tokenizers` on the sentences below (byte-level, so any text
round-trips) and wrapped in `PreTrainedTokenizerFast` with bos/eos/pad tokens and a small chat
template, so the system-prompt path of `llm.text` runs too. The model is a `GPT2LMHeadModel`
with random weights saved as safetensors. It writes noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CORPUS = [
    "Write a short ad for a waterproof hiking backpack.",
    "Our new espresso machine makes cafe drinks at home in under a minute.",
    "The quarterly report shows revenue grew by twelve percent.",
    "Local council approves a new cycling lane along the river.",
    "These wireless earbuds last thirty hours on a single charge.",
    "A lightweight laptop for students, with a bright screen and a quiet keyboard.",
    "Breaking news: the city marathon will start an hour earlier this year.",
    "Stay warm this winter with a soft merino wool sweater.",
    "The museum opens a new exhibition of modern photography on Friday.",
    "Fresh bread, baked every morning, delivered to your door.",
    "Shares of the company rose after strong sales in Europe and Asia.",
    "Smart thermostats can cut heating bills by a tenth.",
    "Try our vegan burger: all the flavour, none of the meat.",
    "The weather service expects heavy rain in the north on Tuesday.",
    "Our running shoes are built for long distances and rough trails.",
    "Product: ceramic mug. Audience: coffee lovers. Features: dishwasher safe, 350 ml.",
    "Summarise the following facts in two sentences for a morning newsletter.",
    "You are a helpful copywriter. Keep it friendly, clear and under sixty words.",
    "Prices start at 19.99 euros, with free shipping on orders over fifty.",
    "The team won the final 3-1 in front of a record crowd.",
    "Noise-cancelling headphones for travel, work and everything in between.",
    "Inflation eased slightly in March, according to official figures.",
    "Plant-based skincare, gentle on sensitive skin, tested by dermatologists.",
    "A compact electric scooter that folds in seconds and fits under a desk.",
    "Question: what makes this product different? Answer: it lasts longer.",
    "Il fait beau aujourd'hui. Das Wetter ist schön. Hace buen tiempo. 今日は晴れです。",
]

BOS, EOS, PAD = "<|bos|>", "<|endoftext|>", "<|pad|>"
CHAT_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
VOCAB_SIZE = 512
CONTEXT = 256


def build(folder: Path, seed: int = 0) -> Path:
    """Write the tokenizer and the random-weight model to `folder`; deterministic given `seed`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(folder)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=CONTEXT, n_embd=64, n_layer=2, n_head=4,
        initializer_range=0.2,  # GPT-2's 0.02 makes a random model repeat one token whatever the prompt
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def build_tokenizer() -> Any:
    """A byte-level BPE tokenizer trained on CORPUS, as a `PreTrainedTokenizerFast` (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=[EOS, BOS, PAD, *CHAT_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    core.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        additional_special_tokens=CHAT_TOKENS, chat_template=CHAT_TEMPLATE, model_max_length=CONTEXT,
    )
