"""kill -9 at named points of a streaming run, then resume: results identical to an uninterrupted
run, every row exactly once, and after each kill results.jsonl is the previous complete file or
absent, never a torn one (AIGC_TEST_CRASH_AT, see sinks.crash_point and results_writer)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from aigc_pipeline.sinks import CRASH_ENV

ROWS = 1500
PIPELINE = """
name: stream_kill
inputs: {product: str, n: int}
seed: 11
stages:
  brief: {uses: template, with: {template: "{{ product }} number {{ n }}"}, batch_size: 32}
  copy:
    uses: filter.text
    inputs: {text: brief.text}
    with: {blocklist: [cursed], on_fail: drop}
    batch_size: 32
  tagline: {uses: template, inputs: {copy: copy.text}, with: {template: "{{ copy | upper }}"}, batch_size: 32}
outputs: {copy: copy.text, tagline: tagline.text}
"""


def aigc(folder: Path, out: str, crash_at: str | None = None) -> int:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash_at:
        env[CRASH_ENV] = crash_at
    command = [sys.executable, "-c", "from aigc_pipeline.cli import main; main()", "run", "pipeline.yaml",
               "-i", "rows.csv", "-o", out, "-q"]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, timeout=300).returncode


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "pipeline.yaml").write_text(PIPELINE, encoding="utf-8")
    rows = "".join(f"{'cursed ' if i % 7 == 0 else ''}item {i},{i}\n" for i in range(ROWS))
    (tmp_path / "rows.csv").write_text("product,n\n" + rows, encoding="utf-8")
    return tmp_path


def test_kills_at_named_points_then_resume_give_the_uninterrupted_results(folder: Path) -> None:
    assert aigc(folder, "reference") == 0
    reference = (folder / "reference" / "results.jsonl").read_bytes()
    out = folder / "out"
    # mid-stream (rows already written to the temporary file), after a batch, while committing results
    for point in ("streamed:40", "batch:9", "streamed:700", "results:1"):
        before = (out / "results.jsonl").read_bytes() if (out / "results.jsonl").exists() else None
        assert aigc(folder, "out", point) == -signal.SIGKILL, point
        after = (out / "results.jsonl").read_bytes() if (out / "results.jsonl").exists() else None
        assert after == before, point  # the previous complete file (or none), never a torn one
    assert aigc(folder, "out") == 0
    assert (out / "results.jsonl").read_bytes() == reference
    records = lines(out / "results.jsonl")
    assert [r["row"] for r in records] == list(range(ROWS))  # every row once, in input order
    assert {r["status"] for r in records} == {"done", "filtered"}
    assert not list(out.glob(".*.tmp"))
