"""`diffusion.image` encodes PNGs on a thread pool while the next pipeline call denoises: same bytes."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from aigc_pipeline.devices import CPU
from aigc_pipeline.stage import StageItem
from aigc_pipeline.stages import diffusion
from aigc_pipeline.stages.diffusion import DiffusionImageStage, DiffusionParams

pytest.importorskip("diffusers")
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]

def diffusion_on_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


PROMPTS = ["a lamp", "a red shoe", "a teapot", "a wallet"]


def stage_for(tiny_model: Any, **params: Any) -> DiffusionImageStage:
    stage = DiffusionImageStage(DiffusionParams(model=str(tiny_model("sd")), steps=2, width=32, height=32, **params))
    stage.load(CPU)
    return stage


@pytest.fixture(scope="module")
def stage(tiny_model: Any) -> Any:
    """One loaded stage (pipeline calls of 2 images) for the module: loading the pipeline is the slow part."""
    loaded = stage_for(tiny_model, pipeline_batch=2)
    yield loaded
    loaded.unload()
    assert loaded.encoders is None  # unload shut the encoder threads down


def images(stage: DiffusionImageStage, batches: list[list[int]]) -> list[bytes]:
    items = [StageItem(i, {"prompt": prompt}, (5, "hero")) for i, prompt in enumerate(PROMPTS)]
    for batch in batches:
        stage.process([items[i] for i in batch])
    return [item.outputs["image"].data for item in items]


def test_overlapped_calls_give_the_bytes_of_separate_batches(stage: DiffusionImageStage) -> None:
    overlapped = images(stage, [[0, 1, 2, 3]])  # two calls in one batch: encoding overlaps the second
    separate = images(stage, [[0, 1], [2, 3]])  # one call per batch: nothing to overlap
    assert overlapped == separate and len(set(overlapped)) == 4


def test_the_first_calls_images_encode_while_the_next_call_runs(
    stage: DiffusionImageStage, monkeypatch: pytest.MonkeyPatch
) -> None:
    second_call_started = threading.Event()
    calls: list[int] = []
    seen_during_encoding: list[bool] = []
    pipe, encode = stage.pipe, diffusion.png_bytes

    class CountingPipe:
        def __getattr__(self, name: str) -> Any:  # the scheduler, the device: the real pipeline's
            return getattr(pipe, name)

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            calls.append(len(kwargs["prompt"]))
            if len(calls) == 2:
                second_call_started.set()
            return pipe(*args, **kwargs)

    def waiting_encode(image: Any, metadata: dict[str, Any]) -> bytes:
        if len(seen_during_encoding) < 2:  # the first call's images wait for the second call to begin
            seen_during_encoding.append(second_call_started.wait(timeout=60))
        return encode(image, metadata)

    stage.pipe = CountingPipe()
    monkeypatch.setattr(diffusion, "png_bytes", waiting_encode)
    try:
        images(stage, [[0, 1, 2, 3]])
    finally:
        stage.pipe = pipe
    assert calls == [2, 2] and seen_during_encoding == [True, True]


def test_an_encoding_error_fails_the_batch(stage: DiffusionImageStage, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(image: Any, metadata: dict[str, Any]) -> bytes:
        raise OSError("disk full")

    monkeypatch.setattr(diffusion, "png_bytes", broken)
    with pytest.raises(OSError, match="disk full"):
        images(stage, [[0, 1, 2, 3]])


def test_gpu_tuning_is_off_on_the_cpu(tiny_model: Any) -> None:
    import torch

    stage = stage_for(tiny_model, compile=True)
    try:
        weight = next(p for p in stage.pipe.unet.parameters() if p.dim() == 4 and p.shape[-1] > 1)
        assert not weight.is_contiguous(memory_format=torch.channels_last)  # CPU results stay as they were
        assert type(stage.pipe.unet).__name__ == "UNet2DConditionModel"  # not compiled on the CPU
    finally:
        stage.unload()


@pytest.mark.gpu
@pytest.mark.skipif(not diffusion_on_cuda(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_pipeline_is_half_precision_sdpa_and_channels_last(tiny_model: Any) -> None:
    import torch
    from diffusers.models.attention_processor import AttnProcessor2_0

    from aigc_pipeline.devices import Device

    stage = DiffusionImageStage(DiffusionParams(model=str(tiny_model("sd")), steps=2, width=32, height=32))
    stage.load(Device("cuda", 0))
    try:
        unet = stage.pipe.unet
        weight = next(p for p in unet.parameters() if p.dim() == 4 and p.shape[-1] > 1)
        assert unet.dtype == torch.float16 and weight.is_contiguous(memory_format=torch.channels_last)
        assert all(isinstance(proc, AttnProcessor2_0) for proc in unet.attn_processors.values())
        assert len(images(stage, [[0, 1, 2, 3]])) == 4
    finally:
        stage.unload()
