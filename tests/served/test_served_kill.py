"""kill -9 of a served run with requests in flight, three times, then resume: nothing stored is lost
or asked for again, nothing is duplicated, and the answers equal an uninterrupted run's."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml
from served_helpers import PRODUCTS, results, run_text, served_pipeline, write_rows

from aigc_pipeline.served.fault_proxy import FaultProxy, Faults

ROWS = 24


def stored_rows(out: Path) -> dict[int, str]:
    """Row -> stored text of the served stage, read from the run store as it is on disk."""
    try:
        with sqlite3.connect(f"file:{out / 'run.sqlite'}?mode=ro", uri=True, timeout=5) as db:
            found = db.execute("SELECT item, outputs FROM results WHERE stage = 'copy'").fetchall()
    except sqlite3.Error:
        return {}
    return {int(item): json.loads(outputs)["text"] for item, outputs in found}


def row_of(entry: dict[str, object]) -> int:
    content = entry["body"]["messages"][-1]["content"]  # type: ignore[index]
    prompts = [f"Write about {PRODUCTS[i % len(PRODUCTS)]} {i}" for i in range(ROWS)]
    return prompts.index(content)


def test_kill_9_three_times_then_resume_loses_and_repeats_nothing(served_lm, tmp_path: Path) -> None:
    rows = write_rows(tmp_path, ROWS)
    direct = run_text(served_pipeline(served_lm.base_url, str(served_lm.folder)), rows, tmp_path / "direct")
    assert direct.summary.counts["done"] == ROWS
    rng = random.Random(15)
    with FaultProxy(served_lm.base_url.removesuffix("/v1"), Faults(latency=0.2)) as proxy:
        spec = yaml.safe_load(served_pipeline(proxy.base_url, str(served_lm.folder), max_concurrency=2))
        spec["stages"]["copy"]["batch_size"] = 2  # answers are stored per micro-batch: small ones, for a short test
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
        command = [sys.executable, "-c", "from aigc_pipeline.cli import main; main()", "run", str(tmp_path / "p.yaml"),
                   "-i", str(rows), "-o", str(tmp_path / "out"), "-q"]
        for _ in range(3):
            before, asked = stored_rows(tmp_path / "out"), len(proxy.log)
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            moment = asked + rng.randint(3, 8)  # requests into this run: some answered, some in flight
            deadline = time.monotonic() + 120
            while process.poll() is None and len(proxy.log) < moment and time.monotonic() < deadline:
                time.sleep(0.01)
            process.send_signal(signal.SIGKILL)
            assert process.wait(timeout=60) == -signal.SIGKILL
            after = stored_rows(tmp_path / "out")
            assert {row: after.get(row) for row in before} == before  # nothing stored was lost
            assert not {row_of(entry) for entry in proxy.log[asked:]} & before.keys()  # nor asked again
        before, asked = stored_rows(tmp_path / "out"), len(proxy.log)
        assert 0 < len(before) < ROWS
        finished = subprocess.run(command, capture_output=True, timeout=600)
        assert finished.returncode == 0, finished.stdout.decode() + finished.stderr.decode()
        assert not {row_of(entry) for entry in proxy.log[asked:]} & before.keys()
    out = results(tmp_path / "out")
    # every row once, done: none lost, none duplicated
    assert [(row["row"], row["status"]) for row in out] == [(row, "done") for row in range(ROWS)], out
    assert [row["outputs"]["copy"] for row in out] == [row["outputs"]["copy"] for row in results(tmp_path / "direct")]
