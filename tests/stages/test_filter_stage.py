"""The `filter.text` stage: length limits, blocklist, regex rules; drop or flag; checked params."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aigc_pipeline.engine import Engine
from aigc_pipeline.errors import PipelineFileError
from aigc_pipeline.executor import ItemResult
from aigc_pipeline.testing import CPU_ONLY, FakeStages, run_text


@pytest.fixture(scope="module")
def engine() -> Engine:
    engine = Engine()
    engine.register(FakeStages(), name="fakes")
    return engine


def pipeline(params: dict[str, Any], downstream: bool = False) -> str:
    text = ("name: t\ninputs: {text: str}\nstages:\n"
            f"  gate: {{uses: filter.text, inputs: {{text: inputs.text}}, with: {json.dumps(params)}}}\n")
    if downstream:
        text += "  after: {uses: test.echo, inputs: {text: gate.text}, with: {prefix: '>'}}\n"
    return text


def gate(engine: Engine, tmp_path: Path, params: dict[str, Any], texts: list[str], **kw: Any) -> list[ItemResult]:
    rows = [{"text": text} for text in texts]
    return run_text(pipeline(params, **kw), rows, tmp_path / "out", engine, inventory=CPU_ONLY).results


def statuses(results: list[ItemResult]) -> list[str]:
    return [r.status for r in results]


def reason(result: ItemResult) -> str:
    assert result.error is not None and result.error["stage"] == "gate", result
    return result.error["reason"]


# ----------------------------------------------------------------- lengths

def test_min_and_max_words_are_inclusive(engine: Engine, tmp_path: Path) -> None:
    results = gate(engine, tmp_path, {"min_words": 2, "max_words": 3}, ["one", "one two", "one  two\nthree", "a b c d"])
    assert statuses(results) == ["filtered", "done", "done", "filtered"]
    assert reason(results[0]) == "too few words: 1 < 2"
    assert reason(results[3]) == "too many words: 4 > 3"
    assert results[2].outputs == {"gate.text": "one  two\nthree"}  # passed on unchanged


def test_min_and_max_chars_are_inclusive(engine: Engine, tmp_path: Path) -> None:
    results = gate(engine, tmp_path, {"min_chars": 3, "max_chars": 5}, ["ab", "abc", "abcde", "abcdef", "é€😀"])
    assert statuses(results) == ["filtered", "done", "done", "filtered", "done"]  # characters, not bytes
    assert reason(results[0]) == "too few characters: 2 < 3"
    assert reason(results[3]) == "too many characters: 6 > 5"


def test_empty_text_and_zero_limits(engine: Engine, tmp_path: Path) -> None:
    results = gate(engine, tmp_path, {"min_words": 0, "max_words": 0}, ["", "   ", "x"])
    assert statuses(results) == ["done", "done", "filtered"]


# ----------------------------------------------------------------- blocklist

@pytest.mark.parametrize(("text", "blocked"), [
    ("A cure for all.", True),
    ("Cure!", True),
    ("CURE", True),
    ("the (cure)", True),
    ("cure-all", True),
    ("«cure»", True),
    ("secure your home", False),
    ("procured today", False),
    ("cures", False),
    ("curette", False),
    ("c u r e", False),
])
def test_blocklist_matches_whole_words_in_any_case(engine: Engine, tmp_path: Path, text: str, blocked: bool) -> None:
    [result] = gate(engine, tmp_path, {"blocklist": ["cure"]}, [text])
    assert result.status == ("filtered" if blocked else "done")
    if blocked:
        assert reason(result) == "blocked term(s): cure"


@pytest.mark.parametrize(("text", "blocked"), [
    ("a miracle cure", True),
    ("A MIRACLE CURE!", True),
    ("miracle\ncure", True),
    ("miracle   cure", True),
    ("a miracle, then a cure", False),
    ("miracle cured", False),
    ("miracle", False),
])
def test_blocklist_phrases(engine: Engine, tmp_path: Path, text: str, blocked: bool) -> None:
    [result] = gate(engine, tmp_path, {"blocklist": ["miracle cure"]}, [text])
    assert result.status == ("filtered" if blocked else "done")
    if blocked:
        assert reason(result) == "blocked term(s): miracle cure"


@pytest.mark.parametrize(("term", "text", "blocked"), [
    ("a+b", "a+b", True),
    ("a+b", "aab", False),
    ("c.re", "care", False),
    ("c.re", "c.re", True),
    ("(free)", "totally (free) now", True),
    ("(free)", "free", False),
    ("[x]", "x", False),
    ("[x]", "tick [x] here", True),
    ("100%", "100% natural", True),
    ("100%", "100%off", True),
    ("100%", "1000% natural", False),
    ("$$$", "win$$$now", True),
    ("cure?", "cur", False),
    ("cure?", "a cure? no", True),
    ("^start", "start here", False),
    ("\\d", "5", False),
])
def test_blocklist_entries_are_literal_text(engine: Engine, tmp_path: Path, term: str, text: str,
                                            blocked: bool) -> None:
    [result] = gate(engine, tmp_path, {"blocklist": [term]}, [text])
    assert result.status == ("filtered" if blocked else "done"), (term, text)


def test_blocklist_reports_each_term_once_sorted(engine: Engine, tmp_path: Path) -> None:
    [result] = gate(engine, tmp_path, {"blocklist": ["guaranteed", "cure", "miracle cure"]},
                    ["Guaranteed miracle cure! GUARANTEED. A cure."])
    assert reason(result) == "blocked term(s): cure, guaranteed, miracle cure"


# ----------------------------------------------------------------- regex rules

def test_regex_rules_must_match_and_must_not_match(engine: Engine, tmp_path: Path) -> None:
    rules = [{"pattern": r"\d", "must_match": True},
             {"pattern": r"(?i)click here"},
             {"pattern": r"https?://", "reason": "no links"}]
    results = gate(engine, tmp_path, {"rules": rules},
                   ["only 5 left", "no digits", "5 CLICK HERE", "5 at http://x.io", "5 ok"])
    assert statuses(results) == ["done", "filtered", "filtered", "filtered", "done"]
    assert reason(results[1]) == r"does not match /\d/"
    assert reason(results[2]) == "matches /(?i)click here/"
    assert reason(results[3]) == "no links"


# ----------------------------------------------------------------- drop vs flag

FAILS_ALL = {"max_words": 2, "max_chars": 10, "blocklist": ["cure"], "rules": [{"pattern": "x", "must_match": True}]}
BAD = "a cure for everyone"  # 4 words, 19 characters, blocked, no 'x'
ALL_REASONS = ["too many words: 4 > 2", "too many characters: 19 > 10", "blocked term(s): cure", "does not match /x/"]


def test_drop_filters_the_item_and_records_every_reason(engine: Engine, tmp_path: Path) -> None:
    results = gate(engine, tmp_path, {**FAILS_ALL, "on_fail": "drop"}, [BAD, "x ok"], downstream=True)
    assert statuses(results) == ["filtered", "done"]
    assert reason(results[0]).split("; ") == ALL_REASONS
    assert results[0].outputs == {} and results[0].flags == []
    assert results[1].outputs == {"after.text": ">x ok"}  # the others go on downstream


def test_drop_is_the_default(engine: Engine, tmp_path: Path) -> None:
    [result] = gate(engine, tmp_path, FAILS_ALL, [BAD])
    assert result.status == "filtered"


def test_flag_passes_the_item_on_with_every_reason(engine: Engine, tmp_path: Path) -> None:
    results = gate(engine, tmp_path, {**FAILS_ALL, "on_fail": "flag"}, [BAD, "x ok"], downstream=True)
    assert statuses(results) == ["done", "done"]
    assert results[0].error is None
    assert results[0].flags == [{"stage": "gate", "reason": r} for r in ALL_REASONS]
    assert results[0].outputs == {"after.text": ">" + BAD}
    assert results[1].flags == []


def test_reasons_are_recorded_per_item_in_results_jsonl(engine: Engine, tmp_path: Path) -> None:
    params = {"max_words": 3, "blocklist": ["cure"], "on_fail": "drop"}
    run = run_text(pipeline(params), [{"text": t} for t in ["one two three four", "a cure", "fine"]],
                   tmp_path / "out", engine, inventory=CPU_ONLY)
    lines = [json.loads(line) for line in run.results_path.read_text(encoding="utf-8").splitlines()]
    assert [line["status"] for line in lines] == ["filtered", "filtered", "done"]
    assert lines[0]["error"] == {"stage": "gate", "reason": "too many words: 4 > 3"}
    assert lines[1]["error"] == {"stage": "gate", "reason": "blocked term(s): cure"}
    assert "error" not in lines[2]


# ----------------------------------------------------------------- validation

@pytest.mark.parametrize(("params", "message"), [
    ({"rules": [{"pattern": "(unclosed"}]}, "rules.0.pattern: invalid regular expression"),
    ({"rules": [{"pattern": "a{2,1}"}]}, "invalid regular expression"),
    ({"min_words": 5, "max_words": 2}, "min_words (5) is greater than max_words (2)"),
    ({"min_chars": 10, "max_chars": 9}, "min_chars (10) is greater than max_chars (9)"),
    ({"max_words": -1}, "max_words"),
    ({"blocklist": ["ok", "  "]}, "blocklist entries must not be empty"),
    ({"on_fail": "delete"}, "on_fail"),
    ({"max_word": 3}, "unknown key 'max_word'; did you mean 'max_words'"),
    ({"rules": [{"pattern": "x", "must": True}]}, "must"),
])
def test_bad_params_are_rejected_at_validation(engine: Engine, params: dict[str, Any], message: str) -> None:
    with pytest.raises(PipelineFileError) as info:
        engine.load_text(pipeline(params), "<test>")
    assert message in str(info.value)
    assert "stage 'gate'" in str(info.value)
