"""report.html in a real browser (the system Chromium through Playwright): the mailable bundle of
the marketing demo plays every image, audio and video from a copy moved to another folder; a report
of 10,000 rows opens quickly (the time is printed for the record, never asserted)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from browser_support import browser_page, needs_chromium, screenshot
from typer.testing import CliRunner

from aigc_pipeline.cli import app
from aigc_pipeline.report import BUNDLE_FILE, REPORT_FILE, write_report
from aigc_pipeline.testing import png_bytes

ROOT = Path(__file__).resolve().parent.parent
PLAYS = """async () => {
  const media = Array.from(document.querySelectorAll('#rows audio, #rows video'));
  const played = await Promise.all(media.map(async (el) => {
    el.muted = true;
    try { await el.play(); } catch (error) { return el.tagName + ': ' + error; }
    await new Promise(resolve => setTimeout(resolve, 400));
    el.pause();
    return el.currentTime > 0 && !el.error ? 'ok' : el.tagName + ' did not play';
  }));
  const images = Array.from(document.querySelectorAll('#rows img'));
  return {played, images: images.map(img => img.complete && img.naturalWidth > 0),
          sources: [...media, ...images].map(el => el.src.slice(0, 5))};
}"""


def _plays_everything(page: Any) -> dict[str, Any]:
    found = page.evaluate(PLAYS)
    assert found["played"] and all(result == "ok" for result in found["played"]), found["played"]
    assert found["images"] and all(found["images"]), found["images"]
    assert set(found["sources"]) == {"data:"}  # nothing is fetched from the folder the page came from
    return found


@needs_chromium
@pytest.mark.slow
def test_the_bundle_of_the_marketing_demo_plays_from_another_folder(models_dir: Path, tmp_path: Path) -> None:
    out = models_dir / "out" / "marketing"
    done = CliRunner().invoke(app, ["run", str(ROOT / "pipelines" / "marketing.yaml"), "-i",
                                    str(ROOT / "pipelines" / "data" / "marketing.csv"), "-o", str(out), "-q",
                                    "--limit", "3"])
    assert done.exit_code == 0, done.output
    bundled = CliRunner().invoke(app, ["report", str(out), "--bundle"])
    assert bundled.exit_code == 0 and BUNDLE_FILE in bundled.output, bundled.output
    elsewhere = tmp_path / "mailed" / "marketing-report.html"
    elsewhere.parent.mkdir()
    shutil.move(out / BUNDLE_FILE, elsewhere)
    out.rename(out.with_name("gone"))  # the run's folder is no longer where the page came from
    with browser_page() as page:
        page.goto(elsewhere.as_uri())
        found = _plays_everything(page)
        assert len(found["played"]) >= 3 and len(found["images"]) >= 3  # at least a voice-over and an image per row
        assert page.locator("#random-models").count() == 1  # the tiny models are random: the page says so
        assert page.errors == []


def _video_run(out: Path) -> None:
    """A run folder with a video artifact and its poster, as a video stage writes them."""
    (out / "artifacts" / "clip").mkdir(parents=True)
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc=size=64x64:rate=10", "-t", "1", "-pix_fmt", "yuv420p", "-c:v", "libx264",
                    str(out / "artifacts" / "clip" / "a.video.mp4")], check=True, timeout=60)
    (out / "artifacts" / "clip" / "a.poster.png").write_bytes(png_bytes(2, 2, bytes(range(12))))
    video = {"path": "artifacts/clip/a.video.mp4", "poster": "artifacts/clip/a.poster.png", "fps": 10}
    record = {"row": 0, "line": 1, "status": "done", "outputs": {"caption": "a clip", "video": video}}
    (out / "results.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")


@needs_chromium
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_a_video_and_its_poster_play_from_the_bundle(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _video_run(out)
    moved = tmp_path / "moved.html"
    shutil.move(write_report(out, bundle=True), moved)
    shutil.rmtree(out)
    with browser_page() as page:
        page.goto(moved.as_uri())
        assert page.locator("video[poster^='data:image/png']").count() == 1
        found = _plays_everything(page) if page.locator("#rows img").count() else None
        assert found is None  # no <img> here: check the video alone
        played = page.evaluate(PLAYS)["played"]
        assert played == ["ok"]


def _big_run(out: Path, rows: int) -> None:
    """results.jsonl of `rows` rows (1 in 50 failed, 1 in 40 flagged), each with a text and an image."""
    (out / "artifacts" / "picture").mkdir(parents=True)
    for n in range(8):
        (out / "artifacts" / "picture" / f"{n}.png").write_bytes(png_bytes(32, 32, bytes([n * 30, 90, 160]) * 1024))
    with (out / "results.jsonl").open("w", encoding="utf-8") as handle:
        for row in range(rows):
            failed = row % 50 == 7
            record: dict[str, Any] = {"row": row, "line": row + 2, "status": "failed" if failed else "done",
                                      "outputs": {} if failed else {
                                          "copy": f"Row {row}: a bright and practical product for everyday use.",
                                          "image": {"path": f"artifacts/picture/{row % 8}.png", "width": 32}}}
            if failed:
                record["error"] = {"stage": "copy", "reason": "model said no"}
            if row % 40 == 3:
                record["flags"] = [{"stage": "gate", "reason": "long"}]
            handle.write(json.dumps(record) + "\n")


@needs_chromium
def test_a_report_of_ten_thousand_rows_opens_quickly(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _big_run(out, 10_000)
    timings = {}
    for label, rows in (("default", 1000), ("--rows all", None)):
        path = write_report(out, rows)
        size = path.stat().st_size
        with browser_page() as page:
            started = time.perf_counter()
            page.goto(path.as_uri(), wait_until="load")
            seconds = time.perf_counter() - started
            timings[label] = (seconds, size, page.evaluate("() => window.aigcGallery.cards.length"))
            assert page.locator("#rows .card").count() == 60  # one page at a time
            assert page.locator("#row-count").get_attribute("data-count") == "10000"
            assert page.errors == []
            if rows is not None:
                note = page.locator("#left-out").inner_text()
                assert "aigc report OUT --rows N" in note
                assert "showing 1450 of 10000 rows" in note  # 200 failed + 250 flagged + a sample of 1000
                page.fill("#search", "row 4203:")  # flagged (4203 % 40 == 3), so it is shown
                page.wait_for_function("() => document.getElementById('pager').textContent.startsWith('1–1 of 1')")
                assert page.locator("#rows .card:not([hidden])").count() == 1
                screenshot(page, tmp_path, "report-10k.png")
    for label, (seconds, size, cards) in timings.items():
        print(f"\nreport of 10,000 rows ({label}): {cards} cards, {size / 2**20:.1f} MiB, "
              f"opened in Chromium in {seconds:.2f} s (navigation to the load event)")
    assert timings["default"][2] == 1450 and timings["--rows all"][2] == 10_000
    assert (out / REPORT_FILE).is_file()
