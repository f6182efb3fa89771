"""brand.voice: required, forbidden and tone terms; drop or flag; brand-file errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aigc_brand_kit import BrandKitError, load_brand_file

from aigc_pipeline import Engine, StageError
from aigc_pipeline.testing import run_text


def pipeline(brand_file: Path | str, on_fail: str = "drop") -> str:
    params = json.dumps({"brand_file": str(brand_file), "on_fail": on_fail})
    return f"""\
name: voice
inputs: {{text: str}}
plugins: [brand_kit]
stages:
  voice: {{uses: brand.voice, inputs: {{text: inputs.text}}, with: {params}}}
"""


ROWS = [
    {"text": "Acme kettles: simple, warm mornings."},  # fits
    {"text": "ACME kettles are simply cheap."},  # forbidden "cheap"; "simply" is not "simple"
    {"text": "Kettles with honest prices, GUARANTEED and the best   in the world."},  # missing, 2 forbidden
    {"text": "Acme kettles."},  # off-tone
    {"text": "The acmestore sells warm kettles."},  # "acme" only inside a longer word
]


def test_drop_filters_each_row_with_every_reason(engine: Engine, brand_file: Path, tmp_path: Path) -> None:
    result = run_text(pipeline(brand_file), ROWS, tmp_path / "out", engine=engine)
    assert [r.status for r in result.results] == ["done", "filtered", "filtered", "filtered", "filtered"]
    reasons = [r.error["reason"] if r.error else None for r in result.results]
    assert reasons[1] == "forbidden term(s): cheap; off-tone: 0 tone word(s), needs 1 of: warm, simple, honest, bright"
    assert reasons[2] == "missing required term(s): Acme; forbidden term(s): best in the world, guaranteed"
    assert reasons[3] == "off-tone: 0 tone word(s), needs 1 of: warm, simple, honest, bright"
    assert reasons[4] == "missing required term(s): Acme"
    assert result.results[0].outputs == {"voice.text": ROWS[0]["text"]}
    assert all(r.error is None or r.error["stage"] == "voice" for r in result.results)


def test_flag_passes_text_on_with_reasons_as_flags(engine: Engine, brand_file: Path, tmp_path: Path) -> None:
    result = run_text(pipeline(brand_file, "flag"), ROWS, tmp_path / "out", engine=engine)
    assert [r.status for r in result.results] == ["done"] * len(ROWS)
    assert result.results[0].flags == []
    assert result.results[2].flags == [
        {"stage": "voice", "reason": "missing required term(s): Acme"},
        {"stage": "voice", "reason": "forbidden term(s): best in the world, guaranteed"},
    ]
    assert result.summary.stages["voice"].flagged == 4


def test_min_tone_words_counts_different_words(engine: Engine, tmp_path: Path) -> None:
    brand = tmp_path / "b.yaml"
    brand.write_text("tone: [warm, bright, calm]\nmin_tone_words: 2\n", encoding="utf-8")
    rows = [{"text": "warm warm WARM"}, {"text": "a warm, bright day"}]
    result = run_text(pipeline(brand), rows, tmp_path / "out", engine=engine)
    assert [r.status for r in result.results] == ["filtered", "done"]
    reason = "off-tone: 1 tone word(s), needs 2 of: warm, bright, calm"
    assert result.results[0].error == {"stage": "voice", "reason": reason}


def test_empty_brand_file_sections_pass_everything(engine: Engine, tmp_path: Path) -> None:
    brand = tmp_path / "b.yaml"
    brand.write_text("name: Nobody\n", encoding="utf-8")
    result = run_text(pipeline(brand), ROWS, tmp_path / "out", engine=engine)
    assert [r.status for r in result.results] == ["done"] * len(ROWS)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        ("required: [a, b", "cannot be read as YAML"),
        ("- just\n- a list\n", "must be a mapping with keys name, required, forbidden, tone, min_tone_words"),
        ("forbiden: [cheap]\n", "is invalid: forbiden: Extra inputs are not permitted"),
        ("required: ['  ']\n", "is invalid: required: Value error, terms must not be empty"),
        ("tone: [warm]\nmin_tone_words: 2\n", "min_tone_words (2) is more than the 1 tone word(s) listed"),
    ],
)
def test_brand_file_problems_name_the_file(tmp_path: Path, content: str | None, expected: str) -> None:
    path = tmp_path / "brand.yaml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(BrandKitError) as info:
        load_brand_file(str(path))
    assert f"brand file '{path}'" in str(info.value) and expected in str(info.value)


def test_missing_brand_file_stops_the_run_before_any_row(engine: Engine, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(StageError) as info:
        run_text(pipeline(missing), ROWS, tmp_path / "out", engine=engine)
    assert str(info.value).startswith("stage 'voice' (brand.voice): brand file ")
    assert f"'{missing}' (param 'brand_file') does not exist" in str(info.value)
