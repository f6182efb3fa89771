"""brand.overlay: placement, opacity, logo and text, metadata, and failures that name their cause."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from aigc_pipeline import Artifact, Engine, PipelineFileError, StageError
from aigc_pipeline.testing import run_text

BLUE, RED = (0, 0, 255), (255, 0, 0)


def pipeline(overlay: dict[str, Any], canvas: dict[str, Any] | None = None) -> str:
    return f"""\
name: branded
inputs: {{color: str}}
plugins: [brand_kit]
stages:
  canvas: {{uses: test.canvas, inputs: {{color: inputs.color}}, with: {json.dumps(canvas or {})}}}
  branded: {{uses: brand.overlay, inputs: {{image: canvas.image}}, with: {json.dumps(overlay)}}}
outputs: {{image: branded.image}}
"""


def branded_images(engine: Engine, tmp_path: Path, overlay: dict[str, Any], colors: list[str] | None = None,
                   canvas: dict[str, Any] | None = None) -> list[Image.Image]:
    rows = [{"color": color} for color in colors or ["blue"]]
    result = run_text(pipeline(overlay, canvas), rows, tmp_path / "out", engine=engine)
    assert [r.status for r in result.results] == ["done"] * len(rows), [r.error for r in result.results]
    return [Image.open(r.outputs["image"].path) for r in result.results]


# 96x64 canvas; the 40x20 logo at logo_width 0.25 becomes 24x12: red left half, transparent right half.
@pytest.mark.parametrize(
    ("position", "red_at", "clear_at"),
    [
        ("top-left", (6, 6), (24, 6)),
        ("top-right", (70, 6), (88, 6)),
        ("bottom-left", (6, 50), (24, 50)),
        ("bottom-right", (70, 50), (88, 50)),
        ("center", (38, 28), (56, 28)),
    ],
)
def test_logo_lands_at_the_position_inside_the_margin(
    engine: Engine, tmp_path: Path, logo: Path, position: str, red_at: tuple[int, int], clear_at: tuple[int, int]
) -> None:
    overlay = {"logo": str(logo), "position": position, "margin": 4, "logo_width": 0.25, "opacity": 1.0}
    (image,) = branded_images(engine, tmp_path, overlay)
    assert image.size == (96, 64) and image.mode == "RGB"
    assert image.getpixel(red_at) == RED
    assert image.getpixel(clear_at) == BLUE  # the logo's transparent half shows the image
    corners = {(0, 0), (95, 0), (0, 63), (95, 63)}
    assert all(image.getpixel(corner) == BLUE for corner in corners)  # the margin stays clear


def test_opacity_blends_the_logo(engine: Engine, tmp_path: Path, logo: Path) -> None:
    half = {"logo": str(logo), "position": "top-left", "margin": 4, "logo_width": 0.25, "opacity": 0.5}
    (image,) = branded_images(engine, tmp_path / "half", half)
    red, green, blue = image.getpixel((6, 6))  # type: ignore[misc]
    assert abs(red - 128) <= 2 and green == 0 and abs(blue - 127) <= 2
    (unchanged,) = branded_images(engine, tmp_path / "zero", {**half, "opacity": 0.0})
    assert unchanged.tobytes() == Image.new("RGB", (96, 64), "blue").tobytes()


def test_logo_is_scaled_down_to_fit_a_small_image(engine: Engine, tmp_path: Path, logo: Path) -> None:
    overlay = {"logo": str(logo), "position": "top-left", "margin": 2, "logo_width": 1.0, "opacity": 1.0}
    (image,) = branded_images(engine, tmp_path, overlay, canvas={"width": 30, "height": 8})
    assert image.getpixel((2, 2)) == RED  # 40x20 logo -> fits 26x4: 8x4 pixels
    assert image.getpixel((0, 0)) == BLUE and image.getpixel((2, 7)) == BLUE


def test_text_overlay_draws_in_the_chosen_corner(engine: Engine, tmp_path: Path) -> None:
    small = {"text": "ACME", "position": "bottom-right", "color": "#ffffff", "font_size": 12, "margin": 2, "opacity": 1}
    large = {**small, "font_size": 28}
    (little,) = branded_images(engine, tmp_path / "s", small, colors=["black"], canvas={"width": 160, "height": 80})
    (big,) = branded_images(engine, tmp_path / "l", large, colors=["black"], canvas={"width": 160, "height": 80})

    def lit(image: Image.Image) -> list[tuple[int, int]]:
        gray = image.convert("L")
        return [(x, y) for x in range(160) for y in range(80) if gray.getpixel((x, y)) > 128]  # type: ignore[operator]

    small_pixels, big_pixels = lit(little), lit(big)
    assert small_pixels and all(x >= 80 and y >= 40 for x, y in small_pixels)  # bottom-right quadrant
    assert max(x for x, _ in small_pixels) <= 157 and max(y for _, y in small_pixels) <= 77  # inside the margin
    assert len(big_pixels) > 2 * len(small_pixels)  # font_size takes effect


def test_output_is_a_new_png_artifact_with_metadata(engine: Engine, tmp_path: Path, logo: Path) -> None:
    overlay = {"logo": str(logo), "position": "center", "opacity": 0.7}
    result = run_text(pipeline(overlay, {"mode": "RGBA"}), [{"color": "green"}], tmp_path / "out", engine=engine)
    artifact = result.results[0].outputs["image"]
    assert isinstance(artifact, Artifact)
    # artifact names come from the row's identity (a hex digest), never its values
    assert re.fullmatch(r"artifacts/branded/[0-9a-f]+\.image\.png", artifact.relpath)
    assert artifact.path.read_bytes().startswith(b"\x89PNG")
    assert Image.open(artifact.path).mode == "RGBA"  # an image with alpha keeps it
    assert artifact.metadata["color"] == "green"  # upstream metadata is carried on
    assert artifact.metadata["source"] == artifact.relpath.replace("branded", "canvas")
    assert (artifact.metadata["width"], artifact.metadata["height"]) == (96, 64)
    assert artifact.metadata["brand.overlay"] == {"logo": "logo.png", "text": None, "position": "center",
                                                  "opacity": 0.7, "margin": 16}
    written = json.loads(result.results_path.read_text().splitlines()[0])["outputs"]["image"]
    assert (written if isinstance(written, str) else written["path"]) == artifact.relpath


def test_a_corrupt_image_fails_only_its_own_row_with_the_reason(engine: Engine, tmp_path: Path, logo: Path) -> None:
    rows = [{"color": "blue"}, {"color": "corrupt"}, {"color": "green"}]
    result = run_text(pipeline({"logo": str(logo)}), rows, tmp_path / "out", engine=engine)
    assert result.summary.ok
    assert [r.status for r in result.results] == ["done", "failed", "done"]
    error = result.results[1].error
    assert error is not None and error["stage"] == "branded"
    assert re.match(r"cannot brand image 'artifacts/canvas/[0-9a-f]+\.image\.png': UnidentifiedImageError",
                    error["reason"])
    assert result.summary.stages["branded"].failed == 1 and result.summary.stages["branded"].done == 2


def test_missing_logo_stops_the_run_before_any_row_naming_the_file(
    engine: Engine, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-logo.png"
    with pytest.raises(StageError) as info:
        run_text(pipeline({"logo": str(missing)}), [{"color": "blue"}], tmp_path / "out", engine=engine)
    message = str(info.value)
    assert "stage 'branded' (brand.overlay)" in message
    assert f"logo '{missing}' (param 'logo') does not exist" in message
    assert not (tmp_path / "out" / "artifacts").exists()


def test_corrupt_logo_stops_the_run_before_any_row_naming_the_file(
    engine: Engine, tmp_path: Path
) -> None:
    bad = tmp_path / "logo.png"
    bad.write_bytes(b"\x89PNG but not really")
    with pytest.raises(StageError, match=f"logo '{bad}' is not a readable image: UnidentifiedImageError"):
        run_text(pipeline({"logo": str(bad)}), [{"color": "blue"}], tmp_path / "out", engine=engine)


def test_missing_font_is_named(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(StageError, match="font '.*nope.ttf' \\(param 'font'\\) does not exist"):
        run_text(pipeline({"text": "hi", "font": str(tmp_path / "nope.ttf")}), [{"color": "red"}], tmp_path / "out",
                 engine=engine)


@pytest.mark.parametrize(
    ("overlay", "expected"),
    [
        ({}, "give exactly one of 'logo' (an image file) or 'text'"),
        ({"logo": "a.png", "text": "b"}, "give exactly one of 'logo' (an image file) or 'text'"),
        ({"text": "  "}, "'text' must not be empty"),
        ({"text": "x", "color": "not-a-colour"}, "unknown color specifier"),
        ({"text": "x", "position": "middle"}, "top-left"),
        ({"text": "x", "opacity": 1.5}, "less than or equal to 1"),
        ({"text": "x", "size": 3}, "unknown key 'size'; did you mean 'font_size'?"),
    ],
)
def test_bad_params_are_rejected_before_the_run(engine: Engine, overlay: dict[str, Any], expected: str) -> None:
    with pytest.raises(PipelineFileError) as info:
        engine.load_text(pipeline(overlay), "branded.yaml")
    problem = info.value.problems[0]
    assert problem.stage == "branded" and expected in str(problem)
