"""Fixtures for the brand-kit tests: an engine with the test-only canvas stage, brand assets."""

from __future__ import annotations

import textwrap
from pathlib import Path

import canvas_stage
import pytest
from PIL import Image

from aigc_pipeline import Engine

BRAND = """\
name: Acme Home
required: [Acme]
forbidden: [cheap, guaranteed, "best in the world"]
tone: [warm, simple, honest, bright]
min_tone_words: 1
"""


@pytest.fixture
def engine() -> Engine:
    """An engine with the canvas stage; brand_kit is loaded through its entry point by `plugins:`."""
    engine = Engine()
    engine.register(canvas_stage, name="canvas")
    return engine


@pytest.fixture
def logo(tmp_path: Path) -> Path:
    """A 40x20 logo: opaque red left half, fully transparent right half."""
    image = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (0, 0, 20, 20))
    path = tmp_path / "logo.png"
    image.save(path)
    return path


@pytest.fixture
def brand_file(tmp_path: Path) -> Path:
    path = tmp_path / "brand.yaml"
    path.write_text(BRAND, encoding="utf-8")
    return path


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")
