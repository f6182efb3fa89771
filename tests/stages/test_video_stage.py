"""`diffusion.video` on the tiny random-weight text-to-video pipeline: MP4s that ffprobe reads as H.264
yuv420p of the asked size, frame count and duration, that headless Chromium plays, with the prompt,
seed and model as tags, a PNG poster, the same bytes on a second run, and a memory estimate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mp4_checks import ffprobe, video_stream
from typer.testing import CliRunner

from aigc_pipeline.cli import app
from aigc_pipeline.stages.video import DiffusionVideoStage, VideoParams

pytest.importorskip("diffusers")
pytest.importorskip("av")
Image = pytest.importorskip("PIL.Image")
pytestmark = pytest.mark.slow

PIPELINE = """\
name: clips
inputs: {product: str}
seed: 3
stages:
  prompt: {uses: template, with: {template: "a short clip of {{ product }}"}}
  clip: {uses: diffusion.video, inputs: {prompt: prompt.text},
         with: {model: MODEL, steps: 2, frames: 6, fps: 4, width: 32, height: 24}}
outputs: {clip: clip.video}
"""


def run(tmp_path: Path, model: Path, name: str) -> list[dict[str, Any]]:
    (tmp_path / "p.yaml").write_text(PIPELINE.replace("MODEL", str(model)), encoding="utf-8")
    (tmp_path / "rows.csv").write_text("product\nred shoe\nteapot\n", encoding="utf-8")
    done = CliRunner().invoke(app, ["run", str(tmp_path / "p.yaml"), "-i", str(tmp_path / "rows.csv"),
                                    "-o", str(tmp_path / name), "-q"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    lines = (tmp_path / name / "results.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_videos_are_h264_mp4s_that_chromium_plays(tmp_path: Path, tiny_model: Any, browser_play: Any) -> None:
    rows = run(tmp_path, tiny_model("video"), "out")
    assert [row["status"] for row in rows] == ["done", "done"]
    clips = [row["outputs"]["clip"] for row in rows]
    for clip in clips:
        probe = ffprobe(tmp_path / "out" / clip["path"])
        stream = video_stream(probe)
        assert (stream["codec_name"], stream["pix_fmt"]) == ("h264", "yuv420p")
        assert (stream["width"], stream["height"]) == (32, 24)
        assert int(stream["nb_frames"]) == 6
        assert float(probe["format"]["duration"]) == pytest.approx(1.5, abs=0.01)
        tags = probe["format"]["tags"]
        assert tags["prompt"] == clip["prompt"] and tags["seed"] == str(clip["seed"]) and tags["model"] == clip["model"]
        assert "random weights" in tags["note"]
        with Image.open(tmp_path / "out" / clip["poster"]) as poster:
            assert poster.size == (32, 24) and poster.info["seed"] == str(clip["seed"])
    assert clips[0]["seed"] != clips[1]["seed"]
    played = browser_play(tmp_path / "out", [clip["path"] for clip in clips])
    assert all(state >= 2 and duration == pytest.approx(1.5, abs=0.05) for state, duration in played), played
    again = run(tmp_path, tiny_model("video"), "again")
    assert [(tmp_path / "again" / r["outputs"]["clip"]["path"]).read_bytes() for r in again] == \
        [(tmp_path / "out" / clip["path"]).read_bytes() for clip in clips]


def test_needs_grow_with_frames_and_size(tiny_model: Any) -> None:
    model = str(tiny_model("video"))
    small = DiffusionVideoStage.needs(VideoParams(model=model, frames=8, width=64, height=64))
    large = DiffusionVideoStage.needs(VideoParams(model=model, frames=32, width=256, height=256))
    assert small.kind == "any" and 0 < small.memory_bytes < large.memory_bytes
    assert large.memory_bytes - small.memory_bytes == (32 * 256 * 256 - 8 * 64 * 64) * 512
