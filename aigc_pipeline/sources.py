"""Input rows from CSV or JSONL files, checked against the pipeline's declared columns.

A file that cannot serve the pipeline at all (unreadable, a CSV header without a required column)
raises `InputDataError` before anything loads. A single bad row (missing value, wrong type,
broken JSON) is returned rejected, with its line number, and the other rows go on.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from itertools import chain, islice
from pathlib import Path
from typing import Any

from .content import check_column_value
from .errors import InputDataError
from .json_text import loads_line
from .limits import MAX_CELL_CHARS, MAX_NESTING, value_problem
from .parquet_io import parquet_rows
from .spec import did_you_mean

SUPPORTED_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet")
_TRUE = {"true", "1", "yes", "y"}
_FALSE = {"false", "0", "no", "n"}


@dataclass
class InputRow:
    """One input row: its 0-based index, its line in the file, and its values or why it was rejected.

    `identity` names the row across runs (`row_identity.identify_rows` sets it)."""

    index: int
    line: int
    values: dict[str, Any] | None
    error: str | None = None
    identity: str | None = None


def read_rows(path: str | Path, columns: dict[str, str], limit: int | None = None) -> list[InputRow]:
    """Read and check every row (at most `limit`) of a CSV or JSONL file."""
    return list(stream_rows(path, columns, limit))


def stream_rows(path: str | Path, columns: dict[str, str], limit: int | None = None, count: bool = True
                ) -> RowStream:
    """The rows of a CSV, JSONL or Parquet file, read and checked as they are iterated (once).

    What makes the file unusable is raised now, before anything runs: unreadable, not UTF-8 (the
    rows are counted now, which reads the file through once), a CSV header without a column.
    `count=False` (with a `limit`) skips the count, for a reader that wants a few rows: `total` is
    then the limit, an upper bound.
    """
    path = Path(path)
    csv.field_size_limit(MAX_CELL_CHARS)  # the default, 128 Ki, is below a long text; over it, a clear error
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise InputDataError(f"{path}: unsupported input format '{suffix or '(none)'}'; "
                             "use .csv, .jsonl or .parquet")
    if suffix == ".parquet":
        with _reading(path):
            total, parquet = parquet_rows(path, columns)
        return RowStream(path, columns, total if limit is None else min(total, limit), parquet)
    with _reading(path):
        # utf-8-sig: spreadsheet exports start with a BOM, which would otherwise hide the first column
        with path.open(encoding="utf-8-sig", newline="") as handle:
            if suffix == ".csv":
                _csv_rows(handle, path, columns)  # checks the header
            total = _count(handle, path, columns, suffix == ".csv") if count or limit is None else limit
    total = total if limit is None else min(total, limit)
    return RowStream(path, columns, total)


class RowStream:
    """Checked input rows, read lazily from the file; `total` is how many there are."""

    def __init__(self, path: Path, columns: dict[str, str], total: int, parquet: Any = None) -> None:
        self.path, self.columns, self.total = path, columns, total
        self.checks = column_checks(columns)
        self.parquet = parquet  # Parquet: yields (row number, values); see parquet_io.py

    def __len__(self) -> int:
        return self.total

    def __iter__(self) -> Iterator[InputRow]:
        return self._rows(None)

    def only(self, wanted: set[int]) -> Iterator[InputRow]:
        """The rows whose index is in `wanted`, checked; the others are parsed, not checked, and
        reading stops after the last one wanted (`at_lines` skips even the parsing, where rows have lines)."""
        return self._rows(wanted)

    def at_lines(self, wanted: dict[int, int]) -> Iterator[InputRow]:
        """The rows that start on these lines (line -> row index: as results.jsonl gives them),
        checked; the lines between are not parsed at all (the report shows a few rows of a large
        run). A Parquet file, which has no lines, is read by row index."""
        if self.parquet is not None:
            yield from self.only(set(wanted.values()))
            return
        csv_file = self.path.suffix.lower() == ".csv"
        with _reading(self.path), self.path.open(encoding="utf-8-sig", newline="") as handle:
            for line, values in _records_at(handle, set(wanted), csv_file):
                yield _checked(wanted[line], line, values, self.checks)

    def _rows(self, wanted: set[int] | None) -> Iterator[InputRow]:
        path, columns = self.path, self.columns
        last = self.total if wanted is None else min(self.total, max(wanted, default=-1) + 1)
        if self.parquet is not None:  # a Parquet row has a number, not a line: its errors say "row N"
            with _reading(path):
                for index, (number, values) in enumerate(islice(self.parquet(), last)):
                    if wanted is None or index in wanted:
                        row = _checked(index, number, values, self.checks)
                        yield row if row.error is None else replace(row, error="row" + row.error.removeprefix("line"))
            return
        with _reading(path), path.open(encoding="utf-8-sig", newline="") as handle:
            csv_file = path.suffix.lower() == ".csv"
            raw = _csv_rows(handle, path, columns) if csv_file else _jsonl_rows(handle)
            for index, (line, values) in enumerate(islice(raw, last)):
                if wanted is None or index in wanted:
                    yield _checked(index, line, values, self.checks)


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise InputDataError(f"{path}: cannot read input: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputDataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _count(handle: Any, path: Path, columns: dict[str, str], csv_rows: bool) -> int:
    """Rows in the file: CSV records that are not blank lines, or JSONL lines that are not blank.

    A CSV the reader cannot parse is read again the slow way, which says where (InputDataError).
    """
    if not csv_rows:
        return sum(1 for text in handle if not text.isspace())
    plain = _plain_csv_rows(path)
    if plain is not None:
        return plain
    try:
        return sum(1 for cells in csv.reader(handle) if cells)
    except csv.Error:
        handle.seek(0)
        return sum(1 for _ in _csv_rows(handle, path, columns))


def _plain_csv_rows(path: Path) -> int | None:
    """The rows of a CSV with no quote, carriage return or NUL, counted without parsing it (a tenth of
    the time): then every non-empty line after the header is one row, as csv.reader reads them.
    None for any other file (and one with a line longer than a cell may be): the reader counts it.
    Decodes every byte, so a file that is not UTF-8 is still found now."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    rows, tail = -1, b""  # -1: the header
    with path.open("rb") as raw:
        while block := raw.read(1 << 20):
            decoder.decode(block)
            if b'"' in block or b"\r" in block or b"\0" in block:
                return None
            lines = (tail + block).split(b"\n")
            tail = lines.pop()  # the line the next block finishes
            if max(map(len, lines), default=0) > MAX_CELL_CHARS or len(tail) > MAX_CELL_CHARS:
                return None
            rows += len(lines) - lines.count(b"")
    decoder.decode(b"", final=True)
    return max(0, rows + (1 if tail else 0))


ColumnChecks = list[tuple[str, str, Callable[[str], Any] | None]]


def column_checks(columns: dict[str, str]) -> ColumnChecks:
    """(column, type, converter of its usual cell or None) per declared column, for `_checked`."""
    return [(column, column_type, _USUAL.get(column_type)) for column, column_type in columns.items()]


def _checked(index: int, line: int, values: Any, checks: ColumnChecks) -> InputRow:
    if isinstance(values, str):  # the reader already knows why this row is unusable
        return InputRow(index, line, None, values)
    row: dict[str, Any] = {}
    for column, column_type, usual in checks:
        value = values.get(column)
        if value is None:
            return InputRow(index, line, None, f"line {line}: missing value for column '{column}'")
        # The usual cell, a short ASCII text (no lone surrogate, within the limit), converted without
        # the general checks, which its result cannot fail (they were a tenth of a row's cost).
        if usual is not None and type(value) is str and value.isascii() and len(value) <= MAX_CELL_CHARS:
            try:
                row[column] = usual(value)
                continue
            except ValueError:  # the general path converts it again and says what is wrong
                pass
        if isinstance(value, str) and column_type != "str" and column_type != "any":
            value = _from_csv_text(value, column_type)
        reason = value_problem(value) or check_column_value(column_type, value)
        if reason:
            return InputRow(index, line, None, f"line {line}: column '{column}': {reason}")
        row[column] = value
    return InputRow(index, line, row)


def _texts_split(text: str) -> list[str]:
    """A list[str] cell of values separated by '|' (ValueError for a JSON array: the general path reads it)."""
    text = text.strip()
    if text.startswith("["):
        raise ValueError("a JSON array")
    return [part.strip() for part in text.split("|")] if text else []


# float() and int() skip the same surrounding whitespace as strip() (the general path's conversion).
_USUAL: dict[str, Callable[[str], Any]] = {"str": str, "float": float, "int": int, "list[str]": _texts_split}


def _csv_rows(handle: Any, path: Path, columns: dict[str, str]) -> Iterator[tuple[int, Any]]:
    """Check the header now (also for --limit 0), then yield (first line, record) per row."""
    reader = csv.reader(handle)
    header = next(reader, [])
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise InputDataError(f"{path}:1: the header names column(s) {', '.join(map(repr, twice))} more than once; "
                             "rename or remove the copies (which one the pipeline should read is unclear)")
    missing = [c for c in columns if c not in header]
    if missing:
        # name the column each hint is for: with two missing columns, bare hints are ambiguous
        hints = [f"'{c}': {h}" for c, h in ((c, did_you_mean(c, list(header))) for c in missing) if h]
        raise InputDataError(
            f"{path}:1: the header lacks required column(s) {', '.join(repr(c) for c in missing)}; "
            f"header has: {', '.join(header) or 'nothing'}" + (f"; {'; '.join(hints)}" if hints else "")
        )
    return _csv_records(reader, header, path)


def _csv_records(reader: Any, header: list[str], path: Path) -> Iterator[tuple[int, Any]]:
    # csv.reader, not DictReader: it yields blank lines, so a quoted multi-line cell still gets
    # the line its row starts on (reader.line_num is the line it ends on).
    end = reader.line_num
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # a cell over the field size limit, or a NUL byte
            raise InputDataError(f"{path}:{end + 1}: unreadable CSV ({exc}); a cell may hold at most "
                                 f"{MAX_CELL_CHARS:,} characters: fix or split that row") from None
        start, end = end + 1, reader.line_num
        if cells:  # a blank line is no row (as csv.DictReader skips it); short rows: missing values
            yield start, _too_many_cells(start, cells, header) or dict(zip(header, cells, strict=False))


def _too_many_cells(line: int, cells: list[str], header: list[str]) -> str | None:
    if len(cells) <= len(header):
        return None
    return (f"line {line}: {len(cells)} cells, but the header names only {len(header)} column(s) "
            "(a comma in an unquoted cell?)")


def _records_at(handle: Any, lines: set[int], csv_file: bool) -> Iterator[tuple[int, Any]]:
    """(line, record) of the rows that start on `lines` (a line number counts the file's lines, as
    csv.reader's does), parsed from there; a CSV row whose quoted cell spans lines is read whole."""
    header: list[str] = []
    number, last = 0, max(lines, default=0)
    if csv_file:
        head = csv.reader(handle)
        header, number = next(head, []), head.line_num
    while number < last:
        text = next(handle, None)
        if text is None:
            return
        number += 1
        if number not in lines or (text.isspace() if not csv_file else text in ("\n", "\r\n", "\r")):
            continue  # (no row starts on a blank line: wanted lines come from a read of the same file)
        if not csv_file:
            yield number, _jsonl_record(number, text)
            continue
        reader = csv.reader(chain([text], handle))
        start, cells = number, next(reader, [])
        number += reader.line_num - 1  # the lines a multi-line cell took
        yield start, _too_many_cells(start, cells, header) or dict(zip(header, cells, strict=False))


def _jsonl_rows(handle: Any) -> Iterator[tuple[int, Any]]:
    """(line, record or why it is unusable) per non-blank line."""
    for number, text in enumerate(handle, start=1):
        if text.strip():
            yield number, _jsonl_record(number, text)


def _jsonl_record(number: int, text: str) -> Any:
    """The JSON object on line `number`, or why it is unusable."""
    try:
        record = loads_line(text)
    except json.JSONDecodeError as exc:
        return f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})"
    except RecursionError:
        return f"line {number}: nested too deeply (at most {MAX_NESTING} levels of lists/objects)"
    if not isinstance(record, dict):
        return f"line {number}: expected a JSON object, got {type(record).__name__}"
    return record


def _from_csv_text(text: str, column_type: str) -> Any:
    """Convert a CSV cell to the declared type; on failure return the text (the check explains)."""
    stripped = text.strip()
    try:
        if column_type == "int":
            return int(stripped)
        if column_type == "float":
            return float(stripped)
        if column_type == "bool":
            lowered = stripped.lower()
            return True if lowered in _TRUE else False if lowered in _FALSE else text
        if column_type.startswith("list["):
            return _csv_list(stripped, column_type[5:-1])
        if column_type == "dict":
            return json.loads(stripped)
    except (ValueError, RecursionError):  # json.JSONDecodeError is a ValueError
        return text
    return text


def _csv_list(text: str, inner: str) -> Any:
    """A list cell is a JSON array, or values separated by '|'."""
    if text.startswith("["):
        return json.loads(text)
    parts = [p.strip() for p in text.split("|")] if text else []
    return [_from_csv_text(p, inner) if inner != "str" else p for p in parts]
