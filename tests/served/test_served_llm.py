"""llm.text with backend: openai against a real `transformers serve` on the tiny LM."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from served_helpers import results, run_text, served_pipeline, write_rows

from aigc_pipeline import Engine, PipelineFileError


@pytest.mark.parametrize(("api", "chat_template"), [("chat", True), ("completions", False)])
def test_greedy_answers_through_the_server_equal_the_local_model(served_lm, tmp_path: Path, api: str,
                                                                 chat_template: bool) -> None:
    system = {"system": "You write ads."} if api == "chat" else {}
    spec = yaml.safe_load(served_pipeline(served_lm.base_url, str(served_lm.folder), api=api, max_concurrency=4,
                                          **system))
    spec["stages"]["local"] = {"uses": "llm.text", "inputs": {"prompt": "prompt.text"},
                               "with": {"model": str(served_lm.folder), "max_new_tokens": 8,
                                        "chat_template": chat_template, **system}}
    spec["outputs"]["local"] = "local.text"
    result = run_text(yaml.safe_dump(spec), write_rows(tmp_path, 6), tmp_path / "out")
    rows = results(tmp_path / "out")
    assert result.summary.counts["done"] == 6
    assert [row["outputs"]["copy"] for row in rows] == [row["outputs"]["local"] for row in rows]
    assert len({row["outputs"]["copy"] for row in rows}) > 1  # the prompts reached the model
    assert all(row["usage"]["copy"]["completion_tokens"] > 0 for row in rows)
    counters = result.summary.stages["copy"].counters
    assert counters["requests"] == 6
    assert counters["prompt_tokens"] == sum(row["usage"]["copy"]["prompt_tokens"] for row in rows)


def test_a_rerun_reuses_stored_answers_without_a_request(served_lm, tmp_path: Path) -> None:
    text, rows = served_pipeline(served_lm.base_url, str(served_lm.folder)), write_rows(tmp_path, 3)
    first = run_text(text, rows, tmp_path / "out")
    tuned = text.replace("max_tokens: 8", "max_tokens: 8\n      max_concurrency: 2\n      timeout: 30")
    assert tuned != text
    again = run_text(tuned, rows, tmp_path / "out")
    assert first.summary.stages["copy"].counters["requests"] == 3
    assert again.summary.stages["copy"].cached == 3  # a client setting is not part of the cache key
    assert again.summary.stages["copy"].counters == {}


@pytest.mark.parametrize(("field", "value", "message"), [
    ("api_key", "abc", "must not hold an API key"),
    ("extra_body", {"auth": "sk-abcdefghijklmnop1234"}, "looks like an API key"),
    ("api_key_env", "sk-abcdefghijklmnop1234", "looks like an API key"),
    ("base_url", "http://user:secret@localhost:8000/v1", "must not hold credentials"),
    ("dtype", "float16", "only for backend: transformers"),
])
def test_secrets_and_misplaced_fields_in_the_file_are_validation_errors(field: str, value: object,
                                                                       message: str) -> None:
    spec = yaml.safe_load(served_pipeline("http://localhost:8000/v1", "m"))
    spec["stages"]["copy"]["with"][field] = value
    with pytest.raises(PipelineFileError, match=message) as caught:
        Engine().load_text(yaml.safe_dump(spec))
    assert "abcdefghijklmnop1234" not in str(caught.value) and "secret" not in str(caught.value)


def test_served_fields_without_backend_openai_are_refused() -> None:
    spec = yaml.safe_load(served_pipeline("http://localhost:8000/v1", "m"))
    del spec["stages"]["copy"]["with"]["backend"]
    with pytest.raises(PipelineFileError, match="base_url: only for backend: openai"):
        Engine().load_text(yaml.safe_dump(spec))
