"""The `filter.text` stage: length, blocklist, rules, PII, duplicates, JSON; drop, flag or redact; checked params.

The classifier check, which needs a model, is tested in test_text_filter_models.py.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from aigc_pipeline.engine import Engine
from aigc_pipeline.errors import PipelineFileError
from aigc_pipeline.plugin_manager import hookimpl
from aigc_pipeline.records import ItemResult
from aigc_pipeline.stage import DeviceNeeds
from aigc_pipeline.stages import filters
from aigc_pipeline.stages.filters import TextFilterParams, TextFilterStage
from aigc_pipeline.testing import CPU_ONLY, FakeStages, fake_engine, run_text


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


def test_a_rule_that_backtracks_forever_gives_up_on_that_text_only(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`(a|aa)+$` on 'aaa...a!' backtracks for longer than anyone waits (with `re`, for good):
    the rule stops at its time limit and fails that text; other texts are checked as usual."""
    monkeypatch.setattr(filters, "RULE_TIMEOUT_S", 0.2)
    results = gate(engine, tmp_path, {"rules": [{"pattern": "(a|aa)+$"}]}, ["a" * 40 + "!", "fine", "aaa"])
    assert statuses(results) == ["filtered", "done", "filtered"]
    assert reason(results[0]) == "rule /(a|aa)+$/ gave up after 0.2 s on this text (the pattern backtracks " \
                                 "too much: simplify it)"
    assert reason(results[2]) == "matches /(a|aa)+$/"


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


# ----------------------------------------------------------------- PII

PII_TEXT = ("Write to jane.doe+press@example.co.uk or call +44 20 7946 0958 or (202) 555-0143; "
            "card 4111 1111 1111 1111.")
PII_VALUES = ["jane.doe", "example.co.uk", "7946", "0958", "555-0143", "4111"]


def no_pii_in(results: list[ItemResult]) -> None:
    """No found PII value appears in any reason or flag."""
    recorded = json.dumps([[r.error, r.flags] for r in results])
    for value in PII_VALUES:
        assert value not in recorded, value


def test_redact_replaces_each_value_and_flags_counts_only(engine: Engine, tmp_path: Path) -> None:
    results = gate(engine, tmp_path, {"pii": True, "on_fail": "redact"}, [PII_TEXT, "nothing personal here"],
                   downstream=True)
    assert statuses(results) == ["done", "done"]
    assert results[0].outputs == {"after.text": ">Write to [email] or call [phone] or [phone]; card [card]."}
    assert results[0].flags == [{"stage": "gate", "reason": "redacted PII: 1 card, 1 email, 2 phones"}]
    assert results[1].flags == [] and results[1].outputs == {"after.text": ">nothing personal here"}
    no_pii_in(results)


def test_pii_action_drop_flag_and_custom_placeholder(engine: Engine, tmp_path: Path) -> None:
    dropped = gate(engine, tmp_path / "d", {"pii": {"detect": ["email", "card"]}}, [PII_TEXT])  # as on_fail: drop
    assert reason(dropped[0]) == "contains PII: 1 card, 1 email"
    flagged = gate(engine, tmp_path / "f", {"pii": {"action": "flag"}}, [PII_TEXT])
    assert flagged[0].status == "done" and flagged[0].outputs == {"gate.text": PII_TEXT}  # unchanged
    assert flagged[0].flags == [{"stage": "gate", "reason": "contains PII: 1 card, 1 email, 2 phones"}]
    pii = {"detect": ["phone"], "action": "redact", "placeholder": "<{kind} removed>"}
    custom = gate(engine, tmp_path / "c", {"pii": pii}, ["Ring 020 7946 0958 now"])
    assert custom[0].outputs == {"gate.text": "Ring <phone removed> now"}
    no_pii_in(dropped + flagged + custom)


@pytest.mark.parametrize("text", [
    "Call +1 202-555-0143", "Call +49 30 123456", "Call +33 6 12 34 56 78", "Call 0044 20 7946 0958",
    "Call (202) 555-0143", "Call 202.555.0143", "Call 202 555 0143", "Call 1-800-555-0199",
    "Call 030 1234567", "Call 06 12 34 56 78", "Call 07700900123", "Call 0171 1234567.",
])
def test_phone_formats_are_found(engine: Engine, tmp_path: Path, text: str) -> None:
    [result] = gate(engine, tmp_path, {"pii": {"detect": ["phone"], "action": "redact"}}, [text])
    assert result.outputs["gate.text"].startswith("Call [phone]"), result.outputs


@pytest.mark.parametrize("text", [
    "Founded in 2024.", "From 1999-2024 we grew.", "On 2024-05-01 and 01.02.2024 and 12/05/2024.",
    "Now $1,299.99 or 1.299,00 EUR, was 19.99.", "Pi is 3.14159265 and 0.123456789.",
    "Reach 2 500 000 000 people; 100 000 000 served.", "Years 2021 2022 2023.", "Order 2025550143 shipped.",
    "Server 192.168.0.1", "ISBN 978-3-16-148410-0", "Call 555-0143 (no area code)", "At 10:30, 25% off.",
])
def test_years_prices_dates_and_plain_numbers_are_not_phones(engine: Engine, tmp_path: Path, text: str) -> None:
    [result] = gate(engine, tmp_path, {"pii": True, "on_fail": "redact"}, [text])
    assert result.outputs == {"gate.text": text} and result.flags == []


@pytest.mark.parametrize(("text", "card"), [
    ("4111 1111 1111 1111", True), ("4111-1111-1111-1111", True), ("5555555555554444", True),
    ("3782 822463 10005", True), ("6011 1111 1111 1117", True),
    ("4111 1111 1111 1112", False),  # Luhn fails
    ("1234567890123456", False), ("4012 8888 8888 1882", False),  # Luhn fails
    ("9000 0000 0000 0008", False),  # Luhn holds, but no card network starts with 9
    ("411111111111", False),  # 12 digits: too short
])
def test_cards_need_the_luhn_checksum(engine: Engine, tmp_path: Path, text: str, card: bool) -> None:
    [result] = gate(engine, tmp_path, {"pii": {"detect": ["card"], "action": "redact"}}, [f"Pay with {text} today"])
    assert result.outputs["gate.text"] == ("Pay with [card] today" if card else f"Pay with {text} today")


def test_other_checks_run_on_the_redacted_text_and_redact_drops_other_failures(engine: Engine,
                                                                               tmp_path: Path) -> None:
    params = {"pii": True, "on_fail": "redact", "blocklist": ["cure"], "rules": [{"pattern": "@"}]}
    results = gate(engine, tmp_path, params, ["mail me at a@b.io", "a cure, mail a@b.io"])
    assert statuses(results) == ["done", "filtered"]  # '@' is gone after redaction; 'cure' is not fixable
    assert results[0].outputs == {"gate.text": "mail me at [email]"}
    assert reason(results[1]) == "blocked term(s): cure" and results[1].flags == []


# ----------------------------------------------------------------- duplicates

NEWS = "The city council approved a new cycling lane along the river on Tuesday evening after a long debate."
NEAR = "The city council approved a new cycling lane along the river on Tuesday evening after a long debate!!"
EDITED = "The city council approved a new cycling lane along the river on Tuesday evening after a short debate."
OTHER = "Shares of the company rose after strong sales in Europe and Asia, the quarterly report shows."


def test_exact_duplicates_ignore_case_and_whitespace_and_name_the_first_row(engine: Engine, tmp_path: Path) -> None:
    texts = ["Fresh bread daily.", "fresh  bread\nDAILY.", "Fresh bread daily!", "Fresh bread daily."]
    results = gate(engine, tmp_path, {"dedupe": True}, texts)
    assert statuses(results) == ["done", "filtered", "done", "filtered"]
    assert reason(results[1]) == "duplicate of row 0" and reason(results[3]) == "duplicate of row 0"


def test_near_duplicates_above_the_threshold_are_caught_others_pass(engine: Engine, tmp_path: Path) -> None:
    params = {"dedupe": {"mode": "near", "threshold": 0.7}}
    results = gate(engine, tmp_path, params, [NEWS, OTHER, NEAR, EDITED, "Something else entirely, in few words."])
    assert statuses(results) == ["done", "done", "filtered", "filtered", "done"]
    assert reason(results[2]) == "near-duplicate of row 0 (similarity 1.00 >= 0.7)"  # punctuation is ignored
    assert re.fullmatch(r"near-duplicate of row 0 \(similarity 0\.\d\d >= 0\.7\)", reason(results[3]))
    strict = gate(engine, tmp_path / "strict", {"dedupe": {"mode": "near", "threshold": 0.95}}, [NEWS, EDITED])
    assert statuses(strict) == ["done", "done"]  # one word changed: below 0.95 on word 3-grams


def test_near_duplicates_by_characters_catch_small_edits_in_short_texts(engine: Engine, tmp_path: Path) -> None:
    texts = ["Soft merino sweater, warm all winter.", "Soft merino sweaters, warm all winter long.", "Cold brew."]
    words = gate(engine, tmp_path / "w", {"dedupe": {"mode": "near", "threshold": 0.6}}, texts)
    chars = gate(engine, tmp_path / "c", {"dedupe": {"mode": "near", "threshold": 0.6, "shingles": "chars"}}, texts)
    assert statuses(words) == ["done", "done", "done"]
    assert statuses(chars) == ["done", "filtered", "done"]


def test_duplicates_flag_and_dropped_texts_are_not_remembered(engine: Engine, tmp_path: Path) -> None:
    texts = ["way too long a text here", "short", "way too long a text here", "short"]
    results = gate(engine, tmp_path, {"max_words": 3, "dedupe": {"action": "flag"}}, texts)
    assert statuses(results) == ["filtered", "done", "filtered", "done"]
    assert reason(results[2]) == "too many words: 6 > 3"  # not "duplicate": row 0 was never passed on
    assert results[3].flags == [{"stage": "gate", "reason": "duplicate of row 1"}]


def test_first_means_first_processed_across_batches_and_chunks(engine: Engine, tmp_path: Path) -> None:
    texts = [f"text number {i % 7}" for i in range(200)]
    text = pipeline({"dedupe": True}).replace("}}\n", "}, batch_size: 3}\n", 1)
    results = run_text(text, [{"text": t} for t in texts], tmp_path / "out", engine, inventory=CPU_ONLY).results
    assert [r.status for r in results[:7]] == ["done"] * 7
    assert all(r.status == "filtered" and reason(r) == f"duplicate of row {r.row % 7}" for r in results[7:])


def test_near_dedupe_scales_to_thousands_of_rows(engine: Engine, tmp_path: Path) -> None:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda omicron sigma tau phi chi psi".split()
    rng = random.Random(1)
    texts = [" ".join(rng.choice(words) for _ in range(30)) + f" item {i}" for i in range(3000)]
    texts += [texts[i] + " now" for i in range(0, 3000, 300)]  # ten near-duplicates at the end
    started = time.perf_counter()
    results = gate(engine, tmp_path, {"dedupe": {"mode": "near", "threshold": 0.8}}, texts)
    assert time.perf_counter() - started < 15
    assert [r.row for r in results if r.status == "filtered"] == list(range(3000, 3010))


# ----------------------------------------------------------------- JSON

SCHEMA = {"type": "object", "required": ["title", "price"],
          "properties": {"title": {"type": "string"}, "price": {"type": "number", "minimum": 0},
                         "tags": {"type": "array", "items": {"type": "string"}}}}


def test_json_must_parse_and_fences_are_taken_off(engine: Engine, tmp_path: Path) -> None:
    texts = ['{"a": 1}', '```json\n{"a": [1, 2]}\n```', "```\n[true]\n```", "Here you go: {\"a\": 1}", "{'a': 1}"]
    results = gate(engine, tmp_path, {"json": True}, texts, downstream=True)
    assert statuses(results) == ["done", "done", "done", "filtered", "filtered"]
    assert results[1].outputs == {"after.text": '>{"a": [1, 2]}'}  # the document, without the fence
    assert results[2].outputs == {"after.text": ">[true]"}
    assert reason(results[3]) == "not valid JSON: Expecting value at line 1 column 1"
    assert reason(results[4]).startswith("not valid JSON: Expecting property name enclosed in double quotes")


def test_json_schema_mismatch_names_the_path(engine: Engine, tmp_path: Path) -> None:
    texts = ['{"title": "Mug", "price": 9.5, "tags": ["home"]}', '{"title": "Mug", "price": "cheap"}',
             '{"title": "Mug"}', '```json\n{"title": "Mug", "price": 1, "tags": ["a", 2]}\n```', "[]"]
    results = gate(engine, tmp_path, {"json": {"schema": SCHEMA}, "on_fail": "flag"}, texts)
    assert statuses(results) == ["done"] * 5
    said = [[f["reason"] for f in r.flags] for r in results]
    assert said[0] == []
    assert said[1] == ["JSON does not match the schema at $.price: 'cheap' is not of type 'number'"]
    assert said[2] == ["JSON does not match the schema at $: 'price' is a required property"]
    assert said[3] == ["JSON does not match the schema at $.tags[1]: 2 is not of type 'string'"]
    assert said[4] == ["JSON does not match the schema at $: [] is not of type 'object'"]


def test_schema_errors_never_show_pii(engine: Engine, tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"contact": {"type": "integer"}}}
    [result] = gate(engine, tmp_path, {"json": {"schema": schema}}, ['{"contact": "jane@example.com"}'])
    assert reason(result) == "JSON does not match the schema at $.contact: '[email]' is not of type 'integer'"


# ----------------------------------------------------------------- new params, validated

@pytest.mark.parametrize(("params", "message"), [
    ({"json": {"schema": {"type": "objekt"}}}, "json.schema: invalid JSON Schema at $.type: 'objekt' is not valid"),
    ({"json": {"schema": {"properties": {"a": {"minimum": "zero"}}}}}, "invalid JSON Schema at $.properties.a.minimum"),
    ({"json": {"schema": []}}, "json.schema: Input should be a valid dictionary"),
    ({"json": {"shema": {}}}, "unknown key 'shema'"),
    ({"on_fail": "redact"}, "on_fail 'redact' redacts PII: add 'pii: true'"),
    ({"pii": {"detect": ["emial"]}}, "Input should be 'email', 'phone' or 'card'"),
    ({"pii": {"detect": []}}, "pii.detect"),
    ({"pii": "yes"}, "pii: Input should be a valid dictionary"),
    ({"pii": {"action": "redact", "placeholder": ""}}, "pii.placeholder"),
    ({"dedupe": {"threshold": 0.9}}, "'threshold' is used by mode 'near' only; add 'mode: near'"),
    ({"dedupe": {"mode": "near", "threshold": 0}}, "dedupe.threshold"),
    ({"dedupe": {"mode": "fuzzy"}}, "Input should be 'exact' or 'near'"),
    ({"classifier": {"model": "x"}}, "classifier.label"),
    ({"classifier": {"model": "x", "label": "toxic", "threshold": -0.1}}, "classifier.threshold"),
])
def test_bad_new_params_are_rejected_at_validation(engine: Engine, params: dict[str, Any], message: str) -> None:
    with pytest.raises(PipelineFileError) as info:
        engine.load_text(pipeline(params), "<test>")
    assert message in str(info.value)
    assert "stage 'gate'" in str(info.value)


def test_true_and_false_switch_checks_on_and_off_and_the_schema_says_so(engine: Engine) -> None:
    graph = engine.load_text(pipeline({"pii": True, "dedupe": True, "json": False}), "<test>")
    params = graph.pipeline.params["gate"]
    assert isinstance(params, TextFilterParams) and params.pii is not None and params.dedupe is not None
    assert params.pii.detect == ["email", "phone", "card"] and params.pii.action is None
    assert params.dedupe.mode == "exact" and params.json_check is None
    schema = TextFilterParams.model_json_schema(by_alias=True)
    for name in ("pii", "dedupe", "json"):
        assert {"type": "boolean"} in schema["properties"][name]["anyOf"]


def test_the_stage_without_a_classifier_imports_no_model_library(tmp_path: Path) -> None:
    code = ("import sys; from aigc_pipeline.stages import filters; "
            "filters.TextFilterStage(filters.TextFilterParams(pii=True, dedupe={'mode': 'near'}, json=True)); "
            "print(sorted(m for m in ('torch', 'transformers', 'jsonschema') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    assert TextFilterStage.needs(TextFilterParams()) == DeviceNeeds()


class FailsAfterBatches:
    """Raises after the gate processed a batch of several items: the executor retries them one by one."""

    @hookimpl(wrapper=True)
    def aigc_process_batch(self, stage_id: str, batch: list[Any]) -> Any:
        result = yield
        if stage_id == "gate" and len(batch) > 1:
            raise RuntimeError("flaky plugin")
        return result


@pytest.mark.parametrize("mode", ["exact", "near"])
def test_a_retried_batch_is_not_a_duplicate_of_itself(tmp_path: Path, mode: str) -> None:
    texts = ["one fine text here", "another fine text", "one fine text here"]
    run = run_text(pipeline({"dedupe": {"mode": mode}}), [{"text": t} for t in texts], tmp_path / "out",
                   fake_engine(FailsAfterBatches()), inventory=CPU_ONLY)
    assert statuses(run.results) == ["done", "done", "filtered"]
    assert reason(run.results[2]).startswith(("duplicate of row 0", "near-duplicate of row 0"))


def test_only_classifier_results_are_stored_and_never_dedupe_ones() -> None:
    classifier = {"model": "some/model", "label": "toxic"}
    assert TextFilterStage.cacheable(TextFilterParams.model_validate({"classifier": classifier}))
    assert not TextFilterStage.cacheable(TextFilterParams.model_validate({"pii": True, "json": True}))
    assert not TextFilterStage.cacheable(TextFilterParams.model_validate({"classifier": classifier, "dedupe": True}))
