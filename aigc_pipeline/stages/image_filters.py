"""`filter.image`: a quality gate on generated images.

Checks the size (minimum width and height), the aspect ratio (width / height within a range),
blankness (a near-uniform image, e.g. the black square a safety checker puts in place of an
image, has a pixel standard deviation below `blank_threshold`) and, optionally, a classifier:
a transformers image-classification model whose score for `label` must stay under `threshold`
(run once per micro-batch). A failing image is dropped (filtered, with every reason recorded)
or, with `on_fail: flag`, passed on with the reasons attached as flags. An image that cannot be
read fails the item. The image itself passes through unchanged.

Pillow and transformers are imported in `load` / `process` only.
"""

from __future__ import annotations

import io
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..content import IMAGE, Artifact, ArtifactData
from ..devices import Device
from ..errors import ModelUnavailableError
from ..models import memory_estimate, resolve_model
from ..plugin_manager import hookimpl
from ..stage import DeviceNeeds, Stage, StageItem
from .diffusion import ACTIVATION_OVERHEAD


class ClassifierCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="a local image-classification model folder or a Hugging Face id")
    label: str = Field(min_length=1, description="the label whose score fails an image, e.g. 'nsfw'")
    threshold: float = Field(0.5, ge=0, le=1, description="an image fails when the label's score is at least this")
    revision: str | None = Field(None, description="a branch, tag or commit of a Hugging Face model")
    trust_remote_code: bool = Field(False, description="allow the model folder's own Python code to run")
    allow_pickle: bool = Field(False, description="allow pickle weights (.bin): they can run code")


class ImageFilterParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_width: int | None = Field(None, ge=1, description="minimum width in pixels")
    min_height: int | None = Field(None, ge=1, description="minimum height in pixels")
    min_aspect: float | None = Field(None, gt=0, description="minimum width / height")
    max_aspect: float | None = Field(None, gt=0, description="maximum width / height")
    blank_threshold: float | None = Field(
        2.0, ge=0, description="an image whose pixel standard deviation (0-255, the largest over the colour "
                               "channels) is below this is blank; null turns the check off")
    classifier: ClassifierCheck | None = Field(None, description="a classifier score check, e.g. NSFW")
    on_fail: Literal["drop", "flag"] = "drop"

    @model_validator(mode="after")
    def _ranges(self) -> ImageFilterParams:
        if self.min_aspect is not None and self.max_aspect is not None and self.min_aspect > self.max_aspect:
            raise ValueError(f"min_aspect ({self.min_aspect}) is greater than max_aspect ({self.max_aspect})")
        return self


class ImageFilterStage(Stage[ImageFilterParams]):
    type_name = "filter.image"
    description = "Quality gate on images: size, aspect ratio, blank images, a classifier score; drop or flag."
    Params = ImageFilterParams
    inputs = {"image": IMAGE}
    outputs = {"image": IMAGE}
    default_batch_size = 16

    def __init__(self, params: ImageFilterParams) -> None:
        super().__init__(params)
        self.classifier: Any = None

    @classmethod
    def preflight(cls, params: ImageFilterParams) -> None:
        check = params.classifier
        if check is not None:
            folder = resolve_model(check.model, check.revision, allow_pickle=check.allow_pickle)
            labels = _labels(folder)
            if labels and check.label not in labels:
                raise ModelUnavailableError(
                    f"classifier '{check.model}' has no label '{check.label}'; its labels: {', '.join(labels)}"
                )

    @classmethod
    def needs(cls, params: ImageFilterParams) -> DeviceNeeds:
        check = params.classifier
        if check is None:
            return DeviceNeeds()
        return DeviceNeeds("any", memory_estimate(check.model, check.revision, headroom=ACTIVATION_OVERHEAD))

    def load(self, device: Device) -> bool | None:
        check = self.params.classifier
        if check is None:
            return False  # no model: the run counts no load
        from transformers import pipeline
        from transformers.utils import logging

        logging.disable_progress_bar()
        folder = resolve_model(check.model, check.revision, allow_pickle=check.allow_pickle)
        self.classifier = pipeline(
            "image-classification", model=str(folder), device=str(device),
            trust_remote_code=check.trust_remote_code,
            model_kwargs={"use_safetensors": None if check.allow_pickle else True},
        )
        return None

    def unload(self) -> None:
        self.classifier = None

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        readable: list[tuple[StageItem, Any]] = []
        for item in batch:
            try:
                readable.append((item, _open(item.inputs["image"])))
            except Exception as exc:  # Pillow raises many types for a broken file
                item.fail(f"cannot read the image {_name(item.inputs['image'])}: {type(exc).__name__}: {exc}")
        scores = self._scores([image for _, image in readable])
        for (item, image), score in zip(readable, scores, strict=True):
            self._judge(item, self.reasons(image, score))
        return batch

    def _judge(self, item: StageItem, reasons: list[str]) -> None:
        if reasons and self.params.on_fail == "drop":
            item.drop("; ".join(reasons))
            return
        for reason in reasons:
            item.flag(reason)
        item.outputs["image"] = item.inputs["image"]

    def reasons(self, image: Any, score: float | None = None) -> list[str]:
        """Every reason `image` (a PIL image) fails this gate; `score` is its classifier score."""
        p, found = self.params, []
        width, height = image.size
        if p.min_width is not None and width < p.min_width:
            found.append(f"too narrow: width {width} < min_width {p.min_width}")
        if p.min_height is not None and height < p.min_height:
            found.append(f"too short: height {height} < min_height {p.min_height}")
        aspect = width / height if height else 0.0
        if p.min_aspect is not None and aspect < p.min_aspect:
            found.append(f"aspect ratio {aspect:.3g} < min_aspect {p.min_aspect:g}")
        if p.max_aspect is not None and aspect > p.max_aspect:
            found.append(f"aspect ratio {aspect:.3g} > max_aspect {p.max_aspect:g}")
        if p.blank_threshold is not None:
            spread = pixel_spread(image)
            if spread < p.blank_threshold:
                found.append(f"blank image: pixel standard deviation {spread:.2f} "
                             f"< blank_threshold {p.blank_threshold:g}")
        check = p.classifier
        if check is not None and score is not None and score >= check.threshold:
            found.append(f"classifier: '{check.label}' score {score:.3f} >= threshold {check.threshold:g}")
        return found

    def _scores(self, images: list[Any]) -> list[float | None]:
        """The classifier's score for the configured label, per image (None without a classifier)."""
        check = self.params.classifier
        if check is None or self.classifier is None or not images:
            return [None] * len(images)
        import torch

        with torch.inference_mode():
            answers = self.classifier([image.convert("RGB") for image in images], top_k=None, batch_size=len(images))
        return [next((a["score"] for a in answer if a["label"] == check.label), 0.0) for answer in answers]


def _open(value: Any) -> Any:
    """A loaded PIL image from an `Artifact` (a file the run wrote) or `ArtifactData` (bytes)."""
    from PIL import Image

    if isinstance(value, Artifact):
        source: Any = value.path
    elif isinstance(value, ArtifactData):
        source = io.BytesIO(value.data)
    else:
        raise TypeError(f"expected an image artifact, got {type(value).__name__}")
    image = Image.open(source)
    image.load()  # decode now: a truncated file fails here, on this item
    return image


def _name(value: Any) -> str:
    return value.relpath if isinstance(value, Artifact) else f"({type(value).__name__})"


def pixel_spread(image: Any) -> float:
    """The largest per-channel standard deviation of the pixel values (0-255): 0 for one flat colour."""
    from PIL import ImageStat

    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return float(max(ImageStat.Stat(rgb).stddev))


def _labels(folder: Any) -> list[str]:
    """The labels in a transformers config.json (empty when it has none or cannot be read)."""
    import json

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [str(label) for label in (config.get("id2label") or {}).values()]


@hookimpl
def aigc_register_stages() -> list[type[Stage]]:
    return [ImageFilterStage]
