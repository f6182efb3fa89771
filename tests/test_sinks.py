"""sinks: results.jsonl and errors.log, written atomically."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from aigc_pipeline.engine import write_error_log
from aigc_pipeline.records import ItemResult, RunSummary
from aigc_pipeline.sinks import ERRORS_FILE, RESULTS_FILE, write_atomic, write_results


def summary(error: str | None = None, trace: str | None = None) -> RunSummary:
    return RunSummary(counts={}, stages={}, seconds=0.0, error=error, trace=trace)


def test_write_atomic_replaces_the_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "f.txt"
    write_atomic(path, ["a", "b"])
    write_atomic(path, ["c"])
    assert path.read_text(encoding="utf-8") == "c"
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_mode_the_umask_gives_a_new_file(tmp_path: Path, mask: int, mode: int) -> None:
    with _umask(mask):
        write_atomic(tmp_path / "f.txt", ["a"])
        (tmp_path / "plain.txt").write_text("a", encoding="utf-8")  # what `open` makes, for comparison
    assert _mode(tmp_path / "f.txt") == _mode(tmp_path / "plain.txt") == mode


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_a_run_s_files_are_readable_as_the_umask_allows(tmp_path: Path) -> None:
    from aigc_pipeline.testing import run_text

    pipeline = ("name: modes\ninputs: {text: str}\nstages:\n  line: {uses: template, with: {template: '{{ text }}'}}\n"
                "  picture: {uses: test.image, inputs: {text: line.text}, with: {size: 8}}\n"
                "outputs: {copy: line.text, image: picture.image}\n")
    with _umask(0o022):
        result = run_text(pipeline, [{"text": "sun"}], tmp_path / "out", results_format="parquet")
    out = tmp_path / "out"
    image = out / json.loads(result.results_path.read_text(encoding="utf-8"))["outputs"]["image"]["path"]
    for path in (out / RESULTS_FILE, out / "results.parquet", out / "report.html", out / "manifest.json", image):
        assert _mode(path) == 0o644, path


def test_a_failed_write_keeps_the_old_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("old", encoding="utf-8")

    def chunks() -> Iterator[str]:
        yield "half of the new"
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(path, chunks())
    assert path.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_results_are_one_json_line_per_record_in_order(tmp_path: Path) -> None:
    records = [{"row": 0, "outputs": {"text": "é"}}, {"row": 1, "outputs": {"path": tmp_path / "x.png"}}]
    path = write_results(tmp_path, records)
    assert path == tmp_path / RESULTS_FILE
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {"row": 0, "outputs": {"text": "é"}},
        {"row": 1, "outputs": {"path": str(tmp_path / "x.png")}},  # non-JSON values become strings
    ]
    assert "é" in lines[0]  # readable, not \\u-escaped


def failed(row: int, trace: str | None) -> ItemResult:
    error = {"stage": "copy", "reason": "ValueError: boom"}
    return ItemResult(row, row + 2, "failed", {}, error, trace=trace)


def test_errors_log_has_one_block_per_row_with_a_traceback(tmp_path: Path) -> None:
    results = [failed(0, None), failed(1, "Traceback ...\nValueError: boom\n"), failed(2, "Traceback ...\nKeyError\n")]
    path = write_error_log(tmp_path, results, summary())
    assert path == tmp_path / ERRORS_FILE
    blocks = path.read_text(encoding="utf-8").split("\n\n")
    assert blocks[0] == "row 1, line 3, stage 'copy': failed: ValueError: boom\nTraceback ...\nValueError: boom"
    assert blocks[1].startswith("row 2, line 4, stage 'copy': failed:")
    assert blocks[2:] == [""]


def test_errors_log_starts_with_why_the_run_stopped(tmp_path: Path) -> None:
    path = write_error_log(
        tmp_path, [failed(0, "Traceback A\n")], summary("stage 'x' (t): failed to load", "Trace B\n")
    )
    assert path is not None
    text = path.read_text(encoding="utf-8")
    assert text.startswith("the run stopped early: stage 'x' (t): failed to load\nTrace B\n\nrow 0, line 2")


def test_no_traceback_means_no_errors_log_and_a_stale_one_is_removed(tmp_path: Path) -> None:
    (tmp_path / ERRORS_FILE).write_text("from an earlier run", encoding="utf-8")
    assert write_error_log(tmp_path, [failed(0, None)], summary()) is None
    assert not (tmp_path / ERRORS_FILE).exists()
