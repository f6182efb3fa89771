"""Checks of the MP4 files the video stages write: ffprobe reads them, headless Chromium plays them."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def ffprobe(path: Path) -> dict[str, Any]:
    """ffprobe's streams and format of `path` (frame counts read from the container)."""
    program = shutil.which("ffprobe")
    if program is None:
        pytest.skip("ffprobe is not installed (scripts/setup.sh installs ffmpeg when run as root)")
    done = subprocess.run([program, "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                          capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def video_stream(probe: dict[str, Any]) -> dict[str, Any]:
    return next(stream for stream in probe["streams"] if stream["codec_type"] == "video")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


def play(browser: Any, root: Path, relpaths: list[str]) -> list[tuple[int, float]]:
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    page = browser.new_page()
    try:
        played = []
        for index, relpath in enumerate(relpaths):  # a page of its own per video: no cached page shows another
            (root / f"play-{index}.html").write_text(f'<video id="v" muted preload="auto" src="{relpath}"></video>')
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/play-{index}.html?{time.time_ns()}")
            page.wait_for_function("(() => { const v = document.getElementById('v'); "
                                   "return v.readyState >= 2 || v.error !== null; })()", timeout=30_000)
            state, duration = page.evaluate("(() => { const v = document.getElementById('v'); "
                                            "return [v.readyState, v.duration]; })()")
            played.append((int(state), float(duration)))
        return played
    finally:
        page.close()
        server.shutdown()
        server.server_close()
