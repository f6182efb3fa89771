"""Length-aware generate calls and the static-cache path of `llm.text`: same outputs, less padding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aigc_pipeline import CPU, StageItem
from aigc_pipeline.stages.llm import LlmParams, LlmTextStage
from aigc_pipeline.stages.llm_batching import WIDTH_BUCKET, in_length_order, padded_width, padding_share

pytest.importorskip("transformers")

# Mixed lengths on purpose: one, a few and many words, interleaved.
PROMPTS = [
    "Mug.", "Write a long and detailed advert for a waterproof hiking backpack with many pockets, for hikers.",
    "Ad for shoes.", "Describe an espresso machine for coffee lovers who want crema every morning at home.",
    "Lamp.", "Sell a scooter.", "A very long prompt about a merino wool sweater that keeps you warm in winter and "
    "dry in the rain, for commuters and travellers alike.", "Kettle ad, short.",
]


@pytest.fixture(scope="module")
def lm(tiny_model: Any) -> Path:
    return tiny_model("lm")  # type: ignore[no-any-return]


def texts(folder: Path, prompts: list[str], sampling: bool = False, **params: Any) -> list[Any]:
    extra = {"temperature": 0.9, "top_k": 20} if sampling else {}
    stage = LlmTextStage(LlmParams(model=str(folder), max_new_tokens=8, min_new_tokens=8, **extra, **params))
    stage.load(CPU)
    items = [StageItem(index, {"prompt": prompt}, (7, "copy")) for index, prompt in enumerate(prompts)]
    stage.process(items)
    return [item.outputs.get("text") for item in items]


def test_in_length_order_sorts_cuts_and_puts_results_back_in_input_order() -> None:
    token_ids = [[1] * n for n in (5, 1, 4, 2, 3)]
    calls: list[list[int]] = []

    def run(rows: list[int]) -> list[int]:
        calls.append(rows)
        return [len(token_ids[row]) * 10 for row in rows]

    assert in_length_order(token_ids, 2, run) == [50, 10, 40, 20, 30]
    assert calls == [[1, 3], [4, 2], [0]]  # shortest first, two per call


def test_in_length_order_makes_one_call_in_input_order_when_the_batch_fits() -> None:
    calls: list[list[int]] = []

    def run(rows: list[int]) -> list[int]:
        calls.append(rows)
        return rows

    assert in_length_order([[1, 1], [1]], None, run) == [0, 1]
    assert calls == [[0, 1]]


def test_sorting_computes_less_padding() -> None:
    lengths = [30, 2, 28, 3, 31, 2, 29, 4]
    assert padding_share(lengths, 4, sort=True) < padding_share(lengths, 4, sort=False) / 3
    assert padding_share([5, 5], None, sort=False) == 0.0


def test_static_cache_widths_fall_in_buckets() -> None:
    assert padded_width(1, True) == WIDTH_BUCKET and padded_width(WIDTH_BUCKET + 1, True) == 2 * WIDTH_BUCKET
    assert padded_width(17, False) == 17


def test_length_aware_calls_give_the_same_text_as_one_call(lm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = texts(lm, PROMPTS)
    widths: list[int] = []
    original = LlmTextStage.generate

    def spy(self: LlmTextStage, token_ids: list[list[int]], seeds: list[int]) -> list[str]:
        widths.append(max(map(len, token_ids)))
        return original(self, token_ids, seeds)

    monkeypatch.setattr(LlmTextStage, "generate", spy)
    assert texts(lm, PROMPTS, generate_batch=3) == whole
    assert len(widths) == 3 and widths == sorted(widths) and widths[0] < widths[-1]


def test_length_aware_calls_keep_each_rows_seeded_sample(lm: Path) -> None:
    assert texts(lm, PROMPTS, sampling=True, generate_batch=2) == texts(lm, PROMPTS, sampling=True)


def test_the_static_cache_gives_the_same_greedy_text(lm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    eager = texts(lm, PROMPTS)
    from transformers import GenerationMixin

    seen: list[tuple[Any, int]] = []
    original = GenerationMixin.generate

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append((kwargs.get("cache_implementation"), kwargs["input_ids"].shape[1]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", spy)
    assert texts(lm, PROMPTS, static_cache=True) == eager
    assert seen and all(cache == "static" and width % WIDTH_BUCKET == 0 for cache, width in seen)
    assert texts(lm, PROMPTS, static_cache=True, generate_batch=3) == texts(lm, PROMPTS)


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU")
def test_the_compiled_static_cache_gives_the_same_greedy_text_on_a_gpu(lm: Path) -> None:
    from aigc_pipeline import Device

    def on_gpu(**params: Any) -> list[Any]:
        stage = LlmTextStage(LlmParams(model=str(lm), max_new_tokens=8, min_new_tokens=8, **params))
        stage.load(Device("cuda", 0))
        items = [StageItem(index, {"prompt": prompt}, (7, "copy")) for index, prompt in enumerate(PROMPTS)]
        stage.process(items)
        stage.process(items)  # the second call reuses the compiled shapes
        return [item.outputs.get("text") for item in items]

    assert on_gpu(static_cache=True) == on_gpu()
