"""Fixtures of the stage tests: a headless Chromium that plays the videos the stages write."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mp4_checks import CHROMIUM, CHROMIUM_ARGS, play


@pytest.fixture(scope="session")
def browser_play() -> Iterator[Callable[[Path, list[str]], list[tuple[int, float]]]]:
    """`browser_play(root, relpaths)` -> (readyState, duration) of each video in headless Chromium,
    served from `root` over HTTP on 127.0.0.1."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (scripts/setup.sh installs it when run as root)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield functools.partial(play, browser)
        finally:
            browser.close()


