"""The tiny LM: a standard Hugging Face folder that the real loading code reads, built offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")


def test_make_tiny_writes_a_loadable_safetensors_folder(tiny_model: Any) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_model("lm")
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth"))]
    assert "NOISE" in (folder / "README.md").read_text(encoding="utf-8")

    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.config.model_type == "gpt2"
    assert model.config.vocab_size == len(tokenizer)
    assert None not in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


def test_tokenizer_round_trips_any_text(tiny_model: Any) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model("lm"))
    for text in ["Write a short ad for a mug.", "  spaces\tand\nnewlines ", "émojis 🎉 and 中文 and ünïcödé", ""]:
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert len(tokenizer("advertisement")["input_ids"]) < len("advertisement")  # BPE merges were learned


def test_tokenizer_has_a_chat_template_with_a_system_role(tiny_model: Any) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model("lm"))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"
    assert len(tokenizer("<|system|>", add_special_tokens=False)["input_ids"]) == 1


def test_build_is_deterministic_given_the_seed(tmp_path: Path) -> None:
    from aigc_pipeline.tiny import lm

    first, again, other = (lm.build(tmp_path / name, seed=seed) for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    weights = [(folder / "model.safetensors").read_bytes() for folder in (first, again, other)]
    assert weights[0] == weights[1]
    assert weights[0] != weights[2]
    assert (first / "tokenizer.json").read_bytes() == (again / "tokenizer.json").read_bytes()
