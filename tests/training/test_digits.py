"""`aigc models train-digits`: a short training run saves both generators in the latent.image format,
reports its figures and a grid picture, and pipelines/digits.yaml runs the trained generators.
(The full run's figures, on 2 cores, are in the README; its threshold is checked there, not here:
a two-epoch GAN is not yet a good one.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aigc_pipeline.cli import app

pytest.importorskip("torch")
pytest.importorskip("sklearn")
Image = pytest.importorskip("PIL.Image")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent.parent


def test_train_digits_then_run_the_digits_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    trained = CliRunner().invoke(app, ["models", "train-digits", "models/digits", "--gan-epochs", "2",
                                       "--vae-epochs", "2", "--grid", "grid.png"], catch_exceptions=False)
    assert trained.exit_code == 0, trained.output
    assert "classifier (SVM) accuracy on held-out real digits" in trained.output
    report = json.loads((tmp_path / "models" / "digits" / "report.json").read_text())
    assert report["classifier_accuracy"] > 0.95  # an SVM on real 8x8 digits
    assert (report["train_rows"], report["test_rows"]) == (1437, 360)
    assert 0 <= report["gan_recognised"] <= 1 and len(report["gan_recognised_per_digit"]) == 10
    assert 0 < report["vae_reconstruction_mse"] < 0.2
    for name, architecture in (("digits-cgan", "conditional_dcgan"), ("digits-vae", "vae_decoder")):
        config = json.loads((tmp_path / "models" / "digits" / name / "config.json").read_text())
        assert config["architecture"] == architecture
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == (400, 400)
    shutil.copy(ROOT / "pipelines" / "data" / "digits.csv", tmp_path / "digits.csv")
    ran = CliRunner().invoke(app, ["run", str(ROOT / "pipelines" / "digits.yaml"), "-i", "digits.csv", "-o", "out",
                                   "-q"], catch_exceptions=False)
    assert ran.exit_code == 0, ran.output
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and {row["status"] for row in rows} == {"done"}
    assert [row["outputs"]["gan"]["label"] for row in rows[:10]] == list(range(10))
    with Image.open(tmp_path / "out" / rows[0]["outputs"]["vae"]["path"]) as image:
        assert image.size == (64, 64) and image.mode == "L"
