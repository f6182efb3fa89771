"""Input limits: what one input value, one CSV cell and one pipeline file may hold.

Hostile or broken input must end in a clear message that says what and where, never in a
traceback from deep inside a parser (`RecursionError`, `_csv.Error`, `UnicodeEncodeError`) and
never after the engine has spent minutes and gigabytes on it. A row that breaks a limit is
rejected with its line; the other rows go on. A pipeline file that breaks one is refused before
it is parsed.
"""

from __future__ import annotations

import re
from typing import Any

MAX_CELL_CHARS = 1 << 20  # characters in one CSV cell or one text value of a row (1 Mi)
MAX_NESTING = 32  # levels of lists/dicts inside one input value
MAX_PIPELINE_BYTES = 1 << 20  # a pipeline file is a page of YAML; 1 MiB is far beyond any real one
MAX_TEMPLATE_NESTING = 32  # brackets inside one template expression
_SURROGATE = re.compile("[\ud800-\udfff]")


def value_problem(value: Any) -> str | None:
    """Why an input value cannot be used (too deep, a text too long, not valid Unicode), or None.

    Walks the value without recursion, so a value nested 100,000 levels deep is measured, not
    a RecursionError.
    """
    kind = type(value)
    if kind is str:  # the per-row fast path: most values are a text, a number or a list of texts
        return text_problem(value)
    if kind is int or kind is float or kind is bool or value is None:
        return None
    if kind is list and all(type(item) is str for item in value):
        return _texts_problem(value)
    return _walked_problem(value)


def _walked_problem(value: Any) -> str | None:
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                return problem
        elif isinstance(item, dict | list):
            if depth >= MAX_NESTING:
                return f"nested deeper than {MAX_NESTING} levels of lists/objects"
            children = list(item.items()) if isinstance(item, dict) else item
            for child in children:
                if isinstance(child, tuple):  # a key and its value
                    pending.extend((part, depth + 1) for part in child)
                else:
                    pending.append((child, depth + 1))
    return None


def _texts_problem(texts: list[str]) -> str | None:
    for text in reversed(texts):  # as value_problem's walk meets them: the last one first
        problem = text_problem(text)
        if problem:
            return problem
    return None


def text_problem(text: str) -> str | None:
    """Why a text cannot be used: over MAX_CELL_CHARS, or a lone surrogate (which no UTF-8 file,
    database or JSON output can hold: it would stop the run at the first write)."""
    if text.isascii() and len(text) <= MAX_CELL_CHARS:  # isascii reads a flag: no scan, no surrogate
        return None
    if len(text) > MAX_CELL_CHARS:
        return f"a text of {len(text):,} characters is over the limit of {MAX_CELL_CHARS:,}"
    found = _SURROGATE.search(text)
    if found:
        return (f"text holds a lone surrogate ({ascii(found.group(0))[1:-1]} at character {found.start()}), "
                "which is not valid Unicode; fix the text (an encoder wrote half of a character pair)")
    return None


def template_nesting(template: str) -> int:
    """The deepest nesting of brackets in a template's text: a cheap bound checked before Jinja's
    recursive parser and compiler see it."""
    depth = deepest = 0
    for char in template:
        if char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth = max(0, depth - 1)
    return deepest
