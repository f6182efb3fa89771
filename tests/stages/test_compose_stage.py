"""`compose.video`: image + voice-over + caption -> an MP4 that ffprobe reads as H.264 yuv420p + AAC, as
long as the audio (within 50 ms) or the `duration` param, with the frame count of its fps, a poster,
and that headless Chromium plays for that long; a caption full of ffmpeg syntax stays text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mp4_checks import ffprobe, video_stream
from typer.testing import CliRunner

from aigc_pipeline.audio import read_wav
from aigc_pipeline.cli import app
from aigc_pipeline.errors import MissingProgramError
from aigc_pipeline.stages.compose import ComposeParams, ComposeVideoStage, wrap

torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")
pytestmark = pytest.mark.slow

PIPELINE = """\
name: ads
inputs: {product: str, tagline: str}
seed: 9
stages:
  hero: {uses: latent.image, with: {model: GAN, scale: 5}}
  voice: {uses: tts, inputs: {text: inputs.product}, with: {backend: stub}}
  ad: {uses: compose.video, inputs: {image: hero.image, audio: voice.audio},
       with: {caption: "{{ tagline }}", fps: 25}}
  fixed: {uses: compose.video, inputs: {image: hero.image, audio: voice.audio, line: inputs.product},
          with: {caption: "{{ line | upper }}", duration: 2.0, fps: 12, width: 96, height: 64, zoom: 1.0}}
outputs: {ad: ad.video, fixed: fixed.video, audio: voice.audio}
"""
ROWS = [{"product": "red running shoe", "tagline": "Run further: 100% comfort, %{pts} 'quoted' \\\\ [x]; a=b"},
        {"product": "teapot", "tagline": "Tea, as it should be"}]


@pytest.fixture(scope="module")
def ads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from aigc_pipeline.generators.dcgan import DCGANGenerator
    from aigc_pipeline.generators.folders import save_generator

    root = tmp_path_factory.mktemp("compose")
    torch.manual_seed(0)
    gan = save_generator(DCGANGenerator(latent_dim=8, image_size=16, channels=3, base_channels=8), root / "gan")
    (root / "p.yaml").write_text(PIPELINE.replace("GAN", str(gan)), encoding="utf-8")
    (root / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    done = CliRunner().invoke(app, ["run", str(root / "p.yaml"), "-i", str(root / "rows.jsonl"),
                                    "-o", str(root / "out"), "-q"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    return root / "out"


def results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]


def test_ad_video_lasts_as_long_as_the_voice_over(ads: Path, browser_play: Any) -> None:
    rows = results(ads)
    assert [row["status"] for row in rows] == ["done", "done"]
    expected = []
    for row in rows:
        ad, audio = row["outputs"]["ad"], read_wav(ads / row["outputs"]["audio"]["path"])[0].duration_s
        probe = ffprobe(ads / ad["path"])
        video = video_stream(probe)
        assert (video["codec_name"], video["pix_fmt"], video["width"], video["height"]) == ("h264", "yuv420p", 80, 80)
        assert int(video["nb_frames"]) == round(audio * 25)
        assert [s["codec_name"] for s in probe["streams"] if s["codec_type"] == "audio"] == ["aac"]
        assert abs(float(probe["format"]["duration"]) - audio) <= 0.05
        assert probe["format"]["tags"]["caption"] == ad["caption"]
        with Image.open(ads / ad["poster"]) as poster:
            assert poster.size == (80, 80)
        expected.append(float(probe["format"]["duration"]))
    assert rows[0]["outputs"]["ad"]["caption"] == ROWS[0]["tagline"]
    played = browser_play(ads, [row["outputs"]["ad"]["path"] for row in rows])
    assert [state >= 2 for state, _ in played] == [True, True]
    assert [duration for _, duration in played] == pytest.approx(expected, abs=0.05)


def test_duration_param_sets_the_length(ads: Path, browser_play: Any) -> None:
    fixed = results(ads)[1]["outputs"]["fixed"]
    probe = ffprobe(ads / fixed["path"])
    video = video_stream(probe)
    assert (video["width"], video["height"], int(video["nb_frames"])) == (96, 64, 24)
    assert float(probe["format"]["duration"]) == pytest.approx(2.0, abs=0.05)
    assert fixed["caption"] == "TEAPOT"
    [(state, duration)] = browser_play(ads, [fixed["path"]])
    assert state >= 2 and duration == pytest.approx(2.0, abs=0.05)


def test_missing_ffmpeg_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingProgramError, match="needs the program 'ffmpeg'.*apt-get install ffmpeg"):
        ComposeVideoStage.preflight(ComposeParams())


def test_captions_wrap_to_the_frame() -> None:
    lines = wrap("a  very long tagline " * 6, width=200, font_size=20).splitlines()
    assert len(lines) > 1 and all(len(line) <= 15 for line in lines)
