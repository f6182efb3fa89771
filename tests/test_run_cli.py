"""`aigc run` end to end: exit codes, results.jsonl, errors.log, progress without a terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aigc_pipeline.cli import app
from aigc_pipeline.testing import CPU_ONLY

ROOT = Path(__file__).resolve().parents[1]
PRODUCT_COPY = str(ROOT / "pipelines" / "product_copy.yaml")
PRODUCTS = str(ROOT / "pipelines" / "data" / "products.csv")

PLUGIN = '''
"""Stages for CLI tests, loaded with --plugin."""
from aigc_pipeline import hookimpl
from aigc_pipeline.testing import RaiseOnStage, SlowStage


class BrokenLoad(SlowStage):
    type_name = "cli.broken_load"

    def load(self, device):
        raise OSError("model weights not found")


@hookimpl
def aigc_register_stages():
    return [SlowStage, RaiseOnStage, BrokenLoad]
'''

FAKES = """
name: fakes
inputs: {text: str}
stages:
  first: {uses: test.raise_on, inputs: {text: inputs.text}, with: {needle: boom}}
  model: {uses: USES, inputs: {text: first.text}, with: {seconds_per_item: 0, device: DEVICE}}
"""


@pytest.fixture
def plugin(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    """The module name of a plugin with fake stages, importable for this test."""
    folder = tmp_path_factory.getbasetemp() / "cli_plugin"
    folder.mkdir(exist_ok=True)
    (folder / "aigc_cli_test_plugin.py").write_text(PLUGIN, encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    return "aigc_cli_test_plugin"


def aigc(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def flat(text: str) -> str:
    """Messages as one line: rich wraps long ones at the console width."""
    return " ".join(text.split())


def results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]


def fakes(tmp_path: Path, uses: str = "test.slow", device: str = "cpu", texts: str = "a boom c") -> tuple[str, str]:
    pipeline = tmp_path / "fakes.yaml"
    pipeline.write_text(FAKES.replace("USES", uses).replace("DEVICE", device), encoding="utf-8")
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts.split()), encoding="utf-8")
    return str(pipeline), str(rows)


def test_run_the_demo(tmp_path: Path) -> None:
    done = aigc("run", PRODUCT_COPY, "-i", PRODUCTS, "-o", str(tmp_path))
    assert done.exit_code == 0, done.output
    records = results(tmp_path)
    assert len(records) == 12
    assert [r["status"] for r in records].count("done") == 10
    [filtered] = [r for r in records if r["status"] == "filtered"]
    assert filtered["line"] == 6 and "guaranteed" in filtered["error"]["reason"]  # MiracleGrow Serum
    [rejected] = [r for r in records if r["status"] == "rejected"]
    assert rejected["line"] == 13 and "price" in rejected["error"]["reason"]
    assert "rows: 10 done, 1 filtered, 1 rejected" in done.stdout
    for stage in ("brief", "copy", "tagline"):
        assert stage in done.stdout
    assert "pipeline 'product_copy': 12 rows" in done.stderr  # progress, on a stderr that is no terminal
    assert not (tmp_path / "errors.log").exists()


def test_quiet_limit_and_set(tmp_path: Path) -> None:
    done = aigc("run", PRODUCT_COPY, "-i", PRODUCTS, "-o", str(tmp_path), "-q", "--limit", "5",
                "--set", "copy.blocklist=[boots]", "--set", "copy.max_words=12")  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "pipeline 'product_copy'" not in done.stderr  # -q: no progress
    records = results(tmp_path)
    assert len(records) == 5
    assert records[4]["status"] == "done"  # 'guaranteed' is no longer blocked
    reasons = [r["error"]["reason"] for r in records if r["status"] == "filtered"]
    assert reasons and all(reason.startswith("too many words:") and reason.endswith(" > 12") for reason in reasons)


def test_progress_does_not_crash_when_stderr_is_a_pipe(tmp_path: Path) -> None:
    env = {**os.environ, "TERM": "dumb", "COLUMNS": "80"}
    command = [sys.executable, "-m", "aigc_pipeline.cli", "run", PRODUCT_COPY, "-i", PRODUCTS, "-o", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "pipeline 'product_copy': 12 rows" in done.stderr
    assert len(results(tmp_path)) == 12


def test_a_failed_row_is_reported_and_its_traceback_logged(tmp_path: Path, plugin: str) -> None:
    pipeline, rows = fakes(tmp_path)
    done = aigc("run", pipeline, "-i", rows, "-o", str(tmp_path / "out"), "--plugin", plugin, "-q")
    assert done.exit_code == 0, done.output
    assert [r["status"] for r in results(tmp_path / "out")] == ["done", "failed", "done"]
    log = (tmp_path / "out" / "errors.log").read_text(encoding="utf-8")
    assert log.startswith("row 1, line 2, stage 'first': failed: ValueError: found 'boom' in row 1\nTraceback")


def test_a_stage_that_fails_to_load_exits_1_and_still_writes_results(tmp_path: Path, plugin: str) -> None:
    pipeline, rows = fakes(tmp_path, uses="cli.broken_load", texts="a b c")
    done = aigc("run", pipeline, "-i", rows, "-o", str(tmp_path / "out"), "--plugin", plugin, "-q")
    assert done.exit_code == 1
    assert "the run stopped early: stage 'model' (cli.broken_load): failed to load: OSError" in flat(done.stderr)
    assert [r["status"] for r in results(tmp_path / "out")] == ["not_run"] * 3
    assert "model weights not found" in (tmp_path / "out" / "errors.log").read_text(encoding="utf-8")


def test_a_device_that_does_not_exist_exits_2_before_running(
    tmp_path: Path, plugin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("aigc_pipeline.planning.probe_inventory", lambda: CPU_ONLY)  # the same on any machine
    pipeline, rows = fakes(tmp_path, device="gpu")
    out = tmp_path / "out"
    done = aigc("run", pipeline, "-i", rows, "-o", str(out), "--plugin", plugin, "--device", "cuda:7")
    assert done.exit_code == 2
    assert "stage 'model' (test.slow) asks for 'cuda:7'" in flat(done.stderr)
    assert not (out / "results.jsonl").exists()


def test_workers_runs_the_templates_in_worker_processes_with_the_same_results(tmp_path: Path) -> None:
    outputs = {}
    for workers in ("0", "2"):  # a process of its own: this one may run other tests' threads
        command = [sys.executable, "-m", "aigc_pipeline.cli", "run", PRODUCT_COPY, "-i", PRODUCTS, "-o",
                   str(tmp_path / workers), "-q", "--workers", workers]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert ("cpu×2" in done.stdout) == (workers == "2"), done.stdout  # the summary says where they ran
        outputs[workers] = (tmp_path / workers / "results.jsonl").read_bytes()
    assert outputs["0"] == outputs["2"]


def test_workers_with_another_executor_exits_2(tmp_path: Path) -> None:
    done = aigc("run", PRODUCT_COPY, "-i", PRODUCTS, "-o", str(tmp_path), "--executor", "ray", "--workers", "2")
    assert done.exit_code == 2
    assert "--workers sets the local executor's worker processes" in flat(done.stderr)


def test_a_bad_device_string_exits_2(tmp_path: Path) -> None:
    done = aigc("run", PRODUCT_COPY, "-i", PRODUCTS, "-o", str(tmp_path), "--device", "tpu")
    assert done.exit_code == 2
    assert "not a device: 'tpu'" in flat(done.stderr)


def test_a_csv_header_without_a_required_column_exits_2(tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("prodcut,audience,features,price\nA,b,c,1\n", encoding="utf-8")
    done = aigc("run", PRODUCT_COPY, "-i", str(rows), "-o", str(tmp_path / "out"))
    assert done.exit_code == 2
    assert "lacks required column(s) 'product'" in flat(done.stderr)
    assert "did you mean 'prodcut'?" in flat(done.stderr)
    assert not (tmp_path / "out").exists()
