"""`latent.image`: images from a latent-variable generator (DCGAN, conditional DCGAN, VAE decoder).

The model is a folder of `config.json` + `model.safetensors` (huggingface_hub's
`PyTorchModelHubMixin` layout; see `aigc_pipeline.generators`); its architecture comes from the
`architecture:` param or the config's `"architecture"` key, and plugins add architectures through
the `aigc_register_generators` hook. A conditional generator takes its class from `label:` (every
row) or `label_from:` (a row column).

Each image's latent is drawn from N(0, I) by a CPU generator seeded with the row's seed, so it is
the same whatever the batch, order, resume or device. The batch runs through the model in blocks
of a fixed number of rows, padded with zero latents: BLAS takes another path for one to three
rows (a matrix-vector product) and rounds differently, while for a fixed block size a row's
result does not depend on its position or neighbours. So on the CPU an image's bytes are the same
for every batch size, bit for bit (tests/stages/test_latent_stage.py checks 1 and 16).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..content import IMAGE, ArtifactData
from ..devices import Device
from ..errors import ModelUnavailableError
from ..models import find_model, resolve_model, weights_bytes
from ..plugin_manager import hookimpl
from ..stage import DeviceNeeds, Stage, StageItem
from .diffusion import png_bytes, says_random_weights

BLOCK_ROWS = 8  # rows per model call; fixed, so results do not depend on the batch size
ACTIVATION_OVERHEAD = 2.0
ACTIVATION_BYTES = 16 * 2**20
RANDOM_WEIGHTS_NOTE = "random weights: this image is noise from an untrained generator"


class LatentImageParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="a generator folder (config.json + model.safetensors) or a Hugging Face id")
    revision: str | None = Field(None, description="a branch, tag or commit of a Hugging Face model")
    architecture: str | None = Field(None, description="generator architecture (dcgan, conditional_dcgan, "
                                                       "vae_decoder, or a plugin's); default: config.json's")
    label: int | None = Field(None, ge=0, description="class of every image (conditional generators)")
    label_from: str | None = Field(None, description="a column holding each row's class (conditional generators)")
    scale: int = Field(1, ge=1, le=64, description="enlarge the image this many times (nearest pixel)")
    allow_pickle: bool = Field(False, description="allow pickle weights (pytorch_model.bin): they can run code")

    @model_validator(mode="after")
    def _one_label_source(self) -> LatentImageParams:
        if self.label is not None and self.label_from is not None:
            raise ValueError("give either 'label' (one class for every row) or 'label_from' (a column), not both")
        return self


def architecture_of(params: LatentImageParams, folder: Path) -> type[Any]:
    """The architecture class for the folder: the param, else config.json's `architecture`."""
    from ..generators.folders import ARCHITECTURE_KEY, read_config
    from ..generators.registry import find_architecture

    name = params.architecture or read_config(folder, params.model).get(ARCHITECTURE_KEY)
    if not isinstance(name, str) or not name:
        raise ModelUnavailableError(f"model '{params.model}': its config.json names no '{ARCHITECTURE_KEY}'; "
                                    "set the stage's 'architecture:' param (e.g. dcgan, vae_decoder)")
    return find_architecture(name)


class LatentImageStage(Stage[LatentImageParams]):
    type_name = "latent.image"
    description = "Images from a GAN / conditional GAN / VAE decoder; the latent from the row's seed; PNG."
    Params = LatentImageParams
    inputs = {}  # type: ignore[var-annotated]  # the latent comes from the row's seed
    outputs = {"image": IMAGE}
    default_batch_size = 16

    def __init__(self, params: LatentImageParams) -> None:
        super().__init__(params)
        self.model: Any = None
        self.device = "cpu"
        self.note: str | None = None

    @classmethod
    def variables(cls, params: LatentImageParams) -> set[str]:
        return {params.label_from} if params.label_from else set()

    @classmethod
    def preflight(cls, params: LatentImageParams) -> None:
        folder = resolve_model(params.model, params.revision, allow_pickle=params.allow_pickle)
        architecture_of(params, folder)

    @classmethod
    def needs(cls, params: LatentImageParams) -> DeviceNeeds:
        folder = find_model(params.model, params.revision)
        weights = weights_bytes(folder) if folder is not None else 0
        return DeviceNeeds("any", int(weights * ACTIVATION_OVERHEAD) + ACTIVATION_BYTES, "float32")

    def load(self, device: Device) -> None:
        from ..generators.folders import load_generator

        p = self.params
        folder = resolve_model(p.model, p.revision, allow_pickle=p.allow_pickle)
        model = load_generator(folder, architecture_of(p, folder), p.model, allow_pickle=p.allow_pickle)
        conditional = int(getattr(model, "num_classes", 0) or 0) > 0
        if conditional and p.label is None and p.label_from is None:
            raise ModelUnavailableError(f"model '{p.model}' is class-conditional ({model.num_classes} classes): "
                                        "set 'label:' or 'label_from:'")
        if conditional and p.label is not None and p.label >= model.num_classes:
            raise ModelUnavailableError(f"label {p.label} is out of range: model '{p.model}' has "
                                        f"{model.num_classes} classes (0-{model.num_classes - 1})")
        self.device = str(device)
        self.model = model.to(self.device)
        self.note = RANDOM_WEIGHTS_NOTE if says_random_weights(folder) else None

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        labelled = [(item, self._label(item)) for item in batch]
        ready = [(item, label) for item, label in labelled if item.verdict is None]
        for start in range(0, len(ready), BLOCK_ROWS):
            self._generate(ready[start:start + BLOCK_ROWS])
        return batch

    def _label(self, item: StageItem) -> int | None:
        """The item's class (None: unconditional); fails the item when its column value is unusable."""
        classes = int(getattr(self.model, "num_classes", 0) or 0)
        if classes == 0:
            return None
        if self.params.label is not None:
            return self.params.label
        value = item.inputs.get(self.params.label_from or "")
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < classes:
            item.fail(f"'{self.params.label_from}' must be a class number 0-{classes - 1}, got {value!r:.40}")
            return None
        return value

    def _generate(self, rows: list[tuple[StageItem, int | None]]) -> None:
        """One model call on a block of BLOCK_ROWS latents (zeros pad a short block)."""
        import torch

        latent_dim = int(self.model.latent_dim)
        z = torch.zeros(BLOCK_ROWS, latent_dim)
        labels = torch.zeros(BLOCK_ROWS, dtype=torch.long)
        for index, (item, label) in enumerate(rows):
            z[index] = torch.randn(latent_dim, generator=torch.Generator("cpu").manual_seed(item.seed))
            labels[index] = label or 0
        conditional = rows[0][1] is not None
        with torch.inference_mode():
            images = self.model.generate(z.to(self.device), labels.to(self.device) if conditional else None)
        pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
        for index, (item, label) in enumerate(rows):
            item.outputs["image"] = self._artifact(pixels[index], item, label)

    def _artifact(self, pixels: Any, item: StageItem, label: int | None) -> ArtifactData:
        from PIL import Image

        channels, height, width = pixels.shape
        array = pixels[0].numpy() if channels == 1 else pixels.permute(1, 2, 0).numpy()
        image = Image.fromarray(array, "L" if channels == 1 else "RGB")
        if self.params.scale > 1:
            image = image.resize((width * self.params.scale, height * self.params.scale), Image.Resampling.NEAREST)
        metadata: dict[str, Any] = {
            "model": self.params.model, "architecture": type(self.model).architecture, "seed": item.seed,
            "width": image.width, "height": image.height,
        }
        if label is not None:
            metadata["label"] = label
        if self.note:
            metadata["note"] = self.note
        return ArtifactData(png_bytes(image, metadata), ".png", metadata)

    def unload(self) -> None:
        self.model = None  # the engine returns the GPU's cached memory afterwards


@hookimpl
def aigc_register_stages() -> list[type[Stage]]:
    return [LatentImageStage]
