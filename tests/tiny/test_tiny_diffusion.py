"""The tiny Stable-Diffusion-style pipeline and the tiny image classifier load with the real APIs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from aigc_pipeline.tiny.diffusion import CORPUS, clip_bpe
from aigc_pipeline.tiny.image_classifier import build as build_classifier

pytestmark = pytest.mark.slow


def test_sd_folder_is_a_standard_diffusers_folder_with_safetensors_only(tiny_model) -> None:
    folder: Path = tiny_model("sd")
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None] and index["requires_safety_checker"] is False
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (folder / part).is_dir(), part
    weights = {p.suffix for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin", ".pt", ".ckpt")}
    assert weights == {".safetensors"}
    assert "random-weight" in (folder / "README.md").read_text(encoding="utf-8")


def test_clip_tokenizer_loads_and_tokenizes_any_text(tiny_model, tmp_path: Path) -> None:
    from transformers import CLIPTokenizer

    folder = tiny_model("sd") / "tokenizer"
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    assert tokenizer.model_max_length == 77
    text = "a photo of an astronaut riding a horse"
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert len(ids) < len(text)  # the learnt merges apply
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    odd = "Zebra-striped CAFÉ, 4k — ünïcödé 😀 & 100%!"
    odd_ids = tokenizer(odd).input_ids
    assert tokenizer.unk_token_id not in odd_ids[1:-1]  # byte-level: nothing is unknown
    padded = tokenizer([text, odd], padding="max_length", max_length=77, truncation=True).input_ids
    assert [len(row) for row in padded] == [77, 77]
    # The vocab.json + merges.txt pair alone (what transformers 4's Python tokenizer reads) agrees.
    pair = tmp_path / "pair"
    pair.mkdir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(folder / name, pair / name)
    assert CLIPTokenizer.from_pretrained(pair).encode(odd) == odd_ids


def test_bpe_learning_is_deterministic_and_in_clip_layout() -> None:
    vocab, merges = clip_bpe(CORPUS, 50)
    assert (vocab, merges) == clip_bpe(CORPUS, 50)
    assert len(merges) == 50 and list(vocab)[-2:] == ["<|startoftext|>", "<|endoftext|>"]
    assert sorted(vocab.values()) == list(range(len(vocab)))
    assert all(c + "</w>" in vocab for c in list(vocab)[:256])


def test_auto_pipeline_loads_and_makes_images_of_the_requested_size(tiny_model) -> None:
    import torch
    from diffusers import AutoPipelineForText2Image

    pipe = AutoPipelineForText2Image.from_pretrained(str(tiny_model("sd")), use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.tokenizer.model_max_length == 77 and pipe.vae_scale_factor == 8
    images = pipe(["a red shoe", "a blue shoe"], num_inference_steps=2, width=48, height=64,
                  generator=[torch.Generator().manual_seed(s) for s in (1, 2)]).images
    assert [image.size for image in images] == [(48, 64), (48, 64)]
    assert images[0].tobytes() != images[1].tobytes()


def test_image_classifier_loads_with_the_transformers_pipeline(tiny_model, tmp_path: Path) -> None:
    from PIL import Image
    from transformers import pipeline

    folder = tiny_model("image-classifier")
    assert (folder / "model.safetensors").is_file()
    classify = pipeline("image-classification", model=str(folder), device="cpu")
    answers = classify([Image.new("RGB", (40, 30), "red"), Image.new("L", (64, 64), 9).convert("RGB")], top_k=None)
    for answer in answers:
        assert {a["label"] for a in answer} == {"safe", "nsfw"}
        assert sum(a["score"] for a in answer) == pytest.approx(1.0, abs=1e-5)
    again = build_classifier(tmp_path / "again", seed=0)  # the same seed builds the same weights
    assert (again / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
