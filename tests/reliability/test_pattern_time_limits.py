"""Defect 3: a JSON Schema `pattern` in filter.text's json check runs under the rules' time limit.

`^(a|aa)+$` backtracks exponentially in the text's length; before the limit, 45 characters took
121 s. Now that pattern gives up after PATTERN_TIMEOUT_S on that text only, and the row is
filtered with a reason that says so; the other rows are judged as before.
"""

from __future__ import annotations

import json
from pathlib import Path

from aigc_pipeline.stages.text_checks import PATTERN_TIMEOUT_S, json_problem, schema_validator
from aigc_pipeline.testing import run_text

HOSTILE = "a" * 44 + "!"
SCHEMA = {"type": "object", "properties": {"x": {"type": "string", "pattern": "^(a|aa)+$"}}}


def test_a_backtracking_schema_pattern_gives_up_with_a_reason() -> None:
    problem = json_problem(json.dumps({"x": HOSTILE}), schema_validator(SCHEMA))
    assert problem is not None and f"gave up after {PATTERN_TIMEOUT_S:g} s" in problem
    assert json_problem(json.dumps({"x": "aaa"}), schema_validator(SCHEMA)) is None
    assert "does not match" in (json_problem(json.dumps({"x": "ab"}), schema_validator(SCHEMA)) or "")


def test_pattern_properties_are_time_limited_too() -> None:
    schema = {"type": "object", "patternProperties": {"^(a|aa)+$": {"type": "integer"}}}
    problem = json_problem(json.dumps({HOSTILE: 1}), schema_validator(schema))
    assert problem is not None and "gave up" in problem
    assert json_problem(json.dumps({"aa": "not an int"}), schema_validator(schema)) is not None
    assert json_problem(json.dumps({"aa": 3}), schema_validator(schema)) is None


def test_the_run_filters_that_row_and_goes_on(tmp_path: Path) -> None:
    params = {"json": {"schema": SCHEMA}}
    pipeline = ("name: t\ninputs: {text: str}\nstages:\n"
                f"  gate: {{uses: filter.text, inputs: {{text: inputs.text}}, with: {json.dumps(params)}}}\n"
                "outputs: {text: gate.text}\n")
    rows = [{"text": json.dumps({"x": HOSTILE})}, {"text": json.dumps({"x": "aaaa"})}]
    result = run_text(pipeline, rows, tmp_path / "out")
    assert [r.status for r in result.results] == ["filtered", "done"]
    assert result.results[0].error is not None and "gave up" in result.results[0].error["reason"]
