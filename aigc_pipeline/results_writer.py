"""results.jsonl written as rows finish, in input order, crash-safe.

Lines go to a temporary file in the output folder (`.results.jsonl.*.tmp`) as the run hands
them over; `commit()` flushes, fsyncs and renames it over results.jsonl. So after a kill the folder
holds the previous complete results.jsonl (or none), never a torn one, and the next run over the
folder deletes the temporary file (store.open) and writes the whole file again (stored results
make that cheap). The row blocks of errors.log are gathered the same way. Other formats
(`results.parquet`) receive the same results through `extra` sinks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .json_text import compact_encoder
from .sinks import CRASH_ENV, ERRORS_FILE, RESULTS_FILE, _json_value, crash_point, new_temp_file

if TYPE_CHECKING:
    from .records import ItemResult, RunSummary


class ResultsWriter:
    """Callable sink of row results (in input order); `keep` also keeps them in `kept` (the Python API)."""

    def __init__(self, out_dir: Path, keep: bool = True, extra: list[Any] | None = None) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = out_dir
        self.kept: list[ItemResult] | None = [] if keep else None
        self.extra = extra or []  # objects with add(result), commit() -> Path and discard()
        self._results = _temp(out_dir, RESULTS_FILE)
        self._errors: IO[str] | None = None  # row blocks of errors.log, opened on the first traceback
        self._encode: Callable[[Any], str] = compact_encoder(default=_json_value)
        self.failed: OSError | None = None  # the first write that failed (a full disk): nothing more is written
        # Called with each row's record and its JSON text as written (the report's scan, fed as the rows pass).
        self.observe: Callable[[dict[str, Any], str], None] | None = None
        # test-only (sinks.crash_point): "streamed:N" kills the process once N lines are in the temporary file
        self._crash = os.environ.get(CRASH_ENV, "").startswith("streamed:")

    def __call__(self, result: ItemResult) -> None:
        if self.kept is not None:
            self.kept.append(result)
        if self.failed is not None:
            return
        try:
            record = result.as_dict()
            if result.id is not None:  # the row's identity: what review decisions and takes are keyed by
                record["id"] = result.id
            line = self._encode(record)
            self._results.write(line + "\n")
            if self.observe is not None:
                self.observe(record, line)
            if self._crash:
                self._results.flush()
                crash_point("streamed")
            if result.trace:
                self.trace(result)
            for sink in self.extra:
                sink.add(result)
        except OSError as exc:  # the run goes on (its results are in the store); the caller says so
            self.failed = exc

    def trace(self, result: ItemResult) -> None:
        """Add a row's (or group's) traceback to errors.log."""
        if self._errors is None:
            self._errors = _temp(self.out_dir, ERRORS_FILE)
        self._errors.write(error_block(result).rstrip("\n") + "\n\n")

    def commit(self, summary: RunSummary, name: str = RESULTS_FILE) -> tuple[Path, Path | None, list[Path]]:
        """Put results.jsonl (or `name`; errors.log, other formats) in place: (results, errors or None, others)."""
        crash_point("results")  # test-only: killed with every line written, nothing renamed yet
        path = _publish(self._results, self.out_dir / name)
        others = [sink.commit() for sink in self.extra]
        return path, self._commit_errors(summary), others

    def _commit_errors(self, summary: RunSummary) -> Path | None:
        """errors.log: why the run stopped (if it did), then one block per row with a traceback;
        without any traceback the file is removed, so a stale log of an earlier run never misleads."""
        path = self.out_dir / ERRORS_FILE
        blocks, self._errors = self._errors, None
        if blocks is None and not summary.trace:
            path.unlink(missing_ok=True)
            return None
        if blocks is None:
            blocks = _temp(self.out_dir, ERRORS_FILE)
        if summary.trace:
            head = _temp(self.out_dir, ERRORS_FILE)
            head.write(f"the run stopped early: {summary.error}\n{summary.trace}".rstrip("\n") + "\n\n")
            blocks.flush()
            with open(blocks.name, encoding="utf-8") as rows:
                for text in rows:
                    head.write(text)
            _close_and_remove(blocks)
            blocks = head
        return _publish(blocks, path)

    def discard(self) -> None:
        """Remove the temporary files (a run that could not finish writing)."""
        for handle in (self._results, self._errors):
            if handle is not None and not handle.closed:
                try:
                    _close_and_remove(handle)
                except OSError:  # a full disk may refuse the flush on close: the file goes anyway
                    Path(handle.name).unlink(missing_ok=True)
        for sink in self.extra:
            sink.discard()


def error_block(result: ItemResult) -> str:
    """One row's block of errors.log: where, why, and the traceback."""
    error = result.error or {}
    where = f"row {result.row}, line {result.line}, stage '{error.get('stage', '?')}'"
    return f"{where}: {result.status}: {error.get('reason', '')}\n{result.trace}"


def _temp(out_dir: Path, name: str) -> IO[str]:
    fd, temp_name = new_temp_file(out_dir, name)
    os.close(fd)  # reopened by name, so `handle.name` is its path
    return open(temp_name, "w", encoding="utf-8", newline="\n", buffering=1 << 20)  # noqa: SIM115


def _publish(handle: IO[str], path: Path) -> Path:
    """Flush, fsync and rename a temporary file over `path`."""
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    os.replace(handle.name, path)
    return path


def _close_and_remove(handle: IO[str]) -> None:
    handle.close()
    Path(handle.name).unlink(missing_ok=True)
