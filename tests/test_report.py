"""report.html: summary, per-stage table, a card per row and per group, escaped user data; opened
in a real headless Chromium when one is installed (scripts/setup.sh installs it as root)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aigc_pipeline.cli import app
from aigc_pipeline.report import REPORT_FILE
from aigc_pipeline.testing import run_text

XSS = '<script>alert(1)</script><img src=x onerror="document.title=\'pwned\'">'
PIPELINE = """
name: report_demo
inputs: {topic: str, text: str}
seed: 5
stages:
  prompt: {uses: template, with: {template: "about {{ text }}"}}
  gate: {uses: filter.text, inputs: {text: prompt.text}, with: {blocklist: [banned]}}
  check: {uses: test.raise_on, inputs: {text: gate.text}, with: {needle: boom}}
  picture: {uses: test.image, inputs: {text: check.text}, with: {size: 16}}
  voice: {uses: tts, inputs: {text: check.text}, with: {backend: stub, sample_rate: 8000}}
  digest: {uses: aggregate, inputs: {line: check.text}, with: {group_by: topic, template: "{{ key }}: {{ count }}"}}
outputs: {text: check.text, image: picture.image, audio: voice.audio, digest: digest.text}
"""
ROWS: list[dict[str, Any]] = [
    {"topic": "a", "text": "sun"}, {"topic": "a", "text": XSS}, {"topic": "b", "text": "banned word"},
    {"topic": "b", "text": "boom"}, {"topic": "b", "text": "moon"}, {"wrong": 1},
]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report") / "out"
    result = run_text(PIPELINE, ROWS, folder)
    assert result.summary.counts == {"done": 3, "filtered": 1, "failed": 1, "rejected": 1, "not_run": 0}
    return folder


def test_the_report_shows_every_row_stage_and_group(out: Path) -> None:
    page = (out / REPORT_FILE).read_text(encoding="utf-8")
    assert 'id="row-count" data-count="6"' in page
    assert page.count('<article class="card ') == 6 + 2  # six rows, two groups
    for status in ("done", "filtered", "failed", "rejected"):
        assert f'data-status="{status}"' in page
    assert "found &#x27;boom&#x27; in row 3" in page and "blocked term(s): banned" in page
    assert page.count("<img src=") == 3 and page.count("<audio controls") == 3
    for stage in ("prompt", "gate", "check", "picture", "voice", "digest"):
        assert f"<td>{stage}</td>" in page
    assert '<section id="groups"><h2>groups (2)</h2>' in page


def test_row_values_are_escaped(out: Path) -> None:
    page = (out / REPORT_FILE).read_text(encoding="utf-8")
    assert XSS not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert len(re.findall(r"<script\b", page)) == 1  # the report's own, with its CSP nonce


def test_aigc_report_rebuilds_it(out: Path) -> None:
    (out / REPORT_FILE).unlink()
    done = CliRunner().invoke(app, ["report", str(out)])
    assert done.exit_code == 0, done.output
    assert (out / REPORT_FILE).is_file()
    missing = CliRunner().invoke(app, ["report", str(out / "nothing")])
    assert missing.exit_code == 2 and "results.jsonl" in missing.output


@pytest.mark.skipif(CHROMIUM is None,
                    reason="chromium is not installed (scripts/setup.sh installs it when run as root)")
def test_the_report_opens_in_a_headless_browser(out: Path, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}",
             "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]
    url = (out / REPORT_FILE).resolve().as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="row-count" data-count="6"' in dom.stdout
    loaded = re.search(r'id="images-loaded" data-loaded="(\d+)" data-total="(\d+)"', dom.stdout)
    assert loaded and loaded.groups() == ("3", "3"), loaded  # the report's script ran; every image decoded
    assert "<title>aigc report: report_demo</title>" in dom.stdout  # the payload's onerror never ran
    errors = [line for line in dom.stderr.splitlines()
              if "Uncaught" in line or "Refused to" in line or ("CONSOLE" in line and "error" in line.lower())]
    assert errors == []
    shot = out / "report.png"  # kept with the run, for a look
    done = subprocess.run([*flags, "--window-size=1280,1600", f"--screenshot={shot}", url],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and shot.read_bytes().startswith(b"\x89PNG"), done.stderr[-2000:]
