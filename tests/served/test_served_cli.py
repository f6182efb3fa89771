"""`aigc run` with a served stage: --dry-run, --max-cost, and the API key kept out of every output."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from served_helpers import results, run_text, served_pipeline, write_rows
from typer.testing import CliRunner

from aigc_pipeline.cli import app
from aigc_pipeline.served.fault_proxy import FaultProxy, Faults

KEY = "sk-test-THISKEYMUSTNEVERSHOW-0123456789"
PRICE = {"input": 1000.0, "output": 1000.0}  # USD per million tokens: a row costs a few cents


def write_pipeline(tmp_path: Path, base_url: str, model: str, **with_: object) -> Path:
    path = tmp_path / "served.yaml"
    path.write_text(served_pipeline(base_url, model, **with_), encoding="utf-8")
    return path


def test_dry_run_prints_rows_requests_tokens_and_cost_and_calls_nothing(served_lm, tmp_path: Path) -> None:
    with FaultProxy(served_lm.base_url.removesuffix("/v1")) as proxy:
        pipeline = write_pipeline(tmp_path, proxy.base_url, str(served_lm.folder), price=PRICE)
        result = CliRunner().invoke(app, ["run", str(pipeline), "-i", str(write_rows(tmp_path, 5)), "-o",
                                          str(tmp_path / "out"), "--dry-run"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("copy"))
    fields = line.split()
    assert fields[:4] == ["copy", "llm.text", "5", "5"] and fields[5] == "40" and fields[6].startswith("$")
    assert proxy.log == [] and not (tmp_path / "out").exists()


def test_max_cost_stops_starting_requests_and_a_rerun_continues(served_lm, tmp_path: Path) -> None:
    rows = write_rows(tmp_path, 8)
    with FaultProxy(served_lm.base_url.removesuffix("/v1")) as proxy:
        text = served_pipeline(proxy.base_url, str(served_lm.folder), price=PRICE, max_concurrency=2)
        capped = run_text(text, rows, tmp_path / "out", max_cost=0.1)
        first = results(tmp_path / "out")
        asked_first = len(proxy.log)
        rest = run_text(text, rows, tmp_path / "out", max_cost=10.0)
    done = [row["row"] for row in first if row["status"] == "done"]
    assert 0 < len(done) < 8 and {row["status"] for row in first} == {"done", "not_run"}
    assert all("cost cap" in row["error"]["reason"] for row in first if row["status"] == "not_run")
    assert capped.summary.stages["copy"].counters["cost_usd"] <= 0.1
    assert any("cost cap of 0.1 USD was reached" in warning for warning in capped.summary.warnings)
    assert rest.summary.counts["done"] == 8 and rest.summary.stages["copy"].cached == len(done)
    assert len(proxy.log) - asked_first == 8 - len(done)  # nothing answered was asked again


def test_the_api_key_never_reaches_an_output_file_or_the_console(served_lm, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGC_TEST_KEY", KEY)
    with FaultProxy(served_lm.base_url.removesuffix("/v1"), Faults(always={"bread": "echo-auth"})) as proxy:
        pipeline = write_pipeline(tmp_path, proxy.base_url, str(served_lm.folder), api_key_env="AIGC_TEST_KEY",
                                  price=PRICE)
        result = CliRunner().invoke(app, ["run", str(pipeline), "-i", str(write_rows(tmp_path, 3)), "-o",
                                          str(tmp_path / "out")])
    assert proxy.log and all(entry["status"] for entry in proxy.log)
    rows = results(tmp_path / "out")
    assert [row["status"] for row in rows] == ["done", "failed", "done"]
    assert rows[1]["error"]["reason"] == "HTTP 401: Incorrect API key provided: Bearer ***"
    assert "ledger: copy: 3 requests" in result.output
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in result.output and KEY not in yaml.safe_dump(rows)
