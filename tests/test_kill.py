"""kill -9 at any moment, then re-run: every row done exactly once, nothing corrupt, same bytes.

`aigc run` runs in a subprocess over 320 rows (template -> a slow fake -> a PNG fake and the tts
stub), killed with SIGKILL during a stage, between an artifact's rename and its record, from
outside at a random moment, and while results.jsonl is written (the in-engine points come from
AIGC_TEST_CRASH_AT, a test-only fault injection: sinks.crash_point). The final output must be
byte-identical to an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import wave
import zlib
from pathlib import Path

import pytest

from aigc_pipeline.sinks import CRASH_ENV
from aigc_pipeline.store import STORE_FILE

ROWS = 320
PIPELINE = """
name: kill_test
inputs: {text: str}
seed: 7
stages:
  prompt: {uses: template, with: {template: "say {{ text }}"}}
  slow:
    uses: test.slow
    inputs: {text: prompt.text}
    with: {seconds_per_item: 0.004}
    batch_size: 8
  picture: {uses: test.image, inputs: {text: slow.text}}
  voice:
    uses: tts
    inputs: {text: slow.text}
    with: {backend: stub, sample_rate: 8000}
    batch_size: 8
outputs: {text: slow.text, image: picture.image, audio: voice.audio}
"""
QUARANTINE = """
name: quarantine
inputs: {text: str}
stages:
  prompt: {uses: template, with: {template: "say {{ text }}"}}
  native: {uses: test.crash_on, inputs: {text: prompt.text}, with: {needle: r13}}
outputs: {text: native.text}
"""


def aigc(folder: Path, out: str, crash_at: str | None = None, wait: bool = True) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash_at:
        env[CRASH_ENV] = crash_at
    command = [sys.executable, "-c", "from aigc_pipeline.cli import main; main()", "run", "pipeline.yaml",
               "-i", "rows.jsonl", "-o", out, "-q", "--plugin", "aigc_pipeline.testing"]
    process = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if wait:
        process.wait(timeout=120)
    return process


def setup(folder: Path, pipeline: str, count: int) -> None:
    (folder / "pipeline.yaml").write_text(pipeline, encoding="utf-8")
    (folder / "rows.jsonl").write_text("".join(json.dumps({"text": f"r{i}"}) + "\n" for i in range(count)))


def stored(out: Path) -> int:
    try:
        with sqlite3.connect(f"file:{out / STORE_FILE}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    except sqlite3.Error:
        return 0


def kill_from_outside(folder: Path, out: Path) -> int:
    """Start a run and SIGKILL it once it has stored 150 more results; its return code."""
    start = stored(out)
    process = aigc(folder, out.name, wait=False)
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline and stored(out) < start + 150:
        time.sleep(0.02)
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    return process.wait(timeout=60)


def check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82"), path
    idat = data.index(b"IDAT")
    length = int.from_bytes(data[idat - 4 : idat], "big")
    zlib.decompress(data[idat + 4 : idat + 4 + length])


def check_wav(path: Path) -> None:
    with wave.open(str(path)) as audio:
        assert audio.getnframes() > 0 and len(audio.readframes(audio.getnframes())) == 2 * audio.getnframes()


def tree(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "artifacts").rglob("*")) if p.is_file()}


def test_killed_runs_resume_to_the_same_bytes(tmp_path: Path) -> None:
    setup(tmp_path, PIPELINE, ROWS)
    reference = aigc(tmp_path, "reference")
    assert reference.returncode == 0, reference.stdout.read() if reference.stdout else ""
    out = tmp_path / "out"

    during_stage = aigc(tmp_path, "out", "batch:25")
    assert during_stage.returncode == -signal.SIGKILL
    assert 0 < stored(out) < 3 * ROWS  # (the template is not stored)
    before_record = aigc(tmp_path, "out", "artifact:150")
    assert before_record.returncode == -signal.SIGKILL
    assert kill_from_outside(tmp_path, out) in (-signal.SIGKILL, 0)
    while_writing = aigc(tmp_path, "out", "results:1")
    assert while_writing.returncode == -signal.SIGKILL
    assert stored(out) == 3 * ROWS  # every stored stage of every row is stored before results.jsonl is written
    final = aigc(tmp_path, "out")
    output = final.stdout.read().decode() if final.stdout else ""
    assert final.returncode == 0, output

    assert (out / "results.jsonl").read_bytes() == (tmp_path / "reference" / "results.jsonl").read_bytes()
    assert tree(out) == tree(tmp_path / "reference")
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["row"] for r in records] == list(range(ROWS)) and {r["status"] for r in records} == {"done"}
    for record in records:
        check_png(out / record["outputs"]["image"]["path"])
        check_wav(out / record["outputs"]["audio"]["path"])
    assert not list(out.rglob("*.tmp"))
    with sqlite3.connect(out / STORE_FILE) as db:
        per_item = db.execute("SELECT stage, item, COUNT(*) FROM results GROUP BY stage, item").fetchall()
        assert len(per_item) == 3 * ROWS and {count for _, _, count in per_item} == {1}
        assert db.execute("SELECT COUNT(*) FROM inflight").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM suspects").fetchone()[0] == 0  # no row was quarantined
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["counts"]["done"] == ROWS
    assert "cached" in output  # the summary table shows what was reused


def test_a_row_that_crashes_the_process_twice_is_quarantined(tmp_path: Path) -> None:
    setup(tmp_path, QUARANTINE, 24)
    first = aigc(tmp_path, "out")
    assert first.returncode == -signal.SIGKILL
    second = aigc(tmp_path, "out")  # the rows in flight run alone: row 13 crashes it again
    assert second.returncode == -signal.SIGKILL
    third = aigc(tmp_path, "out")
    assert third.returncode == 0, third.stdout.read() if third.stdout else ""
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    failed = [r for r in records if r["status"] != "done"]
    assert [r["row"] for r in failed] == [13]
    assert failed[0]["error"]["reason"].startswith("quarantined: crashed the process twice (stage 'native')")


@pytest.mark.parametrize("value", ["../../escape", "/etc/passwd", "a\x00b", "..\\..\\win", "~/home"])
def test_row_values_never_name_files(tmp_path: Path, value: str) -> None:
    """Artifact names come from the stage id and the row's identity (a hex digest) only: row values
    cannot place a file."""
    from aigc_pipeline.row_identity import row_identity
    from aigc_pipeline.testing import run_text

    pipeline = PIPELINE.replace("seconds_per_item: 0.004", "seconds_per_item: 0")
    before = {p for p in tmp_path.parent.iterdir()}
    result = run_text(pipeline, [{"text": value}, {"text": f"x/{value}/y"}], tmp_path / "out")
    assert result.summary.counts["done"] == 2
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert all(p.resolve().is_relative_to((tmp_path / "out").resolve()) for p in written)
    names = [row_identity({"text": text}) for text in (value, f"x/{value}/y")]
    assert sorted(p.name for p in (tmp_path / "out" / "artifacts").rglob("*.*")) == sorted(
        f"{name}.{port}" for name in names for port in ("audio.wav", "image.png"))
    assert {p for p in tmp_path.parent.iterdir()} == before
    assert not Path("/etc/passwd.png").exists()
