"""The example pipelines in pipelines/ run end to end through the CLI on the tiny models."""

from __future__ import annotations

import json
import shutil
import wave
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from aigc_pipeline.cli import app

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = ROOT / "pipelines"
CSV_ROWS = [line.split(",") for line in (PIPELINES / "data" / "marketing.csv").read_text().splitlines()[1:]]


def run(*args: str) -> None:
    result = CliRunner().invoke(app, ["run", *args, "-q"])
    assert result.exit_code == 0, result.output


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_marketing_pipeline(models_dir: Path) -> None:
    out = models_dir / "out"
    run(str(PIPELINES / "marketing.yaml"), "-i", str(PIPELINES / "data" / "marketing.csv"), "-o", str(out))
    results = lines(out / "results.jsonl")
    assert len(results) == 8 and {r["status"] for r in results} == {"done"}
    for result in results:
        outputs = result["outputs"]
        assert outputs["copy"]
        with Image.open(out / outputs["image"]["path"]) as image:
            assert image.format == "PNG" and image.size == (64, 64)
        with wave.open(str(out / outputs["audio"]["path"])) as audio:
            assert audio.getnframes() > 0
        assert outputs["audio"]["duration_s"] > 0
        video = outputs["video"]  # the ad video: the hero image, the voice-over, the product as caption
        assert video["path"].endswith(".mp4") and video["width"] == 256 and video["poster"].endswith(".png")
        assert video["duration_s"] == pytest.approx(outputs["audio"]["duration_s"], abs=0.05)
        product, _, features = CSV_ROWS[result["row"]]
        assert video["caption"] == f"{product}: {features.split('|')[0]}"


def test_news_batch_pipeline(models_dir: Path) -> None:
    out = models_dir / "out"
    run(str(PIPELINES / "news_batch.yaml"), "-i", str(PIPELINES / "data" / "news_facts.csv"), "-o", str(out))
    results = lines(out / "results.jsonl")
    groups = lines(out / "groups.jsonl")
    assert len(results) == 8 and all(r["outputs"]["headline"] for r in results)
    assert [g["group"] for g in groups] == ["economy", "sport", "weather", "culture"]
    assert sorted(m for g in groups for m in g["members"]) == list(range(8))
    assert groups[0]["outputs"]["digest"].startswith("Economy digest, 3 stories:")
    assert all(g["outputs"]["intro"] for g in groups)


def test_teaser_pipeline(models_dir: Path, tiny_model: Any) -> None:
    shutil.copytree(tiny_model("video"), models_dir / "models" / "tiny" / "video")
    out = models_dir / "out"
    run(str(PIPELINES / "teaser.yaml"), "-i", str(PIPELINES / "data" / "marketing.csv"), "-o", str(out), "--limit", "2")
    results = lines(out / "results.jsonl")
    assert [r["status"] for r in results] == ["done", "done"]
    clip = results[0]["outputs"]["clip"]
    assert (clip["frames"], clip["fps"], clip["width"]) == (8, 8, 32) and (out / clip["poster"]).is_file()
