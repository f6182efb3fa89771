"""Run outputs on disk: `results.jsonl` (one line per input row, in input order), `groups.jsonl`
(one line per group, when a stage aggregates rows), artifacts, and
`errors.log` (the tracebacks behind failed rows, only when there are any).

Files are written to a temporary name in the same folder, flushed to disk and renamed, so a
reader (or a crash) never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .content import Artifact, ArtifactData
from .safe_paths import checked_path, real_folder

RESULTS_FILE = "results.jsonl"
STOPPED_RESULTS_FILE = "results.stopped.jsonl"  # a stopped run's results, when results.jsonl holds more
GROUPS_FILE = "groups.jsonl"
ERRORS_FILE = "errors.log"
_SAFE_SUFFIX = re.compile(r"^\.[a-z0-9]{1,8}$")
_SAFE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")  # attachment names become part of file names
# Test-only fault injection: "POINT:N" kills this process with SIGKILL the N-th time it passes
# POINT ("batch": a stage returned, nothing recorded yet; "artifact": an artifact is in place, its
# record is not committed; "results": results.jsonl is half written). Used by tests/test_kill.py.
CRASH_ENV = "AIGC_TEST_CRASH_AT"
_crash_counts: dict[str, int] = {}
_crash_lock = threading.Lock()


def crash_point(point: str) -> None:
    """Kill the process here if AIGC_TEST_CRASH_AT asks for it (tests only; a no-op otherwise)."""
    wanted = os.environ.get(CRASH_ENV)
    if not wanted or not wanted.startswith(point + ":"):
        return
    with _crash_lock:
        _crash_counts[point] = count = _crash_counts.get(point, 0) + 1
    if count == int(wanted.split(":", 1)[1]):
        os.kill(os.getpid(), signal.SIGKILL)


def remove_stale_temp_files(out_dir: Path) -> int:
    """Delete the temporary files a killed run left (`.<name>.*.tmp`); they are never referenced."""
    removed = 0
    artifacts = out_dir / "artifacts"
    # Never through a link: a linked folder's temp-looking files are someone else's.
    stage_folders = [p for p in artifacts.iterdir() if real_folder(p)] if real_folder(artifacts) else []
    for folder in (out_dir, *stage_folders):
        for temp in folder.glob(".*.tmp"):
            temp.unlink(missing_ok=True)
            removed += 1
    return removed


def new_temp_file(folder: Path, name: str) -> tuple[int, str]:
    """A new temporary file for `name` in `folder` (`.<name>.*.tmp`): its open descriptor and path.

    Its mode is the one a file created by `open` gets (0666 less the umask), not mkstemp's 0600:
    results, reports and artifacts are for whoever the umask lets read them, and the rename over
    the final name keeps the mode."""
    fd, temp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    if hasattr(os, "fchmod"):  # (not on Windows, where files have no such mode)
        try:
            os.fchmod(fd, 0o666 & ~_umask())
        except BaseException:
            os.close(fd)
            Path(temp_name).unlink(missing_ok=True)
            raise
    return fd, temp_name


def _umask() -> int:
    """The process's umask, read from /proc where Linux shows it: setting it to read it back would
    change it, for a moment, for every thread."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, chunks: Iterable[str | bytes]) -> None:
    """Write text or bytes to `path` via a temporary file in the same folder, fsync, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = new_temp_file(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk.encode("utf-8") if isinstance(chunk, str) else chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_results(out_dir: Path, records: Iterable[dict[str, Any]], name: str = RESULTS_FILE) -> Path:
    """Write results.jsonl (or groups.jsonl): one JSON object per line.

    Artifacts appear as {"path": <relative path>, **metadata}; other non-JSON values as strings.
    """
    path = out_dir / name
    write_atomic(path, _crashing_halfway(json.dumps(record, ensure_ascii=False, default=_json_value) + "\n"
                                         for record in records))
    return path


def results_file(out_dir: Path, done: int, stopped: bool) -> str:
    """Where a run's results go: RESULTS_FILE, unless the run stopped early and the results.jsonl
    already there holds more done rows (a resumed run stopped by a signal, a damaged store, a full
    disk): a worse file never replaces a better one; this run's results go to STOPPED_RESULTS_FILE."""
    if not stopped:
        return RESULTS_FILE
    try:
        with (out_dir / RESULTS_FILE).open(encoding="utf-8") as handle:
            before = sum('"status": "done"' in line for line in handle)  # quotes inside values are escaped
    except (OSError, UnicodeDecodeError):
        return RESULTS_FILE
    return STOPPED_RESULTS_FILE if before > done else RESULTS_FILE


def _crashing_halfway(lines: Iterable[str]) -> Iterable[str]:
    for number, line in enumerate(lines):
        if number == 100:
            crash_point("results")
        yield line


def _json_value(value: Any) -> Any:
    """An artifact as its path plus what the stage recorded (size, seed, sample rate...)."""
    if isinstance(value, Artifact):
        return {"path": value.relpath, **value.metadata}
    return str(value)


class ArtifactWriter:
    """Saves stage artifacts as `artifacts/<stage>/<row>.<port><suffix>` inside the output folder.

    Names are built from the stage id (validated to `[a-z0-9_]`), the row's identity (a hex digest,
    `row_identity.py`; an int is written as a zero-padded index) and the port name, never from row
    values, so nothing can be written outside the folder. Naming by identity, not position, keeps
    a re-run over an edited input from overwriting a stored row's artifact with another row's. Each file is
    written to a temporary name, fsynced and renamed; the returned Artifact carries the sha256 of
    its bytes (`digest`), which downstream cache keys use. A run store records the item only after
    this returns, so a recorded artifact is always complete; a kill before that re-runs the item,
    which rewrites the same name.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir

    def save(self, stage_id: str, row: str | int, port: str, artifact: ArtifactData, take: int = 0) -> Artifact:
        """`take` > 0 (a re-take of the row, review/takes.py) names a file of its own: every take is kept."""
        metadata = dict(artifact.metadata)
        for name, attachment in artifact.attachments.items():  # written first: the main file commits last
            if _SAFE_NAME.match(name):
                metadata[name] = self.save(stage_id, row, f"{port}.{name}", attachment, take).relpath
        suffix = artifact.suffix if _SAFE_SUFFIX.match(artifact.suffix) else ".bin"
        name = (f"{row:06d}" if isinstance(row, int) else row) + (f".take{take}" if take else "")
        relpath = f"artifacts/{stage_id}/{name}.{port}{suffix}"
        path = checked_path(self.out_dir, relpath)
        write_atomic(path, [artifact.data])
        digest = hashlib.sha256(artifact.data).hexdigest()
        return Artifact(relpath, path.resolve(), metadata, digest)
