"""Pipeline files through the Python API: every broken fixture is rejected with a located Problem,
YAML is loaded safely, `--set` overrides are checked like the file, and a valid spec round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import BROKEN_DIR, SAMPLE, BrokenCase

from aigc_pipeline import Engine, PipelineFileError, Problem
from aigc_pipeline.spec import PipelineSpec, check_plugin_names, parse_pipeline

MINIMAL = """\
name: minimal
inputs: {product: str}
stages:
  brief: {uses: template, with: {template: "{{ product }}"}}
  copy: {uses: filter.text, inputs: {text: brief.text}, with: {max_words: 30}}
"""


def _problems(path_or_text: str | Path, overrides: list[str] | None = None) -> list[Problem]:
    engine = Engine()
    with pytest.raises(PipelineFileError) as info:
        if isinstance(path_or_text, Path):
            engine.load(path_or_text, overrides)
        else:
            engine.load_text(path_or_text, "test.yaml", overrides)
    assert info.value.problems, "a PipelineFileError must carry at least one Problem"
    return info.value.problems


def test_there_are_at_least_30_broken_fixtures() -> None:
    assert len(list(BROKEN_DIR.glob("*.yaml"))) >= 30


def test_broken_file_is_rejected_by_the_api(broken: BrokenCase) -> None:
    problems = _problems(broken.path)
    assert all(p.file == str(broken.path) and p.line is not None for p in problems), problems
    assert any(broken.matches(p) for p in problems), "\n".join(map(str, problems))


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_bytes(b"")
    (problem,) = _problems(path)
    assert "must be a YAML mapping" in problem.message and problem.line == 1


def test_missing_file_is_a_pipeline_file_error(tmp_path: Path) -> None:
    (problem,) = _problems(tmp_path / "nope.yaml")
    assert "cannot read pipeline file" in problem.message


def test_problem_renders_as_one_line_with_location_stage_field_and_hint() -> None:
    problem = Problem("unknown key 'max_word'", "p.yaml", 3, 7, stage="copy", field="max_word", hint="did you mean 'x'")
    assert str(problem) == "p.yaml:3:7: stage 'copy': max_word: unknown key 'max_word'; did you mean 'x'"


def test_python_tags_are_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = MINIMAL.replace('"{{ product }}"', f'!!python/object/apply:os.system ["touch {marker}"]')
    (problem,) = _problems(text)
    assert "YAML tag not allowed" in problem.message and problem.line == 4
    assert not marker.exists()


def test_every_problem_is_reported_not_only_the_first() -> None:
    text = MINIMAL.replace("max_words: 30", "max_word: 30, on_fail: delete").replace("template, with", "templat, with")
    problems = _problems(text)
    assert [(p.stage, p.field) for p in problems] == [("brief", "uses"), ("copy", "max_word"), ("copy", "on_fail")]


def test_unknown_stage_type_without_a_close_match_lists_the_available_ones() -> None:
    (problem,) = _problems(MINIMAL.replace("uses: filter.text", "uses: banana"))
    assert problem.message == "unknown stage type 'banana'" and (problem.line, problem.column) == (5, 16)
    assert all(text in (problem.hint or "") for text in ("filter.text", "template", "('aigc stages' lists all)"))


def test_phase_one_needs_no_stage_type() -> None:
    # The envelope is checked without any plugin: unknown stage types are phase 2's business.
    spec, locator = parse_pipeline(MINIMAL.replace("filter.text", "not.installed"), "p.yaml")
    assert spec.stages["copy"].uses == "not.installed"
    assert locator.mark(("stages", "copy", "uses")) == ("p.yaml", 5, 16)


# ---------------------------------------------------------------- --set overrides


def test_set_override_is_applied() -> None:
    graph = Engine().load(SAMPLE, ["copy.max_words=12", "brief.template={{ product }}!"])
    assert graph.pipeline.params["copy"].max_words == 12  # type: ignore[attr-defined]
    assert graph.pipeline.params["brief"].template == "{{ product }}!"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("override", "message", "stage", "field", "hint"),
    [
        ("copy.max_words=abc", "(got 'abc')", "copy", "max_words", None),
        ("copy.max_word=3", "unknown key 'max_word'", "copy", "max_word", "did you mean 'max_words'"),
        ("copy.on_fail=dorp", "'drop', 'flag' or 'redact'", "copy", "on_fail", "did you mean 'drop'?"),
        ("copy.rules=[{pattern: '('}]", "invalid regular expression", "copy", "rules.0.pattern", None),
        ("cpy.max_words=3", "no stage 'cpy'", None, None, "did you mean 'copy'?"),
        ("copy.max_words", "expected STAGE.PARAM=VALUE", None, None, None),
        ("brief.template={{ prodcut }}", "uses variable 'prodcut'", "brief", "template", "did you mean 'product'?"),
    ],
)
def test_bad_set_override_points_at_the_override(
    override: str, message: str, stage: str | None, field: str | None, hint: str | None
) -> None:
    problems = _problems(SAMPLE, [override])
    problem = next(p for p in problems if message in p.message)
    assert (problem.file, problem.line, problem.stage, problem.field) == (f"--set {override}", None, stage, field)
    assert hint is None or hint in (problem.hint or "")


def test_override_replacing_a_nested_value_is_located_at_the_override() -> None:
    # The file's own rules[0] had a position; the override's error must not point there.
    text = MINIMAL.replace("max_words: 30", "rules: [{pattern: ok}]")
    (problem,) = _problems(text, ["copy.rules=[{pattern: '('}]"])
    assert problem.file == "--set copy.rules=[{pattern: '('}]" and problem.line is None


# ---------------------------------------------------------------- plugins: names


def test_unknown_plugin_name_is_located_with_a_suggestion() -> None:
    spec, locator = parse_pipeline(MINIMAL + "plugins: [shout, shuot]\n", "p.yaml")
    with pytest.raises(PipelineFileError) as info:
        check_plugin_names(spec, locator, ["shout", "other"])
    (problem,) = info.value.problems
    assert (problem.line, problem.column, problem.field) == (6, 18, "plugins.1")
    assert "plugin 'shuot' is not installed" in problem.message and "did you mean 'shout'?" in (problem.hint or "")


def test_known_plugin_names_pass() -> None:
    spec, locator = parse_pipeline(MINIMAL + "plugins: [shout]\n", "p.yaml")
    check_plugin_names(spec, locator, ["shout"])


# ---------------------------------------------------------------- golden round trip


GOLDEN_STAGES = {
    "brief": {"uses": "template", "inputs": {}},
    "copy": {"uses": "filter.text", "inputs": {"text": "brief.text"}},
    "tagline": {"uses": "template", "inputs": {"copy": "copy.text"}},
}


def test_sample_pipeline_round_trips_through_yaml() -> None:
    spec = Engine().load(SAMPLE).pipeline.spec
    dumped = spec.model_dump(by_alias=True)
    assert {k: {"uses": v["uses"], "inputs": v["inputs"]} for k, v in dumped["stages"].items()} == GOLDEN_STAGES
    assert dumped["stages"]["copy"]["with"] == {"max_words": 30, "blocklist": ["guaranteed", "cure", "miracle"],
                                                "on_fail": "drop"}
    assert dumped["outputs"] == {"copy": "copy.text", "tagline": "tagline.text"}
    text = yaml.safe_dump(dumped, sort_keys=False, allow_unicode=True)
    again = Engine().load_text(text, "roundtrip.yaml").pipeline.spec
    assert again == spec
    assert again.model_dump(by_alias=True) == dumped
    assert isinstance(again, PipelineSpec)
