"""results.parquet (pyarrow, the `parquet` extra).

Out: `aigc run --format parquet` writes `results.parquet` beside results.jsonl: one row per input
row, in input order, with `row`, `id` (the row's identity), `line`, `status`, `error_stage`,
`error_reason`, `flags` and one column per pipeline output. Column types follow the declared
input types (`int` -> int64, `float` -> double, `bool`, `str`, `list[...]`) for outputs that pass
a column through; text outputs are strings, artifacts (images, audio) their path in the output
folder, anything else JSON text (a `dict` column too: reading it back as `dict` turns it into a
dict again). It is written as the rows finish, to a temporary file renamed at the end, like
results.jsonl.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .content import Artifact
from .parquet_io import BATCH_ROWS, pyarrow_module
from .sinks import new_temp_file

if TYPE_CHECKING:
    from .graph import PipelineGraph
    from .records import ItemResult

PARQUET_RESULTS_FILE = "results.parquet"


class ParquetResults:
    """results.parquet, written batch by batch to a temporary file (see the module docstring)."""

    def __init__(self, out_dir: Path, graph: PipelineGraph) -> None:
        pa = self._pa = pyarrow_module()
        self.out_dir = out_dir
        self.fields = _output_fields(graph)
        self.schema = pa.schema(
            [("row", pa.int64()), ("id", pa.string()), ("line", pa.int64()), ("status", pa.string()),
             ("error_stage", pa.string()), ("error_reason", pa.string()), ("flags", pa.list_(pa.string()))]
            + [(name, arrow) for name, (arrow, _) in self.fields.items()])
        fd, self.temp = new_temp_file(out_dir, PARQUET_RESULTS_FILE)
        os.close(fd)
        self.writer = pa.parquet.ParquetWriter(self.temp, self.schema)
        self.batch: list[dict[str, Any]] = []

    def add(self, result: ItemResult) -> None:
        error = result.error or {}
        record = {"row": result.row, "id": result.id, "line": result.line, "status": str(result.status),
                  "error_stage": error.get("stage"), "error_reason": error.get("reason"),
                  "flags": [f"{flag.get('stage')}: {flag.get('reason')}" for flag in result.flags]}
        for name, (_, convert) in self.fields.items():
            value = result.outputs.get(name)
            record[name] = None if value is None else convert(value)
        self.batch.append(record)
        if len(self.batch) >= BATCH_ROWS:
            self._write()

    def _write(self) -> None:
        if self.batch:
            self.writer.write_table(self._pa.Table.from_pylist(self.batch, schema=self.schema))
            self.batch = []

    def commit(self) -> Path:
        self._write()
        self.writer.close()
        path = self.out_dir / PARQUET_RESULTS_FILE
        with open(self.temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(self.temp, path)
        return path

    def discard(self) -> None:
        try:
            self.writer.close()
        finally:
            Path(self.temp).unlink(missing_ok=True)


def _output_fields(graph: PipelineGraph) -> dict[str, tuple[Any, Any]]:
    """Per row output: (its Arrow type, how a value becomes one)."""
    pa = pyarrow_module()
    inputs = graph.pipeline.spec.inputs
    fields: dict[str, tuple[Any, Any]] = {}
    for name, ref in graph.result_fields("row").items():
        column_type = inputs.get(ref.name) if ref.is_column else None
        fields[name] = _column_field(pa, column_type) if column_type else _value_field(pa)
    return fields


_SCALARS = {"int": "int64", "float": "float64", "bool": "bool_", "str": "string"}


def _column_field(pa: Any, column_type: str) -> tuple[Any, Any]:
    if column_type in _SCALARS:
        return getattr(pa, _SCALARS[column_type])(), _same
    if column_type.startswith("list[") and column_type[5:-1] in _SCALARS:
        return pa.list_(getattr(pa, _SCALARS[column_type[5:-1]])()), _same
    return _value_field(pa)


def _value_field(pa: Any) -> tuple[Any, Any]:
    """Text as it is; an artifact as its path; anything else as JSON text."""
    return pa.string(), _as_text


def _same(value: Any) -> Any:
    return value


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Artifact):
        return value.relpath
    return json.dumps(value, ensure_ascii=False, default=lambda v: v.relpath if isinstance(v, Artifact) else str(v))
