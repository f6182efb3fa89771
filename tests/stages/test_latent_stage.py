"""The `latent.image` stage: batch-invariant bytes (batch sizes 1 and 16, and across runs), labels from a
param or a column, pickle weights refused unless allowed, clear errors, and the memory estimate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aigc_pipeline.cli import app
from aigc_pipeline.errors import ModelUnavailableError
from aigc_pipeline.stages.latent import LatentImageParams, LatentImageStage

torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

PIPELINE = """\
name: latent
inputs: {digit: int}
seed: 5
stages:
  gan: {uses: latent.image, batch_size: BATCH, with: {model: CGAN, label_from: digit, scale: 2}}
  vae: {uses: latent.image, batch_size: BATCH, with: {model: VAE}}
outputs: {gan: gan.image, vae: vae.image}
"""


@pytest.fixture(scope="module")
def generators(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Untrained conditional DCGAN and VAE decoder folders, as save_generator writes them."""
    from aigc_pipeline.generators.dcgan import ConditionalDCGANGenerator
    from aigc_pipeline.generators.folders import save_generator
    from aigc_pipeline.generators.vae import VAEDecoder

    root = tmp_path_factory.mktemp("generators")
    torch.manual_seed(0)
    cgan = ConditionalDCGANGenerator(latent_dim=16, num_classes=10, embed_dim=8, base_channels=16)
    for module in cgan.modules():  # non-trivial running statistics, as a trained model has
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return {"cgan": save_generator(cgan, root / "cgan"), "vae": save_generator(VAEDecoder(hidden=32), root / "vae")}


def run(tmp_path: Path, generators: dict[str, Path], batch: int, rows: list[Any], name: str) -> Path:
    text = PIPELINE.replace("BATCH", str(batch)).replace("CGAN", str(generators["cgan"]))
    (tmp_path / "p.yaml").write_text(text.replace("VAE", str(generators["vae"])), encoding="utf-8")
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"digit": d}) + "\n" for d in rows), encoding="utf-8")
    out = tmp_path / name
    done = CliRunner().invoke(app, ["run", str(tmp_path / "p.yaml"), "-i", str(tmp_path / "rows.jsonl"),
                                    "-o", str(out), "-q"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    return out


def results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]


def image_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "artifacts").rglob("*.png"))}


def test_images_are_identical_for_batch_sizes_1_and_16_and_across_runs(tmp_path: Path, generators: Any) -> None:
    digits = [i % 10 for i in range(20)]
    by_16 = run(tmp_path, generators, 16, digits, "b16")
    by_1 = run(tmp_path, generators, 1, digits, "b1")
    again = run(tmp_path, generators, 16, digits, "again")
    assert len(image_bytes(by_16)) == 40
    assert image_bytes(by_16) == image_bytes(by_1) == image_bytes(again)
    first = results(by_16)[3]["outputs"]["gan"]
    assert first["label"] == 3 and first["architecture"] == "conditional_dcgan" and first["width"] == 16
    with Image.open(by_16 / first["path"]) as image:
        assert image.size == (16, 16) and image.mode == "L" and image.info["label"] == "3"
    seeds = {row["outputs"]["vae"]["seed"] for row in results(by_16)}
    assert len(seeds) == 20  # a latent per row, from the row's seed


def test_a_bad_label_fails_its_row_only(tmp_path: Path, generators: Any) -> None:
    out = run(tmp_path, generators, 4, [1, 12, 2], "labels")
    rows = results(out)
    assert [row["status"] for row in rows] == ["done", "failed", "done"]
    assert "'digit' must be a class number 0-9, got 12" in rows[1]["error"]["reason"]


def test_pickle_weights_are_refused_unless_allowed(tmp_path: Path, generators: Any) -> None:
    from aigc_pipeline.generators.vae import VAEDecoder

    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((generators["vae"] / "config.json").read_text())
    torch.save(VAEDecoder(hidden=32).state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ModelUnavailableError, match="pickle"):
        LatentImageStage.preflight(LatentImageParams(model=str(folder)))
    allowed = LatentImageParams(model=str(folder), allow_pickle=True)
    LatentImageStage.preflight(allowed)
    stage = LatentImageStage(allowed)
    from aigc_pipeline.devices import CPU
    from aigc_pipeline.stage import StageItem

    stage.load(CPU)
    items = stage.process([StageItem(0, {}, (1, "vae"))])
    assert items[0].verdict is None and items[0].outputs["image"].suffix == ".png"


def test_errors_name_the_problem(tmp_path: Path, generators: Any) -> None:
    with pytest.raises(ModelUnavailableError, match="unknown generator architecture 'stylegan9'.*dcgan"):
        LatentImageStage.preflight(LatentImageParams(model=str(generators["vae"]), architecture="stylegan9"))
    with pytest.raises(ValueError, match="either 'label'"):
        LatentImageParams(model="x", label=1, label_from="digit")
    stage = LatentImageStage(LatentImageParams(model=str(generators["cgan"])))
    from aigc_pipeline.devices import CPU

    with pytest.raises(ModelUnavailableError, match="class-conditional .*'label:' or 'label_from:'"):
        stage.load(CPU)


def test_needs_counts_the_weights(generators: Any) -> None:
    needs = LatentImageStage.needs(LatentImageParams(model=str(generators["cgan"])))
    assert needs.kind == "any" and needs.memory_bytes > (generators["cgan"] / "model.safetensors").stat().st_size
