"""parquet_io / parquet_results: Parquet rows in (typed, checked, streamed), results.parquet out."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aigc_pipeline.engine import Engine
from aigc_pipeline.errors import InputDataError
from aigc_pipeline.sources import read_rows

COLUMNS = {"name": "str", "count": "int", "price": "float", "ok": "bool", "tags": "list[str]", "meta": "dict"}
PIPELINE = """
name: parquet_round_trip
inputs: {name: str, count: int, price: float, ok: bool, tags: "list[str]", meta: dict}
stages:
  line: {uses: template, with: {template: "{{ name }} x{{ count }} at {{ price }} {{ tags | join('/') }}"}}
outputs: {text: line.text, name: inputs.name, count: inputs.count, price: inputs.price, ok: inputs.ok,
          tags: inputs.tags, meta: inputs.meta}
"""


def table(rows: list[dict[str, object]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("name", pa.string()), ("count", pa.int64()), ("price", pa.float64()), ("ok", pa.bool_()),
        ("tags", pa.list_(pa.string())), ("meta", pa.string()), ("extra", pa.string())]))


def rows(count: int) -> list[dict[str, object]]:
    return [{"name": f"item {i}", "count": i, "price": i + 0.5, "ok": i % 2 == 0, "tags": [f"t{i}", "x"],
             "meta": json.dumps({"sku": i, "deep": {"a": [1, 2]}}), "extra": "ignored"} for i in range(count)]


def test_parquet_rows_are_typed_and_checked_with_row_numbers(tmp_path: Path) -> None:
    data = rows(5)
    data[3]["count"] = None  # a missing value: that row is rejected, with its row number
    path = tmp_path / "rows.parquet"
    pq.write_table(table(data), path, row_group_size=2)  # several row groups, read in order
    read = read_rows(path, COLUMNS)
    assert [row.index for row in read] == [0, 1, 2, 3, 4]
    assert read[3].values is None and read[3].error == "row 4: missing value for column 'count'"
    assert read[4].values == {"name": "item 4", "count": 4, "price": 4.5, "ok": True, "tags": ["t4", "x"],
                              "meta": {"sku": 4, "deep": {"a": [1, 2]}}}
    assert read_rows(path, COLUMNS, limit=2)[-1].index == 1


def test_a_wrong_type_is_rejected_with_its_row_number(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"name": ["a", "b"], "count": ["1", "two"]}), path)
    read = read_rows(path, {"name": "str", "count": "int"})
    assert read[0].values == {"name": "a", "count": 1}  # text that reads as the declared type passes, like CSV
    assert read[1].error is not None and read[1].error.startswith("row 2: column 'count': expected int")


def test_a_missing_column_or_a_broken_file_fails_before_anything_runs(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"nme": ["a"]}), path)
    with pytest.raises(InputDataError, match="lacks required column.*'name'.*did you mean 'nme'"):
        read_rows(path, {"name": "str"})
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(InputDataError, match="not a readable Parquet file"):
        read_rows(broken, {"name": "str"})


def test_parquet_in_and_out_round_trips_the_types(tmp_path: Path) -> None:
    data = rows(20)
    path = tmp_path / "rows.parquet"
    pq.write_table(table(data[:7]), path)
    data[7]["meta"] = "[1, 2]"  # a bad row (a list where a dict is declared): rejected, the rest run
    bad = tmp_path / "bad.parquet"
    pq.write_table(table(data), bad, row_group_size=4)
    engine = Engine()
    graph = engine.load_text(PIPELINE)
    result = engine.run(graph, path, tmp_path / "out", results_format="parquet")
    assert result.summary.counts["done"] == 7
    back = pq.read_table(tmp_path / "out" / "results.parquet")
    assert back.schema.field("count").type == pa.int64() and back.schema.field("ok").type == pa.bool_()
    assert back.schema.field("tags").type == pa.list_(pa.string())
    first = back.to_pylist()[1]
    assert first["text"] == "item 1 x1 at 1.5 t1/x" and first["status"] == "done" and first["row"] == 1
    assert (first["count"], first["price"], first["ok"], first["tags"]) == (1, 1.5, False, ["t1", "x"])
    assert json.loads(first["meta"]) == {"sku": 1, "deep": {"a": [1, 2]}}
    # and the results file reads back as input: every type comes back as it went in
    again = read_rows(tmp_path / "out" / "results.parquet", COLUMNS)
    assert [row.values for row in again] == [dict(read.values or {}) for read in read_rows(path, COLUMNS)]

    mixed = engine.run(graph, bad, tmp_path / "mixed", results_format="parquet")
    lines = [json.loads(line) for line in (tmp_path / "mixed" / "results.jsonl").read_text().splitlines()]
    assert lines[7]["status"] == "rejected" and lines[7]["error"]["reason"].startswith("row 8: column 'meta'")
    assert mixed.summary.counts["done"] == 19
    assert pq.read_table(tmp_path / "mixed" / "results.parquet").column("status").to_pylist()[7] == "rejected"


def test_the_cli_reads_parquet_and_writes_results_parquet_when_asked(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from aigc_pipeline.cli import app

    (tmp_path / "pipeline.yaml").write_text(PIPELINE, encoding="utf-8")
    pq.write_table(table(rows(3)), tmp_path / "rows.parquet")
    runner = CliRunner()
    args = ["run", str(tmp_path / "pipeline.yaml"), "-i", str(tmp_path / "rows.parquet"), "-q"]
    done = runner.invoke(app, [*args, "-o", str(tmp_path / "out"), "--format", "parquet"])
    assert done.exit_code == 0, done.output
    assert pq.read_table(tmp_path / "out" / "results.parquet").num_rows == 3
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == 3
    wrong = runner.invoke(app, [*args, "-o", str(tmp_path / "other"), "--format", "xlsx"])
    assert wrong.exit_code == 2 and "--format must be one of jsonl, parquet" in wrong.output
