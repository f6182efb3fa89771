"""`diffusion.image`: text-to-image with a diffusers pipeline (Stable Diffusion and kin).

One pipeline call per micro-batch. Every item gets its own generator seeded with the item's seed
(a CPU generator, so the starting noise is the same on every device), so an item's image does
not depend on which other rows share its batch. The pixels are not guaranteed bit-identical
across batch sizes: batched convolution kernels (oneDNN on CPU, cuDNN on GPU) round differently
for different batch sizes, so a few pixel values may differ by one level; the same batch size on
the same machine gives identical bytes. `batch_invariant: true` makes one pipeline call per item
instead (same loaded pipeline, same arguments), so every batch size gives the bytes of batch
size 1. No torch setting does that cheaply: oneDNN off, deterministic algorithms and one thread
all still differ; float64 hid the difference on the tiny model only because its errors are
smaller, not gone.

Each image is returned as PNG bytes (`ArtifactData`); the engine writes the file. The PNG text
chunks record what made it: prompt, negative prompt, seed, model, steps, guidance, scheduler,
size, and a note when the model folder says it holds random weights (the tiny test models).

PNG encoding (zlib, which releases the GIL) runs on a small thread pool while the next pipeline
call denoises: `pipeline_batch` cuts the stage's batch into calls of that many images, and each
call's images encode while the next call runs, so the GPU does not wait on the CPU; the bytes are
those of encoding one by one. On a GPU the pipeline runs in float16 by default, with PyTorch's
scaled-dot-product attention (diffusers' default processor) and a channels-last UNet;
`compile: true` compiles the UNet (or transformer) with torch.compile there (the first batch
then takes minutes).

torch and diffusers are imported in `load` / `process` only: importing this module is cheap.
"""

from __future__ import annotations

import io
import os
import typing
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..content import IMAGE, TEXT, ArtifactData
from ..devices import Device
from ..models import dtype_keyword, memory_estimate, resolve_model
from ..plugin_manager import hookimpl
from ..stage import DeviceNeeds, Stage, StageItem

# Schedulers that work with Stable-Diffusion-style pipelines and need no extra package
# (LMSDiscreteScheduler needs scipy, DPMSolverSDEScheduler needs torchsde).
SchedulerName = Literal[
    "DDIMScheduler", "DDPMScheduler", "DEISMultistepScheduler", "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler", "EulerAncestralDiscreteScheduler", "EulerDiscreteScheduler",
    "HeunDiscreteScheduler", "KDPM2AncestralDiscreteScheduler", "KDPM2DiscreteScheduler", "PNDMScheduler",
    "UniPCMultistepScheduler",
]
SCHEDULERS: tuple[str, ...] = typing.get_args(SchedulerName)
Dtype = Literal["auto", "float32", "float16", "bfloat16"]
DTYPE_BYTES = {"auto": 2, "float32": 4, "float16": 2, "bfloat16": 2}  # auto: float16 on a GPU
ACTIVATION_OVERHEAD = 1.2  # memory estimate: the weights plus 20% for activations
RANDOM_WEIGHTS_NOTE = "random weights: this image is noise from a tiny test model"
ENCODER_THREADS = max(1, min(8, (os.cpu_count() or 2) - 1))  # PNG encoders beside the thread that drives the model


class DiffusionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="a local diffusers folder or a Hugging Face id, e.g. "
                                   "'stable-diffusion-v1-5/stable-diffusion-v1-5'")
    revision: str | None = Field(None, description="a branch, tag or commit of a Hugging Face model")
    dtype: Dtype = Field("auto", description="weights dtype; auto: float16 on a GPU, float32 on the CPU")
    steps: int = Field(25, ge=1, le=1000, description="denoising steps")
    guidance: float = Field(7.5, ge=0, le=50, description="classifier-free guidance scale (<= 1 turns it off)")
    width: int = Field(512, ge=8, le=4096, multiple_of=8, description="image width in pixels, a multiple of 8")
    height: int = Field(512, ge=8, le=4096, multiple_of=8, description="image height in pixels, a multiple of 8")
    negative_prompt: str | None = Field(None, description="what the images should not show (every row)")
    scheduler: SchedulerName | None = Field(None, description="noise scheduler class; default: the model's own")
    trust_remote_code: bool = Field(False, description="allow a model folder's own Python code to run")
    allow_pickle: bool = Field(False, description="allow pickle weights (.bin, .ckpt): they can run code")
    batch_invariant: bool = Field(
        False, description="run the denoising loop one image at a time inside the micro-batch, so an image's "
                           "bytes do not depend on its batch neighbours, at the cost of batching speed; "
                           "the model still loads once",
    )
    pipeline_batch: int | None = Field(
        None, ge=1, description="images per pipeline call: the stage's batch runs in calls of this many, and each "
                                "call's PNG encoding overlaps the next call's denoising; none: one call per batch",
    )
    compile: bool = Field(False, description="on a GPU, compile the UNet / transformer with torch.compile (the "
                                             "first batch takes minutes; later ones run faster)")


class DiffusionImageStage(Stage[DiffusionParams]):
    type_name = "diffusion.image"
    description = "Text-to-image with a diffusers pipeline (Stable Diffusion); PNG with its settings."
    Params = DiffusionParams
    inputs = {"prompt": TEXT}
    outputs = {"image": IMAGE}
    default_batch_size = 4

    def __init__(self, params: DiffusionParams) -> None:
        super().__init__(params)
        self.pipe: Any = None
        self.note: str | None = None
        self.encoders: ThreadPoolExecutor | None = None

    @classmethod
    def preflight(cls, params: DiffusionParams) -> None:
        resolve_model(params.model, params.revision, allow_pickle=params.allow_pickle)

    @classmethod
    def needs(cls, params: DiffusionParams) -> DeviceNeeds:
        memory = memory_estimate(params.model, params.revision, dtype_bytes=DTYPE_BYTES[params.dtype],
                                 headroom=ACTIVATION_OVERHEAD)
        return DeviceNeeds("any", memory, None if params.dtype == "auto" else params.dtype)

    def load(self, device: Device) -> None:
        import torch
        from diffusers import AutoPipelineForText2Image

        _quiet_progress_bars()
        p = self.params
        folder = resolve_model(p.model, p.revision, allow_pickle=p.allow_pickle)
        dtype = torch.float16 if p.dtype == "auto" and device.is_gpu else getattr(torch, p.dtype, torch.float32)
        pipe = AutoPipelineForText2Image.from_pretrained(
            str(folder), **{dtype_keyword("diffusers"): dtype}, use_safetensors=None if p.allow_pickle else True,
            trust_remote_code=p.trust_remote_code,
        )
        if p.scheduler is not None:
            pipe.scheduler = _scheduler(pipe.scheduler, p.scheduler)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(str(device))
        if device.is_gpu:
            _tune_for_gpu(self.pipe, p.compile)
        self.note = RANDOM_WEIGHTS_NOTE if says_random_weights(folder) else None

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        size = 1 if self.params.batch_invariant else self.params.pipeline_batch or len(batch) or 1
        if self.encoders is None:
            self.encoders = ThreadPoolExecutor(ENCODER_THREADS, thread_name_prefix="png-encode")
        encoding: list[Future[None]] = []
        try:
            for start in range(0, len(batch), size):  # a call's images encode while the next call denoises
                encoding += self._generate(batch[start : start + size], self.encoders)
        finally:
            wait(encoding)  # no encode outlives the batch, even when a pipeline call failed
        for future in encoding:
            future.result()  # an encoding error fails the batch (the engine then isolates the row)
        return batch

    def _generate(self, items: list[StageItem], pool: ThreadPoolExecutor) -> list[Future[None]]:
        """One pipeline call for `items`; their PNGs are encoded on the pool (the futures returned)."""
        import torch

        p = self.params
        kwargs: dict[str, Any] = {}
        if p.negative_prompt is not None:
            kwargs["negative_prompt"] = [p.negative_prompt] * len(items)
        generators = [torch.Generator("cpu").manual_seed(item.seed) for item in items]
        with torch.inference_mode():
            result = self.pipe(
                prompt=[item.inputs["prompt"] for item in items], num_inference_steps=p.steps,
                guidance_scale=p.guidance, width=p.width, height=p.height, generator=generators,
                output_type="pil", **kwargs,
            )
        blocked = getattr(result, "nsfw_content_detected", None) or [False] * len(items)
        return [pool.submit(self._finish, item, image, nsfw)
                for item, image, nsfw in zip(items, result.images, blocked, strict=True)]

    def _finish(self, item: StageItem, image: Any, nsfw: bool) -> None:
        item.outputs["image"] = self._artifact(image, item)
        if nsfw:
            item.flag("the model's safety checker found NSFW content and blacked the image out")

    def _artifact(self, image: Any, item: StageItem) -> ArtifactData:
        p = self.params
        metadata: dict[str, Any] = {
            "prompt": item.inputs["prompt"], "negative_prompt": p.negative_prompt or "", "seed": item.seed,
            "model": p.model, "steps": p.steps, "guidance": p.guidance,
            "scheduler": type(self.pipe.scheduler).__name__, "width": image.width, "height": image.height,
        }
        if self.note:
            metadata["note"] = self.note
        return ArtifactData(png_bytes(image, metadata), ".png", metadata)

    def unload(self) -> None:
        if self.encoders is not None:
            self.encoders.shutdown(wait=True)
            self.encoders = None
        self.pipe = None  # the engine returns the cached GPU memory once the stage has unloaded


def _tune_for_gpu(pipe: Any, compile_model: bool) -> None:
    """Channels-last convolutions (faster under cuDNN in half precision) and, if asked, a compiled
    denoiser. Attention is already PyTorch's SDPA: diffusers' default processor on torch 2."""
    import torch

    for name in ("unet", "vae"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.to(memory_format=torch.channels_last)
    if compile_model:
        name = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
        setattr(pipe, name, torch.compile(getattr(pipe, name), fullgraph=True))


def png_bytes(image: Any, metadata: dict[str, Any]) -> bytes:
    """Encode a PIL image as PNG with `metadata` as text chunks (deterministic: no timestamps)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in metadata.items():
        info.add_text(key, str(value))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _scheduler(current: Any, name: str) -> Any:
    """`name` built from the model's scheduler config; ValueError if the pipeline cannot use it."""
    import diffusers

    compatible = sorted({cls.__name__ for cls in getattr(current, "compatibles", [])} | {type(current).__name__})
    if name not in compatible:
        raise ValueError(f"scheduler '{name}' does not work with this model; it can use: {', '.join(compatible)}")
    return getattr(diffusers, name).from_config(current.config)


def _quiet_progress_bars() -> None:
    """Loading progress bars of diffusers and transformers would garble the run's own progress."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def says_random_weights(folder: Path) -> bool:
    """Whether the folder's README says it holds random weights (the tiny models say so)."""
    readme = folder / "README.md"
    try:
        return "random-weight" in readme.read_text(encoding="utf-8", errors="replace").lower()
    except OSError:
        return False


@hookimpl
def aigc_register_stages() -> list[type[Stage]]:
    return [DiffusionImageStage]
