"""Served runs through a fault-injecting proxy in front of a real `transformers serve`."""

from __future__ import annotations

from pathlib import Path

import yaml
from served_helpers import results, run_text, served_pipeline, write_rows

from aigc_pipeline.served.fault_proxy import FaultProxy, Faults

FAST = {"retry_backoff": 0.01, "max_concurrency": 4}
SCHEMA = {"type": "object", "required": ["headline"], "properties": {"headline": {"type": "string"}},
          "additionalProperties": False}


def texts(out: Path) -> list[str | None]:
    return [row["outputs"].get("copy") for row in results(out)]


def test_transient_faults_are_retried_until_every_row_has_the_servers_text(served_lm, tmp_path: Path) -> None:
    rows = write_rows(tmp_path, 8)
    direct = run_text(served_pipeline(served_lm.base_url, str(served_lm.folder)), rows, tmp_path / "direct")
    assert direct.summary.counts["done"] == 8
    faults = Faults(rate=0.5, kinds=("429", "429-bare", "500", "drop", "malformed"), seed=1)
    with FaultProxy(served_lm.base_url.removesuffix("/v1"), faults) as proxy:
        text = served_pipeline(proxy.base_url, str(served_lm.folder), max_retries=30, **FAST)
        result = run_text(text, rows, tmp_path / "faulty")
    assert result.summary.counts["done"] == 8
    assert texts(tmp_path / "faulty") == texts(tmp_path / "direct")
    faulted = [entry for entry in proxy.log if entry["fault"]]
    assert {entry["fault"] for entry in faulted} == {"429", "429-bare", "500", "drop", "malformed"}
    counters = result.summary.stages["copy"].counters
    assert counters["retries"] == len(faulted) and counters["requests"] == len(proxy.log)


def test_an_answer_slower_than_the_timeout_is_asked_again(served_lm, tmp_path: Path) -> None:
    rows = write_rows(tmp_path, 1)
    direct = run_text(served_pipeline(served_lm.base_url, str(served_lm.folder)), rows, tmp_path / "direct")
    faults = Faults(rate=1.0, kinds=("slow",), slow_seconds=30.0)
    with FaultProxy(served_lm.base_url.removesuffix("/v1"), faults) as proxy:
        text = served_pipeline(proxy.base_url, str(served_lm.folder), timeout=0.5, max_retries=1, **FAST)
        result = run_text(text, rows, tmp_path / "slow")
        faults.rate = 0.0  # the proxy answers in time again (and the timeout leaves room for a loaded machine)
        again = run_text(text.replace("timeout: 0.5", "timeout: 60"), rows, tmp_path / "slow")
    assert results(tmp_path / "slow")[0]["status"] == "done" and again.summary.counts["done"] == 1
    assert result.summary.counts["failed"] == 1
    assert texts(tmp_path / "slow") == texts(tmp_path / "direct") and direct.summary.counts["done"] == 1
    assert "no answer within the timeout of 0.5 s (gave up after 2 attempts)" in str(result.results[0].error)


def test_a_row_whose_faults_never_stop_fails_with_the_status_and_message(served_lm, tmp_path: Path) -> None:
    faults = Faults(always={"bread": "500"})
    with FaultProxy(served_lm.base_url.removesuffix("/v1"), faults) as proxy:
        text = served_pipeline(proxy.base_url, str(served_lm.folder), max_retries=2, **FAST)
        result = run_text(text, write_rows(tmp_path, 4), tmp_path / "out")
        rows = results(tmp_path / "out")
        faults.always.clear()  # the server recovers: a re-run asks again for the failed row only
        again = run_text(text, write_rows(tmp_path, 4), tmp_path / "out")
    assert [row["status"] for row in rows] == ["done", "failed", "done", "done"]
    assert rows[1]["error"] == {"stage": "copy", "reason": "HTTP 500: injected 500 (gave up after 3 attempts)"}
    assert result.summary.stages["copy"].failed == 1
    assert again.summary.counts["done"] == 4 and again.summary.stages["copy"].cached == 3
    assert [entry["body"]["messages"][-1]["content"] for entry in proxy.log[-1:]] == ["Write about bread 1"]


def test_structured_answers_are_validated_retried_and_parsed_for_downstream(served_lm, tmp_path: Path) -> None:
    spec = yaml.safe_load(served_pipeline("http://x/v1", str(served_lm.folder), json_schema=SCHEMA,
                                          schema_retries=8, **FAST))
    spec["stages"]["ad"] = {"uses": "template", "inputs": {"copy": "copy.record"},
                            "with": {"template": "NEW: {{ copy.headline }}"}}
    spec["outputs"]["ad"] = "ad.text"
    rows = write_rows(tmp_path, 6)
    direct = run_text(served_pipeline(served_lm.base_url, str(served_lm.folder)), rows, tmp_path / "direct")
    assert direct.summary.counts["done"] == 6
    faults = Faults(rate=0.4, kinds=("not-json",), seed=5, wrap_json="headline", always={"socks": "not-json"})
    with FaultProxy(served_lm.base_url.removesuffix("/v1"), faults) as proxy:
        spec["stages"]["copy"]["with"]["base_url"] = proxy.base_url
        result = run_text(yaml.safe_dump(spec), rows, tmp_path / "out")
    out = results(tmp_path / "out")
    expected = texts(tmp_path / "direct")
    assert [row["status"] for row in out] == ["done"] * 4 + ["failed", "done"]  # row 4: "socks 4", never JSON
    assert "does not follow json_schema after 9 tries: not JSON" in out[4]["error"]["reason"]
    for row, text in zip(out, expected, strict=True):
        if row["status"] == "done":
            record = row["outputs"]["record"]  # the server's text, as the proxy wrapped it (not stripped)
            assert record.keys() == {"headline"} and record["headline"].strip() == text
            assert row["outputs"]["ad"] == f"NEW: {record['headline']}"
    assert proxy.log[0]["body"]["response_format"]["json_schema"]["schema"] == SCHEMA
    assert result.summary.stages["copy"].counters["invalid_answers"] >= 9
