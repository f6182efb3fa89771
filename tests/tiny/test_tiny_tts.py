"""The tiny VITS model: a standard Hugging Face folder that loads and speaks (noise) in milliseconds."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from aigc_pipeline.model_files import PICKLE_SUFFIXES, resolve_model
from aigc_pipeline.tiny import tts

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def test_the_folder_is_a_standard_safetensors_model(tiny_model: Any) -> None:
    folder = tiny_model("tts")
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "vocab.json", "tokenizer_config.json", "README.md"} <= names
    assert not [p for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES]
    assert resolve_model(str(folder)) == folder
    assert "NOISE" in (folder / "README.md").read_text(encoding="utf-8")
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    assert vocab[tts.PAD] == 0 and set(tts.CHARACTERS) <= set(vocab)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "vits" and config["sampling_rate"] == tts.SAMPLE_RATE


def test_it_loads_and_speaks_in_well_under_a_second(tiny_model: Any) -> None:
    folder = tiny_model("tts")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.VitsModel.from_pretrained(folder).eval()
    assert type(tokenizer).__name__ == "VitsTokenizer"
    assert sum(p.numel() for p in model.parameters()) < 100_000
    inputs = tokenizer("Hello, World! 42", return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    assert ids[0::2] == [0] * (len(ids) // 2 + 1)  # the blank between characters
    assert tokenizer.decode(ids) == "hello, world! 42"  # lowercased; every character is in the vocabulary
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        with torch.inference_mode():
            output = model(**inputs)
        timings.append(time.perf_counter() - started)
    assert min(timings) < 1.0
    waveform = output.waveform
    assert waveform.shape[0] == 1 and waveform.shape[1] == int(output.sequence_lengths[0]) > 0
    assert torch.isfinite(waveform).all()


def test_a_seed_gives_the_same_speech(tiny_model: Any) -> None:
    folder = tiny_model("tts")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.VitsModel.from_pretrained(folder).eval()
    inputs = tokenizer("the same words", return_tensors="pt")

    def speak(seed: int) -> Any:
        torch.manual_seed(seed)
        with torch.inference_mode():
            return model(**inputs).waveform

    assert torch.equal(speak(1), speak(1))
    assert not torch.equal(speak(1), speak(2))


def test_the_build_is_deterministic(tmp_path: Path) -> None:
    state = torch.random.get_rng_state()
    first, again, other = (tts.build(tmp_path / name, seed=seed) for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone
    for name in ("model.safetensors", "vocab.json", "config.json", "tokenizer_config.json"):
        assert (first / name).read_bytes() == (again / name).read_bytes(), name
    assert (first / "model.safetensors").read_bytes() != (other / "model.safetensors").read_bytes()
