"""kill -9 of a 256-row served run with requests in flight, at three random moments, then resume:
nothing stored is lost or asked for again, nothing is duplicated, and the answers equal an
uninterrupted run's. Answers are stored as they arrive (`item.ready()`), not per micro-batch, so
a kill loses at most the answers the client had read but not yet handled: never more than the
requests in flight."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from served_helpers import PRODUCTS, results, run_text, served_pipeline, write_rows

from aigc_pipeline.served.fault_proxy import FaultProxy, Faults

pytestmark = pytest.mark.slow  # about a minute: 256 rows through `transformers serve` on the CPU, 4 processes

ROWS = 256
CONCURRENCY = 8
ROW_OF = {f"Write about {PRODUCTS[i % len(PRODUCTS)]} {i}": i for i in range(ROWS)}


def stored_rows(out: Path) -> dict[int, str]:
    """Row -> stored text of the served stage, read from the run store as it is on disk."""
    try:
        with sqlite3.connect(f"file:{out / 'run.sqlite'}?mode=ro", uri=True, timeout=5) as db:
            found = db.execute("SELECT item, outputs FROM results WHERE stage = 'copy'").fetchall()
    except sqlite3.Error:
        return {}
    return {int(item): json.loads(outputs)["text"] for item, outputs in found}


def row_of(entry: dict[str, Any]) -> int:
    return ROW_OF[entry["body"]["messages"][-1]["content"]]


def kill_at_random_moment(command: list[str], proxy: FaultProxy, rng: random.Random, out: Path) -> None:
    """Start the run, kill -9 it once a random number of its requests reached the proxy; check that
    nothing stored before was lost or asked again, and that no more answers than requests in flight
    were answered by the server and not stored."""
    before, asked = stored_rows(out), len(proxy.log)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    moment = asked + rng.randint(20, 80)  # requests into this run: many answered, some in flight
    deadline = time.monotonic() + 180
    while process.poll() is None and len(proxy.log) < moment and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    after = stored_rows(out)
    assert {row: after.get(row) for row in before} == before  # nothing stored was lost
    this_run = proxy.log[asked:]
    assert not {row_of(entry) for entry in this_run} & before.keys()  # nor asked again
    answered = {row_of(entry) for entry in this_run if entry.get("status") == 200}
    assert len(answered - after.keys()) <= CONCURRENCY, (len(answered), len(after))  # not a micro-batch of them


def test_kill_9_three_times_then_resume_loses_and_repeats_nothing(served_lm, tmp_path: Path) -> None:
    rows = write_rows(tmp_path, ROWS)
    direct = run_text(served_pipeline(served_lm.base_url, str(served_lm.folder), max_tokens=4,
                                      max_concurrency=CONCURRENCY), rows, tmp_path / "direct")
    assert direct.summary.counts["done"] == ROWS
    rng = random.Random(15)
    with FaultProxy(served_lm.base_url.removesuffix("/v1"), Faults(latency=0.2)) as proxy:
        spec = yaml.safe_load(served_pipeline(proxy.base_url, str(served_lm.folder), max_tokens=4,
                                              max_concurrency=CONCURRENCY))  # default batch: 8 x 8 rows
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
        command = [sys.executable, "-c", "from aigc_pipeline.cli import main; main()", "run", str(tmp_path / "p.yaml"),
                   "-i", str(rows), "-o", str(tmp_path / "out"), "-q"]
        for _ in range(3):
            kill_at_random_moment(command, proxy, rng, tmp_path / "out")
        before, asked = stored_rows(tmp_path / "out"), len(proxy.log)
        assert 0 < len(before) < ROWS
        finished = subprocess.run(command, capture_output=True, timeout=600)
        assert finished.returncode == 0, finished.stdout.decode() + finished.stderr.decode()
        assert not {row_of(entry) for entry in proxy.log[asked:]} & before.keys()
        asked_per_row = Counter(row_of(entry) for entry in proxy.log)
    assert set(asked_per_row) == set(range(ROWS))
    # asked twice: only rows whose request was in flight (or answered, not yet stored) at a kill
    assert sum(count - 1 for count in asked_per_row.values()) <= 3 * CONCURRENCY, asked_per_row.most_common(5)
    out = results(tmp_path / "out")
    # every row once, done: none lost, none duplicated
    assert [(row["row"], row["status"]) for row in out] == [(row, "done") for row in range(ROWS)], out
    assert [row["outputs"]["copy"] for row in out] == [row["outputs"]["copy"] for row in results(tmp_path / "direct")]
