"""Defects 2 and 8: hostile input files and pipeline files end in a clear message, never a traceback.

A bad row is rejected with its line and the other rows run; a file that cannot serve at all is
refused before anything runs, saying what, where and what to do.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from reliability_support import TEXT_PIPELINE, aigc, small_tmpfs

from aigc_pipeline.limits import MAX_CELL_CHARS, MAX_NESTING


def run_rows(tmp_path: Path, name: str, content: str, pipeline: str = TEXT_PIPELINE) -> tuple[int, str, list[dict]]:
    (tmp_path / "p.yaml").write_text(pipeline, encoding="utf-8")
    (tmp_path / name).write_text(content, encoding="utf-8", errors="surrogatepass")
    code, output = aigc("run", str(tmp_path / "p.yaml"), "-i", str(tmp_path / name), "-o", str(tmp_path / "out"), "-q")
    results = tmp_path / "out" / "results.jsonl"
    records = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    return code, output, records


def test_a_lone_surrogate_rejects_that_row_only(tmp_path: Path) -> None:
    code, output, records = run_rows(tmp_path, "rows.jsonl", '{"text": "\\ud800"}\n{"text": "ok"}\n')
    assert code == 0, output
    assert [r["status"] for r in records] == ["rejected", "done"]
    assert "lone surrogate" in records[0]["error"]["reason"] and "line 1" in records[0]["error"]["reason"]


@pytest.mark.parametrize("column_type", ["any", "list[str]"])
def test_deeply_nested_jsonl_values_reject_that_row(tmp_path: Path, column_type: str) -> None:
    pipeline = TEXT_PIPELINE.replace("{text: str}", f"{{text: '{column_type}'}}")
    rows = '{"text": ' + "[" * 5000 + "]" * 5000 + '}\n{"text": ' + "[" * 40 + "]" * 40 + '}\n{"text": ["ok"]}\n'
    code, output, records = run_rows(tmp_path, "rows.jsonl", rows, pipeline)
    assert code == 0, output
    assert [r["status"] for r in records] == ["rejected", "rejected", "done"]
    assert all("nested" in r["error"]["reason"] for r in records[:2])


def test_a_deeply_nested_csv_cell_rejects_that_row(tmp_path: Path) -> None:
    pipeline = TEXT_PIPELINE.replace("{text: str}", "{text: dict}")
    deep = '"' + '{""a"": ' * 3000 + "1" + "}" * 3000 + '"'
    code, output, records = run_rows(tmp_path, "rows.csv", f'text\n{deep}\n"{{""a"": 1}}"\n', pipeline)
    assert code == 0, output
    assert [r["status"] for r in records] == ["rejected", "done"]


def test_a_huge_csv_cell_is_a_clear_error_with_its_line(tmp_path: Path) -> None:
    code, output, _ = run_rows(tmp_path, "rows.csv", "text\nok\n\"" + "a" * (MAX_CELL_CHARS + 10) + '"\n')
    assert code == 2 and "rows.csv:3:" in output and f"{MAX_CELL_CHARS:,} characters" in output


def test_a_long_text_below_the_limit_is_fine(tmp_path: Path) -> None:
    code, output, records = run_rows(tmp_path, "rows.csv", "text\n\"" + "a" * 200_000 + '"\n')
    assert code == 0 and records[0]["status"] == "done", output


def test_duplicate_header_names_are_an_error(tmp_path: Path) -> None:
    code, output, _ = run_rows(tmp_path, "rows.csv", "text,text\na,b\n")
    assert code == 2 and "'text' more than once" in output and "rows.csv:1:" in output


def test_extra_cells_reject_that_row(tmp_path: Path) -> None:
    code, output, records = run_rows(tmp_path, "rows.csv", "text\na,b,c\nok\n")
    assert code == 0, output
    assert [r["status"] for r in records] == ["rejected", "done"]
    assert records[0]["error"]["reason"].startswith("line 2: 3 cells, but the header names only 1 column")


def check_pipeline(tmp_path: Path, text: str | bytes, expected: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    code, output = aigc("validate", str(path))
    assert code == 2 and expected in output, output


def test_a_recursive_yaml_alias_is_refused(tmp_path: Path) -> None:
    text = "name: t\ninputs: {text: str}\nstages:\n  p: &a {uses: template, with: {template: x, more: [*a]}}\n"
    check_pipeline(tmp_path, text, f"nested deeper than {MAX_NESTING} levels")


def test_deep_yaml_nesting_is_refused(tmp_path: Path) -> None:
    check_pipeline(tmp_path, "name: t\nx: " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply")


def test_a_nul_byte_is_refused_with_its_line(tmp_path: Path) -> None:
    text = TEXT_PIPELINE.replace("x {{ text }}", "x \0 {{ text }}")
    check_pipeline(tmp_path, text, "p.yaml:5:")
    check_pipeline(tmp_path, text, "U+0000 is not allowed")


@pytest.mark.parametrize("expression", ["(" * 300 + "text" + ")" * 300, "-" * 3000 + "text"])
def test_deeply_nested_template_expressions_are_refused(tmp_path: Path, expression: str) -> None:
    check_pipeline(tmp_path, TEXT_PIPELINE.replace("x {{ text }}", "{{ " + expression + " }}"), "nest")


def test_a_huge_pipeline_file_is_refused_before_parsing(tmp_path: Path) -> None:
    check_pipeline(tmp_path, "name: t\n" + "#" * 11_000_000 + "\n", "over the limit of 1,048,576")


def test_an_output_folder_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(TEXT_PIPELINE)
    (tmp_path / "rows.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "out").write_text("a file")
    code, output = aigc("run", str(tmp_path / "p.yaml"), "-i", str(tmp_path / "rows.jsonl"), "-o",
                        str(tmp_path / "out"), "-q")
    assert code == 2 and "is a file, not a folder" in output


def test_a_read_only_output_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(TEXT_PIPELINE)
    (tmp_path / "rows.jsonl").write_text('{"text": "a"}\n')
    with small_tmpfs(tmp_path, read_only=True) as folder:
        code, output = aigc("run", str(tmp_path / "p.yaml"), "-i", str(tmp_path / "rows.jsonl"), "-o",
                            str(folder / "out"), "-q")
    assert code == 2 and "cannot write in the output folder" in output and "Read-only" in output
