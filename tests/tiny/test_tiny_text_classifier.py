"""The tiny text classifier: a standard Hugging Face folder that the real loading code reads, built offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")


def test_make_tiny_writes_a_loadable_safetensors_folder(tiny_model: Any) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tiny_model("text-classifier")
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "README.md"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth"))]
    assert "NOISE" in (folder / "README.md").read_text(encoding="utf-8")

    model = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.config.model_type == "bert"
    assert model.config.id2label == {0: "ok", 1: "toxic"} and model.config.label2id == {"ok": 0, "toxic": 1}
    assert model.config.vocab_size == len(tokenizer)
    encoded = tokenizer(["You are an idiot.", ""], padding=True, return_tensors="pt")
    with torch.inference_mode():
        assert model(**encoded).logits.shape == (2, 2)


def test_tokenizer_learned_words_and_lowercases(tiny_model: Any) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model("text-classifier"))
    assert tokenizer.tokenize("Fresh BREAD") == ["fresh", "bread"]  # whole words from the corpus
    tokens = tokenizer.tokenize("zebra quiz")  # unseen words: pieces of the alphabet, not [UNK]
    assert tokenizer.unk_token not in tokens
    assert tokenizer("hi")["input_ids"][0] == tokenizer.cls_token_id
    assert tokenizer.model_max_length == 128


def test_build_is_deterministic_given_the_seed(tmp_path: Path) -> None:
    from aigc_pipeline.tiny import text_classifier

    first, again, other = (text_classifier.build(tmp_path / name, seed=seed)
                           for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    weights = [(folder / "model.safetensors").read_bytes() for folder in (first, again, other)]
    assert weights[0] == weights[1]
    assert weights[0] != weights[2]
    assert (first / "vocab.txt").read_bytes() == (again / "vocab.txt").read_bytes()
    assert (first / "tokenizer.json").read_bytes() == (again / "tokenizer.json").read_bytes()
