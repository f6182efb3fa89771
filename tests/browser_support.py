"""A real headless Chromium for the review and report tests: the system's (scripts/setup.sh
installs it), driven by Playwright, never a downloaded browser. Tests skip without one."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]
# Screenshots for docs/ are written only when asked: AIGC_DOCS_SCREENSHOTS=1 pytest tests/review
DOCS = Path(__file__).resolve().parents[1] / "docs"
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh installs it)")


@contextmanager
def browser_page(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A Playwright page in the system Chromium; console errors are collected on `page.errors`."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.errors = []
            page.on("console", lambda message: page.errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: page.errors.append(str(error)))
            yield page
        finally:
            browser.close()


def screenshot(page: Any, folder: Path, name: str, full_page: bool = False) -> Path:
    """A screenshot in `folder`, copied to docs/ when AIGC_DOCS_SCREENSHOTS=1."""
    path = folder / name
    page.screenshot(path=str(path), full_page=full_page)
    if os.environ.get("AIGC_DOCS_SCREENSHOTS") == "1":
        shutil.copyfile(path, DOCS / name)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def review_app(out: Path) -> Iterator[str]:
    """`aigc review OUT` as a user starts it (a process of its own); yields its printed URL; stops it
    as Ctrl-C would."""
    port = free_port()
    command = [sys.executable, "-m", "aigc_pipeline.cli", "review", str(out), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline() if process.stdout else ""
        if not line.startswith("review app: http://127.0.0.1:"):
            raise AssertionError(line + (process.stderr.read() if process.stderr else ""))
        yield line.split()[2]
    finally:
        process.send_signal(2)  # SIGINT, as Ctrl-C
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
