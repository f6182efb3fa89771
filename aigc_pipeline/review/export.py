"""`aigc export OUT --approved --to DIR|file.zip|file.csv|file.parquet`: what a reviewer approved.

Each approved row is exported with the take that was approved (its texts and its files), named
from the row's `key:` columns (from the input file the manifest names; the row number when the
pipeline has no key or the input is gone): `<name>.<output>.<ext>`, e.g. `sku-123.image.png`.

- a folder or a .zip: one file per output (texts as .txt), plus `approved.jsonl` listing them;
- a .csv or .parquet: one line per row (name, row, take, key columns, texts; files as paths
  relative to the table, copied into `<table name>_files/` beside it).
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from ..errors import MissingDependencyError, ReviewError
from ..gallery import row_id, safe_artifact_path
from ..manifest import read_manifest
from ..report import read_inputs
from ..report_scan import read_records
from ..sinks import RESULTS_FILE, write_atomic
from .decisions import APPROVED, ReviewStore
from .takes import take_outputs

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Approved:
    """One approved row, ready to write: its file-name stem, take, key values, texts and files."""

    name: str
    row: Any
    take: int
    keys: dict[str, Any]
    texts: dict[str, str]
    files: dict[str, Path]  # output -> the artifact in the run's folder


def export_approved(out_dir: Path, target: Path) -> int:
    """Write the approved rows of `out_dir` to `target` (a folder, .zip, .csv or .parquet); return how many."""
    rows = list(approved_rows(out_dir))
    suffix = target.suffix.lower()
    if suffix == ".zip":
        _write_zip(rows, target)
    elif suffix == ".csv":
        _write_table(rows, target, _csv)
    elif suffix == ".parquet":
        _write_table(rows, target, _parquet)
    elif suffix and not target.is_dir():
        raise ReviewError(f"--to {target}: write to a folder, a .zip, a .csv or a .parquet file")
    else:
        _write_folder(rows, target)
    return len(rows)


def approved_rows(out_dir: Path) -> Iterator[Approved]:
    """Each approved row of the run, with the outputs of its approved take, in row order."""
    store = ReviewStore.open(out_dir)
    manifest = read_manifest(out_dir) or {}
    key_columns = _key_columns(manifest)
    try:
        reviews = {row: r for row, r in store.reviews().items() if r.status == APPROVED}
        records = [r for r in read_records(out_dir / RESULTS_FILE) if row_id(r) in reviews]
        inputs = read_inputs(manifest, records)
        used: set[str] = set()
        for record in records:
            review = reviews[row_id(record)]
            take = review.approved_take or 0
            outputs = record.get("outputs") or {}
            if take != review.current_take:
                outputs = take_outputs(store, row_id(record), take) or outputs
            keys = {c: (inputs.get(record.get("row", -1)) or {}).get(c) for c in key_columns}
            yield _approved(out_dir, record, take, keys, outputs, used)
    finally:
        store.close()


def _approved(out_dir: Path, record: dict[str, Any], take: int, keys: dict[str, Any], outputs: dict[str, Any],
              used: set[str]) -> Approved:
    stem = "_".join(_UNSAFE.sub("-", str(v)).strip("-.") for v in keys.values() if v not in (None, ""))[:80]
    name = stem or f"row-{record.get('row')}"
    if name in used:
        name = f"{name}_row-{record.get('row')}"
    used.add(name)
    texts = {k: v for k, v in outputs.items() if isinstance(v, str)}
    files = {}
    for port, value in outputs.items():
        path = safe_artifact_path(value.get("path")) if isinstance(value, dict) else None
        if path is not None and (out_dir / path).is_file():
            files[port] = out_dir / path
    return Approved(name, record.get("row"), take, keys, texts, files)


def _files(row: Approved) -> Iterator[tuple[str, Path | str]]:
    """(relative name, source file or text) of every file a row exports."""
    for port, text in row.texts.items():
        yield f"{row.name}.{port}.txt", text
    for port, path in row.files.items():
        yield f"{row.name}.{port}{PurePosixPath(path.name).suffix}", path


def _listing(row: Approved) -> str:
    files = {name.split(".")[-2]: name for name, _ in _files(row)}
    entry = {"name": row.name, "row": row.row, "take": row.take, "keys": row.keys, "texts": row.texts, "files": files}
    return json.dumps(entry, ensure_ascii=False) + "\n"


def _write_folder(rows: list[Approved], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        for name, source in _files(row):
            if isinstance(source, Path):
                shutil.copyfile(source, folder / name)
            else:
                write_atomic(folder / name, [source])
    write_atomic(folder / "approved.jsonl", [_listing(row) for row in rows])


def _write_zip(rows: list[Approved], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.tmp")
    with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for row in rows:
            for name, source in _files(row):
                if isinstance(source, Path):
                    archive.write(source, name)
                else:
                    archive.writestr(name, source)
        archive.writestr("approved.jsonl", "".join(_listing(row) for row in rows))
    temp.replace(target)


def _write_table(rows: list[Approved], target: Path, writer: Any) -> None:
    files_dir = target.with_name(f"{target.stem}_files")
    records = []
    for row in rows:
        record: dict[str, Any] = {"name": row.name, "row": row.row, "take": row.take, **row.keys, **row.texts}
        for port, path in row.files.items():
            files_dir.mkdir(parents=True, exist_ok=True)
            copied = files_dir / f"{row.name}.{port}{path.suffix}"
            shutil.copyfile(path, copied)
            record[port] = f"{files_dir.name}/{copied.name}"
        records.append(record)
    target.parent.mkdir(parents=True, exist_ok=True)
    writer(records, target)


def _csv(records: list[dict[str, Any]], target: Path) -> None:
    columns = list(dict.fromkeys(column for record in records for column in record)) or ["name"]
    with target.open("w", encoding="utf-8", newline="") as handle:
        table = csv.DictWriter(handle, columns)
        table.writeheader()
        table.writerows(records)


def _parquet(records: list[dict[str, Any]], target: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependencyError("pyarrow", "exporting to .parquet") from None
    pq.write_table(pa.Table.from_pylist(records), target)


def _key_columns(manifest: dict[str, Any]) -> list[str]:
    """The pipeline's `key:` columns (from the pipeline text the manifest keeps), or []."""
    try:
        spec = yaml.safe_load((manifest.get("pipeline") or {}).get("text") or "") or {}
    except yaml.YAMLError:
        return []
    key = spec.get("key") if isinstance(spec, dict) else None
    if isinstance(key, str):
        return [key]
    return [str(column) for column in key] if isinstance(key, list) else []
