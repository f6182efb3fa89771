"""The aggregate stage and reducing stages in general: groups, group phase, validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aigc_pipeline import PipelineFileError, Stage
from aigc_pipeline.cli import app
from aigc_pipeline.testing import run_text

FACTS = [
    {"topic": "sport", "fact": "team A won"},
    {"topic": "economy", "fact": "rates up"},
    {"topic": "sport", "fact": "team B lost"},
    {"topic": "weather", "fact": "sunny"},
    {"topic": "sport", "fact": "banned claim"},
]

DIGEST = """
name: digest
inputs: {topic: str, fact: str}
stages:
  line: {uses: template, with: {template: "{{ fact | upper }}"}}
  gate: {uses: filter.text, inputs: {text: line.text}, with: {blocklist: [banned]}}
  digest:
    uses: aggregate
    inputs: {line: gate.text}
    with:
      group_by: topic
      fields: [fact]
      template: "{{ key }} ({{ count }}): {% for row in rows %}{{ row.line }}/{{ row.fact }}; {% endfor %}"
  headline: {uses: test.echo, inputs: {text: digest.text}, with: {prefix: "NEWS: "}}
outputs: {line: gate.text, digest: digest.text, headline: headline.text, n: digest.count}
"""


def test_rows_are_grouped_and_the_group_phase_runs_once_per_group(tmp_path: Path) -> None:
    result = run_text(DIGEST, FACTS, tmp_path / "out")
    assert [r.status for r in result.results] == ["done", "done", "done", "done", "filtered"]
    assert [r.outputs for r in result.results][0] == {"line": "TEAM A WON"}
    groups = [g.as_dict() for g in result.groups]
    assert [(g["group"], g["members"]) for g in groups] == [("sport", [0, 2]), ("economy", [1]), ("weather", [3])]
    sport = groups[0]["outputs"]
    assert sport["digest"] == "sport (2): TEAM A WON/team A won; TEAM B LOST/team B lost;"
    assert sport["headline"] == "NEWS: " + sport["digest"]
    assert sport["n"] == 2
    assert result.summary.group_counts is not None and result.summary.group_counts["done"] == 3
    assert result.summary.stages["headline"].done == 3
    lines = (tmp_path / "out" / "groups.jsonl").read_text().splitlines()
    assert [json.loads(line)["group"] for line in lines] == ["sport", "economy", "weather"]


def test_without_group_by_all_rows_make_one_group_and_max_rows_caps_the_template(tmp_path: Path) -> None:
    pipeline = """
name: all
inputs: {topic: str, fact: str}
stages:
  digest: {uses: aggregate, with: {fields: [fact], max_rows: 2,
           template: "{{ count }}: {% for row in rows %}{{ row.fact }},{% endfor %}"}}
"""
    result = run_text(pipeline, FACTS, tmp_path / "out")
    assert len(result.groups) == 1
    group = result.groups[0].as_dict()
    assert group["group"] == "all" and group["members"] == [0, 1, 2, 3, 4]
    assert group["outputs"]["digest.text"] == "5: team A won,rates up,"


def test_no_rows_left_means_no_groups(tmp_path: Path) -> None:
    result = run_text(DIGEST, [{"topic": "x", "fact": "banned"}], tmp_path / "out")
    assert result.groups == [] and result.groups_path is None


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        ("headline: {uses: template, inputs: {d: digest.text, f: line.text}, with: {template: '{{ d }}{{ f }}'}}",
         "a per-row value"),
        ("headline: {uses: template, inputs: {d: digest.text}, with: {template: '{{ d }} {{ topic }}'}}",
         "a per-row value"),
        ("headline: {uses: aggregate, inputs: {d: digest.text}, with: {template: '{{ count }}'}}",
         "aggregating twice is not supported"),
    ],
)
def test_group_stages_cannot_read_per_row_values(tmp_path: Path, change: str, expect: str) -> None:
    pipeline = DIGEST.replace(
        'headline: {uses: test.echo, inputs: {text: digest.text}, with: {prefix: "NEWS: "}}', change
    ).replace(", headline: headline.text", "")
    with pytest.raises(PipelineFileError) as caught:
        run_text(pipeline, FACTS, tmp_path / "out")
    assert expect in str(caught.value)


@pytest.mark.parametrize(
    ("with_", "expect"),
    [
        ("{template: '{{ topic }}'}", "sees only rows, key and count"),
        ("{template: '{{ count }}', fields: [facts]}", "uses variable 'facts'"),
        ("{template: '{{ count }}', group_by: topik}", "uses variable 'topik'"),
        ("{template: '{% for %}'}", "template syntax error"),
    ],
)
def test_bad_aggregate_params_are_rejected_before_running(tmp_path: Path, with_: str, expect: str) -> None:
    pipeline = f"""
name: bad
inputs: {{topic: str, fact: str}}
stages:
  digest: {{uses: aggregate, with: {with_}}}
"""
    with pytest.raises(PipelineFileError) as caught:
        run_text(pipeline, FACTS, tmp_path / "out")
    assert expect in str(caught.value)


def test_a_failing_group_template_stops_the_run_but_keeps_the_rows(tmp_path: Path) -> None:
    pipeline = """
name: boom
inputs: {topic: str, fact: str}
stages:
  digest: {uses: aggregate, with: {fields: [fact], template: "{{ rows[0].nope.deeper }}"}}
"""
    result = run_text(pipeline, FACTS, tmp_path / "out")
    assert not result.summary.ok
    assert "stage 'digest' (aggregate): reduce failed" in (result.summary.error or "")
    assert {r.status for r in result.results} == {"done"}
    assert result.errors_path is not None and "reduce failed" in result.errors_path.read_text()


def test_a_reducing_stage_must_implement_reduce() -> None:
    with pytest.raises(TypeError, match="must implement reduce"):

        class NoReduce(Stage):
            type_name = "test.no_reduce"
            inputs = {}
            outputs = {}
            reduces = True


def test_cli_prints_the_groups_file(tmp_path: Path) -> None:
    pipeline = tmp_path / "digest.yaml"
    pipeline.write_text(DIGEST.replace("test.echo", "template").replace(
        'inputs: {text: digest.text}, with: {prefix: "NEWS: "}',
        "inputs: {d: digest.text}, with: {template: 'N: {{ d }}'}",
    ))
    rows = tmp_path / "facts.jsonl"
    rows.write_text("".join(json.dumps(row) + "\n" for row in FACTS))
    result = CliRunner().invoke(app, ["run", str(pipeline), "-i", str(rows), "-o", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    assert "groups: 3 done" in result.stdout
    assert (tmp_path / "out" / "groups.jsonl").exists()
