"""sources.read_rows: CSV / JSONL rows checked against the declared columns, bad rows with their line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aigc_pipeline.errors import InputDataError
from aigc_pipeline.limits import MAX_CELL_CHARS
from aigc_pipeline.sources import read_rows, stream_rows

COLUMNS = {"name": "str", "price": "float"}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(tmp_path: Path, *lines: object) -> Path:
    return write(tmp_path, "rows.jsonl", "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))


def test_csv_rows_are_converted_to_the_declared_types(tmp_path: Path) -> None:
    columns = {"n": "int", "x": "float", "ok": "bool", "tags": "list[str]", "nums": "list[int]", "meta": "dict"}
    path = write(tmp_path, "rows.csv", 'n,x,ok,tags,nums,meta\n3,2.5,yes,a|b,"[1, 2]","{""k"": 1}"\n')
    [row] = read_rows(path, columns)
    assert row.error is None
    assert row.values == {"n": 3, "x": 2.5, "ok": True, "tags": ["a", "b"], "nums": [1, 2], "meta": {"k": 1}}
    assert (row.index, row.line) == (0, 2)


def test_jsonl_rows_keep_their_values_and_lines(tmp_path: Path) -> None:
    path = jsonl(tmp_path, {"name": "a", "price": 1}, "", {"name": "b", "price": 2.5, "extra": True})
    rows = read_rows(path, COLUMNS)
    assert [(r.index, r.line, r.values) for r in rows] == [
        (0, 1, {"name": "a", "price": 1}),
        (1, 3, {"name": "b", "price": 2.5}),  # the blank line is skipped but still counted
    ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"name": "a"}', "line 2: missing value for column 'price'"),
        ('{"name": "a", "price": null}', "line 2: missing value for column 'price'"),
        ('{"name": "a", "price": "cheap"}', "line 2: column 'price': expected float, got str 'cheap'"),
        ('{"name": "a", "price": true}', "line 2: column 'price': expected float, got a boolean"),
        ('{"name": 7, "price": 1}', "line 2: column 'name': expected str, got int 7"),
        ('{"name": "a", "price": ', "line 2: not valid JSON"),
        ('["a", 1]', "line 2: expected a JSON object, got list"),
        ("42", "line 2: expected a JSON object, got int"),
    ],
)
def test_a_bad_jsonl_row_is_rejected_with_its_line(tmp_path: Path, line: str, reason: str) -> None:
    path = jsonl(tmp_path, {"name": "ok", "price": 1}, line, {"name": "also ok", "price": 2})
    rows = read_rows(path, COLUMNS)
    assert [r.error is None for r in rows] == [True, False, True]
    assert rows[1].values is None and rows[1].line == 2
    assert rows[1].error is not None and rows[1].error.startswith(reason)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("b", "line 3: missing value for column 'price'"),
        ("b,abc", "line 3: column 'price': expected float, got str 'abc'"),
    ],
)
def test_a_bad_csv_row_is_rejected_with_its_line(tmp_path: Path, line: str, reason: str) -> None:
    path = write(tmp_path, "rows.csv", f"name,price\na,1\n{line}\nc,3\n")
    rows = read_rows(path, COLUMNS)
    assert [r.error for r in rows] == [None, reason, None]
    assert [r.line for r in rows] == [2, 3, 4]


def test_csv_lines_count_blank_lines_and_multi_line_cells(tmp_path: Path) -> None:
    path = write(tmp_path, "rows.csv", 'name,price\n\n"two\nlines",1\nb,x\n\n"c\n\nd",y\n')
    rows = read_rows(path, COLUMNS)
    assert rows[0].values == {"name": "two\nlines", "price": 1.0}
    # a row is reported at the line it starts on, not where csv finished reading it
    assert [r.line for r in rows] == [3, 5, 7]
    assert rows[2].error == "line 7: column 'price': expected float, got str 'y'"


def test_a_csv_header_without_a_required_column_fails_before_any_row(tmp_path: Path) -> None:
    path = write(tmp_path, "rows.csv", "nmae,price\na,1\n")
    with pytest.raises(InputDataError) as caught:
        read_rows(path, COLUMNS)
    message = str(caught.value)
    assert "rows.csv:1:" in message and "'name'" in message
    assert "header has: nmae, price" in message
    assert "'name': did you mean 'nmae'?" in message


def test_the_header_is_checked_even_when_no_row_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, "rows.csv", "title\nx\n")
    with pytest.raises(InputDataError, match="lacks required column"):
        read_rows(path, COLUMNS, limit=0)


def test_a_utf8_bom_does_not_hide_the_first_column(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("name,price\nä,1\n".encode("utf-8-sig"))
    [row] = read_rows(path, COLUMNS)
    assert row.values == {"name": "ä", "price": 1.0}


def test_limit_reads_only_the_first_rows(tmp_path: Path) -> None:
    path = jsonl(tmp_path, *({"name": str(i), "price": i} for i in range(5)))
    assert [r.values["name"] for r in read_rows(path, COLUMNS, limit=2) if r.values] == ["0", "1"]
    assert read_rows(path, COLUMNS, limit=0) == []


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("rows.txt", b"name,price\n", "unsupported input format '.txt'"),
        ("rows.csv", b"name,price\n\xff\xfe,1\n", "not UTF-8 text"),
    ],
)
def test_an_unusable_file_is_an_input_data_error(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputDataError, match=message):
        read_rows(path, COLUMNS)


@pytest.mark.parametrize("text", [
    "a,b\n1,2\n3,4\n", "a,b\n1,2\n\n3,4", "a,b\n\n\n1,2\n", "a,b\n", "a,b", "a,b\n  \n1,2\n", "\ufeffa,b\n1,2\n",
    'a,b\n"x\ny",2\n\n3,4\n', "a,b\r\n1,2\r\n\r\n",
])
def test_a_csv_is_counted_as_its_reader_reads_it(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "rows.csv", text)  # plain files are counted by lines, others by the reader
    assert len(stream_rows(path, {"a": "str"})) == len(read_rows(path, {"a": "str"}))


@pytest.mark.parametrize(("content", "message"), [
    (b"name,price\nok,1\n\xff,2\n", "not UTF-8 text"),
    (b"name,price\nok,1\n" + b"x" * (MAX_CELL_CHARS + 1) + b",2\n", "rows.csv:3: unreadable CSV"),
])
def test_a_csv_the_reader_would_stop_on_fails_when_it_is_opened(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "rows.csv"
    path.write_bytes(content)
    with pytest.raises(InputDataError, match=message):
        stream_rows(path, COLUMNS)  # before any row is read


def test_a_missing_file_is_an_input_data_error(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="cannot read input"):
        read_rows(tmp_path / "nope.jsonl", COLUMNS)


@pytest.mark.parametrize("name", ["rows.csv", "rows.jsonl"])
def test_only_gives_the_wanted_rows_as_a_full_read_does(tmp_path: Path, name: str) -> None:
    from aigc_pipeline.sources import stream_rows

    if name == "rows.csv":
        path = write(tmp_path, name, "name,price\na,1\n\nb,x,extra\nc,3\nd,4\n")  # a blank line, a row too long
    else:
        path = jsonl(tmp_path, {"name": "a", "price": 1}, "", "{broken", {"name": "c", "price": 3}, {"name": "d"})
    every = list(stream_rows(path, COLUMNS))
    wanted = {1, 2}
    assert list(stream_rows(path, COLUMNS).only(wanted)) == [row for row in every if row.index in wanted]
    assert list(stream_rows(path, COLUMNS).only(set())) == []
    uncounted = stream_rows(path, COLUMNS, 3, count=False)  # (the report's reader)
    assert list(uncounted.only(wanted)) == [row for row in every if row.index in wanted]


@pytest.mark.parametrize("name", ["rows.csv", "rows.jsonl"])
def test_rows_at_lines_are_those_a_full_read_gives(tmp_path: Path, name: str) -> None:
    if name == "rows.csv":  # a blank line, a row too long, a quoted cell over two lines, a row of spaces
        path = write(tmp_path, name, 'name,price\na,1\n\nb,x,extra\n"c\nc",3\n   \nd,4\ne,5')
    else:
        path = jsonl(tmp_path, {"name": "a", "price": 1}, "", "{broken", "  ", {"name": "c", "price": 3}, {"name": "d"})
    every = list(stream_rows(path, COLUMNS))
    for chosen in ([1, 2], [0, len(every) - 1], list(range(len(every)))):
        wanted = {every[index].line: index for index in chosen}
        assert list(stream_rows(path, COLUMNS, count=False).at_lines(wanted)) == [every[i] for i in sorted(chosen)]
    assert list(stream_rows(path, COLUMNS).at_lines({})) == []
