"""Parquet in (pyarrow, the `parquet` extra); out: see parquet_results.py.

`-i rows.parquet` streams the file a row group (in record batches) at a time; its columns
must include the pipeline's declared ones (checked before anything runs, like a CSV header), and
every value is checked against its declared type like a CSV or JSONL value, so a bad row is
rejected with its row number ("row 7: ..."), the others run. A `dict` column may be a struct, a
map or JSON text; a list column a Parquet list.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import InputDataError, MissingDependencyError
from .spec import did_you_mean

BATCH_ROWS = 8192  # rows per record batch read, and per row group written


def pyarrow_module() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise MissingDependencyError("pyarrow", "Parquet input and output", extra="parquet") from None
    return pyarrow


def parquet_rows(path: Path, columns: dict[str, str]) -> tuple[int, Any]:
    """(rows in the file, a function that yields (row number, values) per row, lazily).

    Raises InputDataError now when the file is not Parquet or lacks a declared column.
    """
    pa = pyarrow_module()
    try:
        handle = pa.parquet.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputDataError(f"{path}: not a readable Parquet file ({exc})") from None
    names = handle.schema_arrow.names
    missing = [column for column in columns if column not in names]
    if missing:
        hints = [f"'{c}': {h}" for c, h in ((c, did_you_mean(c, names)) for c in missing) if h]
        raise InputDataError(
            f"{path}: the Parquet file lacks required column(s) {', '.join(repr(c) for c in missing)}; "
            f"it has: {', '.join(names) or 'nothing'}" + (f"; {'; '.join(hints)}" if hints else ""))

    def rows() -> Iterator[tuple[int, Any]]:
        number = 0
        wanted = list(columns)
        for batch in pa.parquet.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=wanted):
            for values in batch.to_pylist():
                number += 1
                yield number, {name: _plain(value, columns[name]) for name, value in values.items()}

    return handle.metadata.num_rows, rows


def _plain(value: Any, column_type: str) -> Any:
    """A map column comes as a list of (key, value) pairs: a dict column wants a dict."""
    if column_type == "dict" and isinstance(value, list) and all(isinstance(p, tuple) and len(p) == 2 for p in value):
        return dict(value)
    return value
