"""Helpers of the reliability suite: `aigc` in-process (exit code + output), a small tmpfs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aigc_pipeline.cli import app

TEXT_PIPELINE = """
name: t
inputs: {text: str}
stages:
  p: {uses: template, with: {template: "x {{ text }}"}}
outputs: {t: p.text}
"""


def aigc(*args: str) -> tuple[int, str]:
    """Run `aigc ARGS` in this process: (exit code, stdout + stderr). An uncaught exception fails the test."""
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        exc = result.exception
        raise AssertionError(f"a traceback: {type(exc).__name__}: {exc}") from exc
    return result.exit_code, result.output


@contextmanager
def small_tmpfs(parent: Path, size: str = "2m", read_only: bool = False) -> Iterator[Path]:
    """A small tmpfs mounted under `parent` for the block (root only, where the kernel allows it);
    skips the test otherwise. Disk-full and read-only cases need a real file system that says so."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    folder = parent / "tmpfs"
    folder.mkdir()
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


# ------------------------------------------------------------------ runs in a child process

HANG_PLUGIN = '''
"""A plugin-style stage that hangs forever on the row whose text holds $AIGC_TEST_HANG (if set)."""
import os
import time

from aigc_pipeline import hookimpl
from aigc_pipeline.testing import SlowStage


class HangOn(SlowStage):
    type_name = "test.hang_on"

    def process(self, batch):
        for item in batch:  # the variable is read again and again: a test ends the hang by removing it
            while os.environ.get("AIGC_TEST_HANG") and os.environ["AIGC_TEST_HANG"] in item.inputs["text"]:
                if os.environ.get("AIGC_TEST_HANGING"):  # tell the test the hang has begun
                    open(os.environ["AIGC_TEST_HANGING"], "w").close()
                time.sleep(0.05)
        return super().process(batch)


@hookimpl
def aigc_register_stages():
    return [HangOn]
'''


def setup_run(folder: Path, pipeline: str, count: int) -> None:
    """pipeline.yaml, rows.jsonl ({"text": "r<i>"}) and the hang plugin in `folder`."""
    (folder / "pipeline.yaml").write_text(pipeline, encoding="utf-8")
    (folder / "rows.jsonl").write_text("".join(json.dumps({"text": f"r{i}"}) + "\n" for i in range(count)))
    (folder / "hang_plugin.py").write_text(HANG_PLUGIN, encoding="utf-8")


def start(folder: Path, out: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`aigc run pipeline.yaml` in a child process of its own session (as `timeout` runs one)."""
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]),
               **(env or {})}
    command = [sys.executable, "-c", "from aigc_pipeline.cli import main; main()", "run", "pipeline.yaml",
               "-i", "rows.jsonl", "-o", out, "-q", "--plugin", "aigc_pipeline.testing", "--plugin", "hang_plugin",
               *extra]
    return subprocess.Popen(command, cwd=folder, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def finish(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    output, _ = process.communicate(timeout=300)
    return process.returncode, output.decode(errors="replace")


def store_counts(out: Path) -> dict[str, int]:
    """Rows in each table of the run store (read-only; zeros when it cannot be read yet)."""
    tables = ("results", "inflight", "suspects")
    try:
        with sqlite3.connect(f"file:{out / 'run.sqlite'}?mode=ro", uri=True, timeout=5) as db:
            return {table: int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]) for table in tables}
    except sqlite3.Error:
        return dict.fromkeys(tables, 0)


def wait_for_results(process: subprocess.Popen[bytes], out: Path, count: int) -> None:
    """Block until the run has stored `count` results (or ended, or a minute passed)."""
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline and store_counts(out)["results"] < count:
        time.sleep(0.02)


def wait_for_file(process: subprocess.Popen[bytes], path: Path) -> None:
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline and not path.exists():
        time.sleep(0.02)


def signal_like_timeout(process: subprocess.Popen[bytes], signum: int) -> None:
    """What `timeout` does: the signal to the process, then to its process group."""
    process.send_signal(signum)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
