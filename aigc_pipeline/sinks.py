"""Run outputs on disk: `results.jsonl` (one line per input row, in input order).

Files are written to a temporary name in the same folder, flushed to disk and renamed, so a
reader (or a crash) never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.jsonl"


def write_atomic(path: Path, chunks: Iterable[str]) -> None:
    """Write text to `path` via a temporary file in the same folder, fsync, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_results(out_dir: Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write results.jsonl: one JSON object per row, non-JSON values rendered as strings."""
    path = out_dir / RESULTS_FILE
    write_atomic(path, (json.dumps(record, ensure_ascii=False, default=str) + "\n" for record in records))
    return path
