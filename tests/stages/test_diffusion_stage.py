"""The `diffusion.image` stage on the tiny Stable-Diffusion-style model: end to end through the
CLI (template -> diffusion.image -> filter.image), seeds, batch sizes, PNG metadata, checked
params, pickle weights refused, and the memory estimate."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aigc_pipeline.cli import app
from aigc_pipeline.engine import Engine
from aigc_pipeline.errors import ModelUnavailableError, PipelineFileError
from aigc_pipeline.row_identity import row_identity
from aigc_pipeline.stage import item_seed
from aigc_pipeline.stages.diffusion import DiffusionImageStage, DiffusionParams, _scheduler

pytest.importorskip("diffusers")
Image = pytest.importorskip("PIL.Image")
pytestmark = pytest.mark.slow

PRODUCTS = ["red running shoe", "espresso machine", "wool sweater", "olive oil", "headphones", "desk lamp",
            "leather wallet", "green teapot"]
PIPELINE = """\
name: hero_images
inputs: {product: str}
seed: 11
stages:
  prompt: {uses: template, with: {template: "a studio photo of {{ product }}"}}
  hero: {uses: diffusion.image, inputs: {prompt: prompt.text}, batch_size: BATCH,
         with: {model: MODEL, steps: 2, width: 64, height: 48, negative_prompt: blurry, batch_invariant: INVARIANT}}
  checked: {uses: filter.image, inputs: {image: hero.image},
            with: {min_width: 64, classifier: {model: CLASSIFIER, label: nsfw, threshold: 0.0}, on_fail: flag}}
outputs: {image: checked.image, prompt: prompt.text}
"""


def aigc(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def pipeline_text(batch: int, model: str, classifier: str, invariant: bool = False) -> str:
    text = PIPELINE.replace("BATCH", str(batch)).replace("MODEL", model).replace("CLASSIFIER", classifier)
    return text.replace("INVARIANT", str(invariant).lower())


def flat(text: str) -> str:
    return " ".join(text.split())


def results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("diffusion-rows") / "rows.jsonl"
    path.write_text("".join(json.dumps({"product": p}) + "\n" for p in PRODUCTS), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def runs(tiny_model: Any, rows: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """CLI runs of the same pipeline over the 8 rows: batch size 8 twice, then batch size 1; and with
    `batch_invariant` at batch sizes 8 and 1."""
    base = tmp_path_factory.mktemp("diffusion-runs")
    model, classifier = str(tiny_model("sd")), str(tiny_model("image-classifier"))
    outs = {}
    for name, batch, invariant in (("first", 8, False), ("again", 8, False), ("one_by_one", 1, False),
                                   ("invariant", 8, True), ("invariant_one_by_one", 1, True)):
        pipeline = base / f"{name}.yaml"
        pipeline.write_text(pipeline_text(batch, model, classifier, invariant), encoding="utf-8")
        outs[name] = base / name
        result = aigc("run", str(pipeline), "-i", str(rows), "-o", str(outs[name]), "--device", "cpu", "-q")
        assert result.exit_code == 0, result.output
    return outs


def png(out: Path, row: int) -> Path:
    return out / "artifacts" / "hero" / f"{identity(row)}.image.png"


def identity(row: int) -> str:
    """A row's identity (artifact names and seeds derive from it): a hash of its input values."""
    return row_identity({"product": PRODUCTS[row]})


def test_every_row_gets_a_png_of_the_requested_size_with_its_settings(runs: dict[str, Path], tiny_model: Any) -> None:
    records = results(runs["first"])
    assert [r["status"] for r in records] == ["done"] * len(PRODUCTS)
    for row, (record, product) in enumerate(zip(records, PRODUCTS, strict=True)):
        settings = {
            "prompt": f"a studio photo of {product}", "negative_prompt": "blurry",
            "seed": item_seed(11, identity(row), "hero"),
            "model": str(tiny_model("sd")), "steps": 2, "guidance": 7.5, "scheduler": "PNDMScheduler",
            "width": 64, "height": 48, "note": "random weights: this image is noise from a tiny test model",
        }
        # results.jsonl: the image's path and settings (filter.image passed the artifact on), the prompt
        assert record["outputs"] == {"image": {"path": f"artifacts/hero/{identity(row)}.image.png", **settings},
                                     "prompt": f"a studio photo of {product}"}
        # the classifier check ran on every image; threshold 0 flags them all, with the score
        assert record["flags"][0]["stage"] == "checked"
        assert record["flags"][0]["reason"].startswith("classifier: 'nsfw' score ")
        with Image.open(png(runs["first"], row)) as image:  # the same settings as PNG text chunks
            assert image.format == "PNG" and image.size == (64, 48) and image.mode == "RGB"
            assert image.text == {key: str(value) for key, value in settings.items()}
    pixels = {Image.open(png(runs["first"], row)).tobytes() for row in range(len(PRODUCTS))}
    assert len(pixels) == len(PRODUCTS)  # every row its own seed, its own image


def test_the_same_seed_gives_the_same_bytes_in_another_run(runs: dict[str, Path]) -> None:
    for row in range(len(PRODUCTS)):
        assert png(runs["first"], row).read_bytes() == png(runs["again"], row).read_bytes(), row


def test_batch_size_does_not_change_an_image_beyond_rounding(runs: dict[str, Path]) -> None:
    """By default the 8 rows go through one pipeline call at batch size 8 and through 8 calls at
    batch size 1. Each item has its own generator, so its noise does not depend on its batch, but
    batched kernels (oneDNN here) round differently per batch size: after the VAE a pixel value
    may land one level apart, on a tiny fraction of the pixels. Identical bytes take
    `batch_invariant` (below)."""
    for row in range(len(PRODUCTS)):
        with Image.open(png(runs["first"], row)) as a, Image.open(png(runs["one_by_one"], row)) as b:
            assert a.text == b.text
            differ = [abs(x - y) for x, y in zip(a.tobytes(), b.tobytes(), strict=True) if x != y]
        assert max(differ, default=0) <= 1, row
        assert len(differ) <= 0.001 * 64 * 48 * 3, row


def test_batch_invariant_gives_the_same_bytes_at_batch_sizes_8_and_1(runs: dict[str, Path]) -> None:
    """One pipeline call per image inside the micro-batch: the PNG files, pixels and settings are
    those of a batch-size-1 run, with or without the flag (it changes nothing else)."""
    for row in range(len(PRODUCTS)):
        batched = png(runs["invariant"], row).read_bytes()
        assert batched == png(runs["invariant_one_by_one"], row).read_bytes(), row
        assert batched == png(runs["one_by_one"], row).read_bytes(), row
        with Image.open(png(runs["invariant"], row)) as a, Image.open(png(runs["one_by_one"], row)) as b:
            assert a.tobytes() == b.tobytes() and a.text == b.text, row
    assert results(runs["invariant"]) == results(runs["one_by_one"])


# ----------------------------------------------------------------- params, checked before anything loads


def load_error(stage_with: str, model: str = "some/model") -> str:
    stage = f"{{uses: diffusion.image, inputs: {{prompt: inputs.p}}, with: {{model: {model}, {stage_with}}}}}"
    text = f"name: t\ninputs: {{p: str}}\nstages:\n  hero: {stage}\n"
    with pytest.raises(PipelineFileError) as caught:
        Engine().load_text(text, "t.yaml")
    return str(caught.value)


def test_an_unknown_scheduler_is_rejected_with_the_choices_and_a_suggestion() -> None:
    message = load_error("scheduler: EulerScheduler")
    assert message.startswith("t.yaml:4:")
    assert "stage 'hero': scheduler: Input should be 'DDIMScheduler', " in message
    assert "(got 'EulerScheduler'); did you mean 'EulerDiscreteScheduler'" in message


def test_sizes_must_be_multiples_of_8_and_unknown_keys_are_errors() -> None:
    assert "width: Input should be a multiple of 8 (got 100)" in load_error("width: 100")
    assert "height: Input should be a multiple of 8 (got 60)" in load_error("height: 60")
    assert "unknown key 'guidance_scale'; did you mean 'guidance'?" in load_error("guidance_scale: 3")


def test_a_scheduler_the_model_cannot_use_is_refused_at_load() -> None:
    class FlowOnly:
        compatibles: list[type] = []
        config: dict[str, Any] = {}

    with pytest.raises(ValueError, match="'DDIMScheduler' does not work with this model; it can use: FlowOnly"):
        _scheduler(FlowOnly(), "DDIMScheduler")


def test_pickle_only_weights_are_refused_before_any_row(tiny_model: Any, rows: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model("sd"), folder)
    unet = folder / "unet" / "diffusion_pytorch_model.safetensors"
    unet.rename(unet.with_suffix(".bin"))
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(pipeline_text(4, str(folder), str(folder)))
    result = aigc("run", str(pipeline), "-i", str(rows), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "stage 'hero' (diffusion.image): model" in flat(result.output)
    assert "has pickle weights only (unet/diffusion_pytorch_model.bin)" in flat(result.output)
    assert "allow_pickle: true" in flat(result.output)
    assert not (tmp_path / "out" / "artifacts").exists()
    DiffusionImageStage.preflight(DiffusionParams(model=str(folder), allow_pickle=True))  # the user's explicit choice
    with pytest.raises(ModelUnavailableError, match="no such folder"):
        DiffusionImageStage.preflight(DiffusionParams(model=str(tmp_path / "missing")))


# ----------------------------------------------------------------- the stage on its own


def test_needs_estimate_memory_from_the_safetensors_headers(tiny_model: Any) -> None:
    import torch
    from diffusers import AutoPipelineForText2Image

    model = str(tiny_model("sd"))
    needs = DiffusionImageStage.needs(DiffusionParams(model=model))
    full = DiffusionImageStage.needs(DiffusionParams(model=model, dtype="float32"))
    pipe = AutoPipelineForText2Image.from_pretrained(model, use_safetensors=True)
    parameters = sum(p.numel() for part in (pipe.unet, pipe.vae, pipe.text_encoder) for p in part.parameters())
    assert needs.kind == "any" and needs.dtype is None and full.dtype == "float32"
    assert needs.memory_bytes == int(parameters * 2 * 1.2)  # float16 on a GPU, plus activations
    assert full.memory_bytes == int(parameters * 4 * 1.2)
    assert DiffusionImageStage.needs(DiffusionParams(model="nobody/not-cached")).memory_bytes == 0
    assert torch.float32 == pipe.unet.dtype


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # diffusers on numpy 2
def test_another_scheduler_and_no_guidance(tiny_model: Any) -> None:
    from aigc_pipeline.devices import CPU
    from aigc_pipeline.stage import StageItem

    params = DiffusionParams(model=str(tiny_model("sd")), steps=2, width=32, height=32, guidance=1.0,
                             scheduler="DPMSolverMultistepScheduler")
    stage = DiffusionImageStage(params)
    stage.load(CPU)
    try:
        items = stage.process([StageItem(i, {"prompt": "a lamp"}, (5, "hero")) for i in range(2)])
    finally:
        stage.unload()
    first, second = (item.outputs["image"] for item in items)
    assert first.suffix == ".png" and first.metadata["scheduler"] == "DPMSolverMultistepScheduler"
    assert first.metadata["seed"] == item_seed(5, 0, "hero") and first.metadata["negative_prompt"] == ""
    assert first.data != second.data  # same prompt, different seeds
    assert stage.pipe is None


def test_importing_the_stage_and_tiny_modules_is_light() -> None:
    code = ("import sys, aigc_pipeline.stages.diffusion, aigc_pipeline.stages.image_filters, "
            "aigc_pipeline.tiny.diffusion, aigc_pipeline.tiny.image_classifier\n"
            "print(sorted({'torch', 'diffusers', 'transformers', 'PIL'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
