"""Run history: each run's manifest is kept; `aigc history` lists them; stages say who made their results."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from aigc_pipeline.cli import app
from aigc_pipeline.history import RUNS_DIR, list_runs
from aigc_pipeline.testing import run_text

PIPELINE = """
name: hist
inputs: {text: str}
stages:
  brief: {uses: template, with: {template: "say {{ text }}"}}
  picture: {uses: test.image, inputs: {text: brief.text}}
outputs: {image: picture.image}
"""


def test_two_runs_leave_two_manifests_and_history_lists_both(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run_text(PIPELINE, [{"text": "a"}, {"text": "b"}], out)
    assert first.summary.ok
    second = run_text(PIPELINE, [{"text": "a"}, {"text": "b"}, {"text": "c"}], out)
    assert second.summary.ok
    runs = list_runs(out)
    assert len(runs) == 2 and len(list((out / RUNS_DIR).glob("*/manifest.json"))) == 2
    one, two = runs
    assert one["run_id"] != two["run_id"] and one["status"] == two["status"] == "finished"
    assert one["stages"]["picture"]["made_now"] == 2 and one["stages"]["picture"]["reused"] == 0
    # the first run's manifest is kept as it was, not rewritten by the second
    assert one["counts"]["done"] == 2 and two["counts"]["done"] == 3
    latest = json.loads((out / "manifest.json").read_text())
    assert latest["run_id"] == two["run_id"]
    picture = latest["stages"]["picture"]
    assert (picture["made_now"], picture["reused"]) == (1, 2)
    assert picture["made_by"] == {one["run_id"]: 2, two["run_id"]: 1}
    report = (out / "report.html").read_text()
    assert f"{one['run_id']}: 2" in report and f"{two['run_id']} (this run): 1" in report

    shown = CliRunner().invoke(app, ["history", str(out)], env={"COLUMNS": "80"})
    assert shown.exit_code == 0, shown.output
    lines = [line.split() for line in shown.output.splitlines() if line.strip()]
    by_run = {line[0]: line for line in lines if line[0] in (one["run_id"], two["run_id"])}
    assert len(by_run) == 2
    # run  status  seconds  done  filtered  failed  made  reused  loads
    assert by_run[one["run_id"]][3:9] == ["2", "0", "0", "4", "0", "0"]
    assert by_run[two["run_id"]][3:9] == ["3", "0", "0", "4", "2", "0"]  # the template rendered all 3 again


def test_history_of_a_folder_without_runs_is_a_clear_error(tmp_path: Path) -> None:
    shown = CliRunner().invoke(app, ["history", str(tmp_path)])
    assert shown.exit_code == 2
    assert "holds no run history" in shown.output and "Traceback" not in shown.output


def test_made_by_counts_each_result_in_the_first_run_that_encloses_its_commit_time(tmp_path: Path) -> None:
    import sqlite3

    from aigc_pipeline.history import STORE_FILE, _made_by

    with sqlite3.connect(tmp_path / STORE_FILE) as db:  # the store's columns that history reads
        db.execute("CREATE TABLE results (stage TEXT, at REAL)")
        db.executemany("INSERT INTO results VALUES (?, ?)",
                       [("a", 1.0), ("a", 2.0), ("a", 2.5), ("b", 2.0), ("a", 9.0), ("b", 0.5)])
    db.close()
    # a killed run lasts until the next one starts: a time on that boundary is the earlier run's
    windows = [("r1", 1.0, 2.0), ("r2", 2.0, 3.0), ("r3", 2.5, float("inf"))]
    assert _made_by(tmp_path, windows) == {"a": {"r1": 2, "r2": 1, "r3": 1}, "b": {"r1": 1, "unknown": 1}}
    assert _made_by(tmp_path, []) == {"a": {"unknown": 4}, "b": {"unknown": 2}}
    assert _made_by(tmp_path / "none", windows) == {}
