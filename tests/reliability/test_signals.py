"""Defect 1: SIGTERM and SIGINT end a run the same clean way; no row is blamed for an outside stop.

Each run is `aigc run` in a child process (its own session, as under `timeout`), signalled once it
has stored some results. A stopped run writes results.jsonl, manifest.json and report.html, exits
with 128 + the signal, and leaves no in-flight marker and no suspect; the next run resumes to the
same bytes as an uninterrupted run.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from reliability_support import (
    finish,
    results,
    setup_run,
    signal_like_timeout,
    start,
    store_counts,
    wait_for_file,
    wait_for_results,
)

from aigc_pipeline.signals import SIGNALLED_FILE

ROWS = 240
PIPELINE = """
name: signal_test
inputs: {text: str}
seed: 7
stages:
  prompt: {uses: template, with: {template: "say {{ text }}"}}
  slow:
    uses: test.hang_on
    inputs: {text: prompt.text}
    with: {seconds_per_item: 0.004}
    batch_size: 8
  picture: {uses: test.image, inputs: {text: slow.text}}
  voice: {uses: tts, inputs: {text: slow.text}, with: {backend: stub, sample_rate: 8000}, batch_size: 8}
outputs: {text: slow.text, image: picture.image, audio: voice.audio}
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run, shared by the tests of this module."""
    folder = tmp_path_factory.mktemp("reference")
    setup_run(folder, PIPELINE, ROWS)
    code, output = finish(start(folder, "reference"))
    assert code == 0, output
    return folder / "reference" / "results.jsonl"


@pytest.fixture
def folder(tmp_path: Path, reference: Path) -> Path:
    setup_run(tmp_path, PIPELINE, ROWS)
    (tmp_path / "reference").mkdir()
    shutil.copy(reference, tmp_path / "reference" / "results.jsonl")
    return tmp_path


def assert_stopped_cleanly(out: Path, code: int, output: str, signum: int) -> None:
    assert code == 128 + signum, output
    assert f"stopped by {signal.Signals(signum).name}" in output and "Traceback" not in output
    for name in ("results.jsonl", "manifest.json", "report.html"):
        assert (out / name).is_file(), name
    assert len(results(out)) == ROWS
    counts = store_counts(out)
    assert counts["inflight"] == 0 and counts["suspects"] == 0, counts
    assert not (out / SIGNALLED_FILE).exists()


def assert_resumes_to_the_reference(folder: Path, out: Path) -> None:
    code, output = finish(start(folder, out.name))
    assert code == 0, output
    assert (out / "results.jsonl").read_bytes() == (folder / "reference" / "results.jsonl").read_bytes()
    assert {r["status"] for r in results(out)} == {"done"}
    assert store_counts(out)["suspects"] == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_the_run_cleanly(folder: Path, signum: int) -> None:
    out = folder / "out"
    process = start(folder, "out")
    wait_for_results(process, out, ROWS)
    signal_like_timeout(process, signum)
    code, output = finish(process)
    assert_stopped_cleanly(out, code, output, signum)
    assert_resumes_to_the_reference(folder, out)


def test_two_timeouts_in_a_row_quarantine_nothing(folder: Path) -> None:
    out = folder / "out"
    for _ in range(2):
        before = store_counts(out)["results"]
        process = start(folder, "out")
        wait_for_results(process, out, before + ROWS)
        signal_like_timeout(process, signal.SIGTERM)
        assert_stopped_cleanly(out, *finish(process), signal.SIGTERM)
    assert_resumes_to_the_reference(folder, out)


def test_a_batch_that_never_ends_is_abandoned_after_the_grace_period(folder: Path) -> None:
    """The row that hangs (in a plugin stage) holds its batch forever: the stop waits
    AIGC_STOP_GRACE_S for it, then writes the results without it; nothing is blamed."""
    out = folder / "out"
    hanging = folder / "hanging"
    process = start(folder, "out", env={"AIGC_TEST_HANG": "r37", "AIGC_STOP_GRACE_S": "1",
                                        "AIGC_TEST_HANGING": str(hanging)})
    wait_for_file(process, hanging)
    signal_like_timeout(process, signal.SIGTERM)
    code, output = finish(process)
    assert_stopped_cleanly(out, code, output, signal.SIGTERM)
    assert "stopped waiting for micro-batches" in output
    assert results(out)[37]["status"] == "not_run"
    assert_resumes_to_the_reference(folder, out)


def test_a_second_signal_stops_at_once_and_the_store_stays_consistent(folder: Path) -> None:
    out = folder / "out"
    hanging = folder / "hanging"
    process = start(folder, "out", env={"AIGC_TEST_HANG": "r37", "AIGC_STOP_GRACE_S": "600",
                                        "AIGC_TEST_HANGING": str(hanging)})
    wait_for_file(process, hanging)
    signal_like_timeout(process, signal.SIGTERM)
    while process.poll() is None and not (out / SIGNALLED_FILE).exists():
        time.sleep(0.02)
    time.sleep(1.2)  # a signal within SAME_STOP_S of the first is the same request
    process.send_signal(signal.SIGTERM)
    code, output = finish(process)  # within the 600 s grace: the second signal ended it
    assert code == 128 + signal.SIGTERM, output
    with sqlite3.connect(out / "run.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert_resumes_to_the_reference(folder, out)
