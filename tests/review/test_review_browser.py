"""The review flow in a real browser (the system Chromium through Playwright): approve 3 rows and
reject 2 with the keyboard, reload, the decisions are still there; --retake rejected makes new takes
of exactly those 2 rows; once approved, the export holds the 3 rows and the 2 new takes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from browser_support import browser_page, needs_chromium, review_app, screenshot
from typer.testing import CliRunner

from aigc_pipeline.cli import app
from aigc_pipeline.testing import run_text

PIPELINE = """
name: launch_copy
description: product rows -> a line of copy (tiny LM) and a picture
inputs: {sku: str, product: str}
key: [sku]
seed: 11
stages:
  prompt: {uses: template, with: {template: "A short ad for {{ product }}:"}}
  copy: {uses: llm.text, inputs: {prompt: prompt.text}, with: {model: MODEL, max_new_tokens: 8, temperature: 1.0}}
  picture: {uses: test.image, inputs: {text: prompt.text}, with: {size: 48}}
outputs: {copy: copy.text, image: picture.image}
"""
ROWS = [{"sku": f"SKU-{n}", "product": p} for n, p in enumerate(["tea", "bike", "lamp", "desk", "pen"])]


def _results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]


def _reviews(page: Any) -> list[str]:
    return page.evaluate("() => window.aigcGallery.cards.map(c => c.getAttribute('data-review'))")


def _press(page: Any, keys: str, expected: list[str]) -> None:
    for key in keys:
        page.keyboard.press(key)
    page.wait_for_function("want => JSON.stringify(window.aigcGallery.cards.map(c => c.getAttribute('data-review')))"
                           " === want", arg=json.dumps(expected, separators=(",", ":")))


@needs_chromium
@pytest.mark.slow
def test_review_retake_and_export_in_a_browser(tiny_model: Any, tmp_path: Path) -> None:
    pipeline = PIPELINE.replace("MODEL", str(tiny_model("lm")))
    out = tmp_path / "out"
    run_text(pipeline, ROWS, out)
    first = _results(out)
    with review_app(out) as url, browser_page() as page:
        page.goto(url)
        assert _reviews(page) == ["pending"] * 5
        _press(page, "aaarr", ["approved"] * 3 + ["rejected"] * 2)
        page.keyboard.press("n")  # a note on the last card, the one the keys stopped at
        page.keyboard.type("too dark")
        with page.expect_response("**/api/decision"):
            page.keyboard.press("Enter")
        screenshot(page, tmp_path, "review-app.png")
        page.reload()
        assert _reviews(page) == ["approved"] * 3 + ["rejected"] * 2  # stored, not just drawn
        assert page.locator("#rows .card").nth(4).locator("input.note").input_value() == "too dark"
        assert page.errors == []
    assert [r["review"] for r in _results(out)] == ["approved"] * 3 + ["rejected"] * 2

    retake = run_text(pipeline, ROWS, out, retake="rejected")
    for stage_id, stats in retake.summary.stages.items():  # exactly the 2 rejected rows ran
        expected = (5, 0) if stats.type_name == "template" else (2, 3)  # (a template renders again)
        assert (stats.done - stats.cached, stats.cached) == expected, stage_id
    second = _results(out)
    assert [r["outputs"] for r in second[:3]] == [r["outputs"] for r in first[:3]]
    for old, new in zip(first[3:], second[3:], strict=True):
        assert new["outputs"]["image"]["path"] != old["outputs"]["image"]["path"] and new["take"] == 1
        assert (out / old["outputs"]["image"]["path"]).is_file()  # the first take is kept
    assert [r["outputs"]["copy"] for r in second[3:]] != [r["outputs"]["copy"] for r in first[3:]]
    assert [r["review"] for r in second] == ["approved"] * 3 + ["pending"] * 2

    with review_app(out) as url, browser_page() as page:
        page.goto(url)
        page.click('button[data-show="review-pending"]')
        page.keyboard.press("j")  # the first row to review: row 3, now at its take 1
        card = page.locator("#rows .card").first
        shown = "el => el.offsetParent !== null"
        assert card.locator("select.take-select").input_value() == "1"
        page.keyboard.press("t")  # back to take 0, to compare
        assert card.locator("select.take-select").input_value() == "0"
        old_image = card.locator('.take[data-take="0"] img')
        assert old_image.evaluate(shown) and old_image.get_attribute("src").endswith(
            Path(first[3]["outputs"]["image"]["path"]).name)
        assert not card.locator(":scope > .media img").evaluate(shown)
        page.keyboard.press("t")  # and to the new take, which is approved
        assert card.locator(":scope > .media img").evaluate(shown)
        _press(page, "aa", ["approved"] * 5)
    again = run_text(pipeline, ROWS, out)  # everything approved and stored: no model loads at all
    stored = [stats for stats in again.summary.stages.values() if stats.type_name != "template"]  # (renders again)
    assert all(stats.loads == 0 and stats.cached == 5 for stats in stored)

    target = tmp_path / "approved"
    done = CliRunner().invoke(app, ["export", str(out), "--approved", "--to", str(target)])
    assert done.exit_code == 0 and "exported 5 approved rows" in done.output, done.output
    listing = [json.loads(line) for line in (target / "approved.jsonl").read_text().splitlines()]
    assert [(e["name"], e["take"]) for e in listing] == [("SKU-0", 0), ("SKU-1", 0), ("SKU-2", 0), ("SKU-3", 1),
                                                         ("SKU-4", 1)]
    for row in (0, 3, 4):
        image = second[row]["outputs"]["image"]["path"]
        assert (target / f"SKU-{row}.image.png").read_bytes() == (out / image).read_bytes()
        assert (target / f"SKU-{row}.copy.txt").read_text() == second[row]["outputs"]["copy"]

    with browser_page() as page:  # the report shows the reviews too
        page.goto((out / "report.html").as_uri())
        assert page.locator("#rows .card").count() == 5
        assert page.locator('.badge.review-approved[data-review-badge]').count() == 5
        screenshot(page, tmp_path, "report-gallery.png")
        assert page.errors == []
