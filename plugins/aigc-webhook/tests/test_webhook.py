"""The webhook against a real HTTP server on 127.0.0.1: summary, rows, retries, and endpoints
that fail, hang or are down (the run still succeeds, in bounded time)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aigc_webhook
import pytest
from aigc_webhook.delivery import encode
from http_endpoint import Endpoint

from aigc_pipeline import TEXT, Artifact, Device, Engine, RunResult, Stage, StageItem, hookimpl
from aigc_pipeline.plugin_manager import installed_plugins
from aigc_pipeline.testing import run_text

PIPELINE = """\
name: webhook_test
inputs: {product: str}
plugins: [webhook]
stages:
  brief: {uses: template, with: {template: "buy {{ product }}"}}
  copy: {uses: filter.text, inputs: {text: brief.text}, with: {blocklist: [cheap]}}
outputs: {copy: copy.text}
"""
ROWS = [{"product": "kettle"}, {"product": "cheap lamp"}, {"product": "mug"}]


def run(tmp_path: Path, rows: list[dict[str, str]] = ROWS, pipeline: str = PIPELINE,
        engine: Engine | None = None) -> RunResult:
    return run_text(pipeline, rows, tmp_path / "out", engine=engine or Engine())


def configure(monkeypatch: pytest.MonkeyPatch, url: str, **settings: str) -> None:
    monkeypatch.setenv("AIGC_WEBHOOK_URL", url)
    for name, value in settings.items():
        monkeypatch.setenv(f"AIGC_WEBHOOK_{name.upper()}", value)


def test_registered_under_its_entry_point_name() -> None:
    assert installed_plugins()["webhook"].load() is aigc_webhook


def test_posts_the_run_summary_as_json(endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    configure(monkeypatch, endpoint.url("/hook?token=s3cret"))
    result = run(tmp_path)
    assert result.summary.ok and result.summary.warnings == []
    (request,) = endpoint.requests
    assert request.path == "/hook?token=s3cret"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Aigc-Event"] == "run.finished"
    assert request.headers["User-Agent"].startswith("aigc-webhook/")
    body = request.body
    assert (body["event"], body["pipeline"], body["ok"], body["error"], body["rows"]) == (
        "run.finished", "webhook_test", True, None, 3)
    assert body["counts"] == {"done": 2, "filtered": 1, "failed": 0, "rejected": 0, "not_run": 0}
    assert body["stages"]["copy"]["type_name"] == "filter.text" and body["stages"]["copy"]["filtered"] == 1
    assert body["out_dir"] == str(tmp_path / "out") and "rows_delivery" not in body


def test_rows_are_posted_when_asked(endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    configure(monkeypatch, endpoint.url(), rows="1")
    result = run(tmp_path)
    assert result.summary.warnings == []
    assert endpoint.events() == ["row.finished"] * 3 + ["run.finished"]  # rows drained before the summary
    rows = sorted((r.body for r in endpoint.requests[:3]), key=lambda body: body["row"])
    assert [(row["row"], row["status"], row["outputs"]) for row in rows] == [
        (0, "done", {"copy": "buy kettle"}), (1, "filtered", {}), (2, "done", {"copy": "buy mug"})]
    assert rows[1]["error"] == {"stage": "copy", "reason": "blocked term(s): cheap"}
    assert rows[0]["pipeline"] == "webhook_test"
    assert endpoint.requests[3].body["rows_delivery"] == {"sent": 3, "failed": 0, "skipped": 0}


def test_a_500_is_retried_until_it_succeeds(endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    configure(monkeypatch, endpoint.url(), retries="3", backoff="0.01")
    endpoint.statuses = [500, 503]
    result = run(tmp_path)
    assert result.summary.ok and result.summary.warnings == []
    assert endpoint.events() == ["run.finished"] * 3  # two failures, then 200


def test_a_client_error_is_not_retried(endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    configure(monkeypatch, endpoint.url("/hook?token=s3cret"), backoff="0.01")
    endpoint.statuses = [404]
    result = run(tmp_path)
    assert result.summary.ok and result.summary.counts["done"] == 2
    assert len(endpoint.requests) == 1
    (warning,) = result.summary.warnings
    assert warning.startswith(f"webhook: run summary not delivered to {endpoint.url()} (")
    assert warning.endswith("HTTP 404 Not Found (not retried)") and "s3cret" not in warning


def test_a_redirect_is_not_followed(endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    configure(monkeypatch, endpoint.url())
    endpoint.statuses = [307]
    result = run(tmp_path)
    assert [r.path for r in endpoint.requests] == ["/hook"]  # never /moved
    assert "HTTP 307 Temporary Redirect (not retried)" in result.summary.warnings[0]


def test_a_down_endpoint_does_not_fail_the_run(closed_port: int, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    configure(monkeypatch, f"http://127.0.0.1:{closed_port}/hook", rows="1", retries="2", backoff="0.01")
    started = time.monotonic()
    result = run(tmp_path)
    assert time.monotonic() - started < 5
    assert result.summary.ok and [r.status for r in result.results] == ["done", "filtered", "done"]
    rows_warning, summary_warning = result.summary.warnings
    assert rows_warning == (f"webhook: 3 of 3 row(s) not delivered to http://127.0.0.1:{closed_port}/hook: "
                            "gave up after 3 attempts: ConnectionRefusedError: [Errno 111] Connection refused")
    assert "run summary not delivered" in summary_warning and "gave up after 3 attempts" in summary_warning


def test_a_hanging_endpoint_costs_bounded_time(endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    configure(monkeypatch, endpoint.url(), rows="yes", timeout="0.2", retries="1", backoff="0")
    endpoint.delay = 3.0
    rows = [{"product": f"item {n}"} for n in range(20)]
    started = time.monotonic()
    result = run(tmp_path, rows)
    elapsed = time.monotonic() - started
    assert result.summary.ok and result.summary.counts["done"] == 20
    # one row delivery (2 attempts) then the rest skipped, then the summary (2 attempts): ~0.8 s
    assert elapsed < 2.5, elapsed
    assert len(endpoint.requests) == 4
    rows_warning, summary_warning = result.summary.warnings
    assert "20 of 20 row(s) not delivered" in rows_warning
    assert rows_warning.endswith("gave up after 2 attempts: timed out")
    assert summary_warning.endswith("gave up after 2 attempts: timed out")


def test_without_a_url_nothing_is_sent(endpoint: Endpoint, tmp_path: Path) -> None:
    result = run(tmp_path)
    assert result.summary.warnings == [] and endpoint.requests == []


def test_a_bad_setting_is_reported_naming_the_plugin_and_the_run_goes_on(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    configure(monkeypatch, endpoint.url(), timeout="abc")
    result = run(tmp_path)
    assert result.summary.ok and result.summary.counts["done"] == 2
    assert result.summary.warnings == ["plugin 'webhook' raised in aigc_run_start: WebhookConfigError: "
                                       "AIGC_WEBHOOK_TIMEOUT must be a number of seconds, got 'abc'"]
    assert endpoint.requests == []


class BrokenLoad(Stage):
    type_name = "test.broken_load"
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}

    def load(self, device: Device) -> None:
        raise RuntimeError("weights missing")

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        return batch


class BrokenLoadPlugin:
    @hookimpl
    def aigc_register_stages(self) -> list[type[Stage]]:
        return [BrokenLoad]


def test_a_run_that_stops_early_still_reports(endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    configure(monkeypatch, endpoint.url())
    engine = Engine()
    engine.register(BrokenLoadPlugin(), name="broken")
    bad_stage = "  bad: {uses: test.broken_load, inputs: {text: copy.text}}\n"
    pipeline = PIPELINE.replace("outputs: {copy: copy.text}\n", bad_stage)
    result = run(tmp_path, pipeline=pipeline, engine=engine)
    assert not result.summary.ok
    (request,) = endpoint.requests
    assert request.body["ok"] is False and "failed to load: RuntimeError: weights missing" in request.body["error"]


def test_artifacts_are_sent_as_in_results_jsonl() -> None:
    relpath = "artifacts/hero/000001.image.png"
    artifact = Artifact(relpath, Path("/out") / relpath, {"seed": 7, "width": 64})
    assert json.loads(encode({"image": artifact})) == {"image": {"path": relpath, "seed": 7, "width": 64}}
