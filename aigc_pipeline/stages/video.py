"""`diffusion.video`: text-to-video with a diffusers pipeline, one MP4 (H.264, yuv420p) per row.

The model is any diffusers text-to-video folder or Hugging Face id that `DiffusionPipeline`
loads (ModelScope's `damo-vilab/text-to-video-ms-1.7b`, and pipelines whose call takes `prompt`,
`num_frames`, `height`, `width`, `generator` and `output_type`: LTX-Video, Wan, CogVideoX);
`aigc models make-tiny DIR --only video` builds a tiny random-weight one offline. Safetensors only
unless `allow_pickle`, the folder's own code only with `trust_remote_code`.

Each row is one pipeline call with its own CPU generator seeded with the row's seed, so a video
does not depend on its batch. Frames are encoded by PyAV (libx264, yuv420p, `fps`), with the
prompt, seed, model and settings as MP4 tags; the first frame is attached as a PNG poster (its
path is the video's `poster` metadata). torch, diffusers and PyAV are imported on use only.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..content import TEXT, VIDEO, ArtifactData
from ..devices import Device
from ..models import dtype_keyword, memory_estimate, resolve_model
from ..mp4 import encode_frames
from ..plugin_manager import hookimpl
from ..stage import DeviceNeeds, Stage, StageItem
from .diffusion import (
    ACTIVATION_OVERHEAD,
    DTYPE_BYTES,
    Dtype,
    _quiet_progress_bars,
    png_bytes,
    says_random_weights,
)

FEATURE_BYTES_PER_PIXEL = 512  # decoding: ~128 float32 feature channels per output pixel and frame
RANDOM_WEIGHTS_NOTE = "random weights: this video is noise from a tiny test model"


class VideoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="a local diffusers text-to-video folder or a Hugging Face id, e.g. "
                                   "'damo-vilab/text-to-video-ms-1.7b'")
    revision: str | None = Field(None, description="a branch, tag or commit of a Hugging Face model")
    dtype: Dtype = Field("auto", description="weights dtype; auto: float16 on a GPU, float32 on the CPU")
    steps: int = Field(25, ge=1, le=1000, description="denoising steps")
    guidance: float = Field(9.0, ge=0, le=50, description="classifier-free guidance scale (<= 1 turns it off)")
    frames: int = Field(16, ge=1, le=1024, description="frames per video")
    fps: int = Field(8, ge=1, le=120, description="frames per second of the MP4")
    width: int = Field(256, ge=8, le=4096, multiple_of=8, description="frame width in pixels, a multiple of 8")
    height: int = Field(256, ge=8, le=4096, multiple_of=8, description="frame height in pixels, a multiple of 8")
    negative_prompt: str | None = Field(None, description="what the videos should not show (every row)")
    crf: int = Field(18, ge=0, le=51, description="H.264 quality: 0 lossless, 18 visually clean, 51 worst")
    trust_remote_code: bool = Field(False, description="allow a model folder's own Python code to run")
    allow_pickle: bool = Field(False, description="allow pickle weights (.bin, .ckpt): they can run code")


class DiffusionVideoStage(Stage[VideoParams]):
    type_name = "diffusion.video"
    description = "Text-to-video with a diffusers pipeline; MP4 (H.264) with its settings and a poster frame."
    Params = VideoParams
    inputs = {"prompt": TEXT}
    outputs = {"video": VIDEO}
    default_batch_size = 1

    def __init__(self, params: VideoParams) -> None:
        super().__init__(params)
        self.pipe: Any = None
        self.note: str | None = None

    @classmethod
    def preflight(cls, params: VideoParams) -> None:
        resolve_model(params.model, params.revision, allow_pickle=params.allow_pickle)

    @classmethod
    def needs(cls, params: VideoParams) -> DeviceNeeds:
        decoding = params.frames * params.width * params.height * FEATURE_BYTES_PER_PIXEL
        memory = memory_estimate(params.model, params.revision, dtype_bytes=DTYPE_BYTES[params.dtype],
                                 headroom=ACTIVATION_OVERHEAD, extra_bytes=decoding)
        return DeviceNeeds("any", memory, None if params.dtype == "auto" else params.dtype)

    def load(self, device: Device) -> None:
        import torch
        from diffusers import DiffusionPipeline

        _quiet_progress_bars()
        p = self.params
        folder = resolve_model(p.model, p.revision, allow_pickle=p.allow_pickle)
        dtype = torch.float16 if p.dtype == "auto" and device.is_gpu else getattr(torch, p.dtype, torch.float32)
        pipe = DiffusionPipeline.from_pretrained(
            str(folder), **{dtype_keyword("diffusers"): dtype}, use_safetensors=None if p.allow_pickle else True,
            trust_remote_code=p.trust_remote_code,
        )
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(str(device))
        self.note = RANDOM_WEIGHTS_NOTE if says_random_weights(folder) else None

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:  # one call per video: memory-bound, and no batch neighbours to depend on
            item.outputs["video"] = self._video(item)
        return batch

    def _video(self, item: StageItem) -> ArtifactData:
        import numpy as np
        import torch

        p = self.params
        kwargs: dict[str, Any] = {"negative_prompt": p.negative_prompt} if p.negative_prompt else {}
        with torch.inference_mode():
            result = self.pipe(
                prompt=item.inputs["prompt"], num_frames=p.frames, num_inference_steps=p.steps,
                guidance_scale=p.guidance, width=p.width, height=p.height,
                generator=torch.Generator("cpu").manual_seed(item.seed), output_type="np", **kwargs,
            )
        frames = np.asarray(result.frames[0], dtype=np.float32)
        pixels = (frames.clip(0, 1) * 255).round().astype(np.uint8)
        metadata = self._metadata(item, pixels)
        poster = ArtifactData(png_bytes(_image(pixels[0]), metadata), ".png", metadata)
        return ArtifactData(encode_frames(pixels, p.fps, metadata, p.crf), ".mp4", metadata, {"poster": poster})

    def _metadata(self, item: StageItem, pixels: Any) -> dict[str, Any]:
        p = self.params
        count, height, width, _ = pixels.shape
        metadata: dict[str, Any] = {
            "prompt": item.inputs["prompt"], "negative_prompt": p.negative_prompt or "", "seed": item.seed,
            "model": p.model, "steps": p.steps, "guidance": p.guidance, "frames": count, "fps": p.fps,
            "width": width, "height": height, "duration_s": round(count / p.fps, 3),
        }
        if self.note:
            metadata["note"] = self.note
        return metadata

    def unload(self) -> None:
        self.pipe = None  # the engine returns the GPU's cached memory afterwards


def _image(pixels: Any) -> Any:
    from PIL import Image

    return Image.fromarray(pixels, "RGB")


@hookimpl
def aigc_register_stages() -> list[type[Stage]]:
    return [DiffusionVideoStage]
