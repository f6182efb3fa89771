"""The budgets of one template render, and how big a value is or an operation would make it.

The sandbox stops code from escaping, not work from piling up, so `GuardedSandbox`
(template_sandbox.py) charges every render against these budgets (a failing budget fails the
item, with the reason):
- steps: loop iterations plus calls (macros, methods, `loop(...)`), `MAX_STEPS`;
- size: every string or list a template builds (by `*`, `+`, `~`, `%`, a literal, a filter, a
  method, a block, the output) stays under `MAX_CHARS`, and all of them together under
  `MAX_BUILT`; operations that can multiply their input (`center(10**9)`, `'%999999999d'`,
  `replace`, `join`, ...) are checked *before* they run (`FILTER_GROWTH`, `METHOD_GROWTH`);
- integers built by `*` and `**` stay under `MAX_INT_BITS`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from string import Formatter
from typing import Any

from jinja2.exceptions import SecurityError

MAX_CHARS = 1_000_000  # the rendered text, and any one string or list a template builds
MAX_BUILT = 20_000_000  # all strings and lists a template builds, per render (bounds its CPU time)
MAX_STEPS = 100_000  # loop iterations plus calls, per render
MAX_INT_BITS = 10_000  # integers built by * and ** (about 3,000 digits)


@dataclass(slots=True)
class _Render:
    """Budgets of one render. `sizes` measures each container once (and keeps it alive, so its id
    is not reused), so a list holding the same big list twice is cheap to measure."""

    steps: int = 0
    built: int = 0
    sizes: dict[int, tuple[Any, int]] = field(default_factory=dict)


_RENDER: ContextVar[_Render | None] = ContextVar("aigc_template_render", default=None)


def _render() -> _Render:
    return _RENDER.get() or _Render()  # outside `render()` (a bare check): budgets of its own


def size_of(value: Any) -> int:
    """Roughly how many characters `value` prints as: string lengths, summed through containers."""
    if type(value) is str:  # the common case first: this runs on every value a render touches
        return len(value)
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, int):
        return value.bit_length() // 3 + 1
    if not isinstance(value, (list, tuple, set, frozenset, dict)):
        return len(value) if isinstance(value, range) else 1
    sizes = _render().sizes
    if id(value) not in sizes:
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        sizes[id(value)] = (value, len(value) + sum(map(size_of, items)))
    return sizes[id(value)][1]


def check_size(size: int, what: str) -> None:
    if size > MAX_CHARS:
        raise SecurityError(f"{what} would build about {size:,} characters (limit {MAX_CHARS:,})")


def sized(value: Any) -> Any:
    """Pass `value` on if it is within MAX_CHARS (list, tuple and dict literals; parts of `~`)."""
    check_size(size_of(value), "the template")
    return value


def built(value: Any, what: str = "the template") -> Any:
    """Pass on a value an operation built, charging its size to this render's budget."""
    size, render = size_of(value), _render()
    check_size(size, what)
    render.built += size
    if render.built > MAX_BUILT:
        raise SecurityError(f"the template built more than {MAX_BUILT:,} characters in all")
    return value


def step() -> None:
    """Count one loop iteration or call against this render's budget."""
    render = _render()
    render.steps += 1
    if render.steps > MAX_STEPS:
        raise SecurityError(f"the template ran more than {MAX_STEPS:,} loop iterations and calls")


def counted(iterable: Iterable[Any]) -> Iterator[Any]:
    """Every `{% for %}` iterates through this (see `_Guards`)."""
    for item in iterable:
        step()
        yield item


def checked_join(parts: Iterable[str]) -> str:
    """`Environment.concat`: joins the output (and blocks, macro results) up to MAX_CHARS.

    The outermost call is a whole render, so it holds that render's budgets.
    """
    token = _RENDER.set(_Render()) if _RENDER.get() is None else None
    try:
        kept: list[str] = []
        size = 0
        for part in parts:
            size += len(part)
            if size > MAX_CHARS:
                check_size(size, "the template output")
            kept.append(part)
        return "".join(kept)
    finally:
        if token is not None:
            _RENDER.reset(token)


def _width(value: Any) -> int:
    """A width or count argument in characters (`indent` also takes a string)."""
    return len(value) if isinstance(value, str) else value if isinstance(value, int) else 0


def _count(value: Any) -> int:
    return len(value) if type(value) in _SIZED or isinstance(value, Sized) else 0


_SIZED = frozenset({list, tuple, str, dict, set})  # the usual ones, without an ABC check


def _replace_size(text: Any, old: Any, new: Any) -> int:
    return size_of(text) + str(text).count(str(old)) * size_of(new)


def _translate_size(text: Any, table: Any) -> int:
    longest = max(map(size_of, table.values()), default=0) if isinstance(table, Mapping) else 1
    return size_of(text) * (1 + longest)


def format_size(fmt: str, values: Iterable[Any]) -> int:
    """Upper bound on the size of `fmt.format(...)`; a spec taking its width from a field is refused."""
    specs = [spec or "" for _, name, spec, _ in Formatter().parse(fmt) if name is not None]
    if any("{" in spec for spec in specs):
        raise SecurityError("a format spec may not contain a nested {field}")
    widths = sum(int(number) for spec in specs for number in re.findall(r"\d+", spec))
    return len(fmt) + widths + len(specs) * max(map(size_of, values), default=0)


_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d*)(?:\.(\*|\d*))?")


def printf_size(fmt: str, values: Any) -> int:
    """Upper bound on the size of `fmt % values`; a '*' width (taken from the values) is refused."""
    widths, count = _printf_specs(fmt)
    mapping = type(values) is dict or (type(values) is not tuple and isinstance(values, Mapping))
    items = values.values() if mapping else values if isinstance(values, tuple) else [values]
    return len(fmt) + widths + count * max(map(size_of, items), default=0)


@lru_cache(maxsize=256)  # a template's format strings are few and used on every row
def _printf_specs(fmt: str) -> tuple[int, int]:
    """(the widths and precisions written in `fmt`, summed; how many conversions it has)."""
    specs = _PRINTF_SPEC.findall(fmt)
    if any("*" in spec for spec in specs):
        raise SecurityError("a '*' width or precision in a format string is not allowed")
    return sum(int(number) for spec in specs for number in spec if number), len(specs)


# Upper bounds on the result of the filters that can grow their input by more than a small factor,
# computed from their bound arguments before they run. Every filter's result is also checked after.
FILTER_GROWTH: dict[str, Callable[[dict[str, Any]], int]] = {
    "center": lambda a: max(size_of(a["value"]), _width(a["width"])),
    "indent": lambda a: (size_of(a["s"]) + 1) * (1 + _width(a["width"])),
    "wordwrap": lambda a: size_of(a["s"]) * (1 + size_of(a["wrapstring"] or "\n")),
    "replace": lambda a: _replace_size(a["s"], a["old"], a["new"]),
    "join": lambda a: size_of(a["value"]) + _count(a["value"]) * size_of(a["d"]),
    "format": lambda a: printf_size(str(a["value"]), a["kwargs"] or a["args"]),
    "batch": lambda a: size_of(a["value"]) + (_width(a["linecount"]) if a["fill_with"] is not None else 0),
    "slice": lambda a: size_of(a["value"]) + _width(a["slices"]),
    "tojson": lambda a: size_of(a["value"]) * (1 + _width(a["indent"])),
    "urlize": lambda a: size_of(a["value"]) * (8 + size_of(a["target"]) + size_of(a["rel"])),
    "sum": lambda a: size_of(a["iterable"])
    * (1 if isinstance(a["start"], (int, float)) else 1 + _count(a["iterable"])),
}

# The same for builtin methods of str, bytes and int, from the positional arguments (self first).
METHOD_GROWTH: dict[str, Callable[..., int]] = {
    "center": lambda s, width, *_: max(size_of(s), _width(width)),
    "ljust": lambda s, width, *_: max(size_of(s), _width(width)),
    "rjust": lambda s, width, *_: max(size_of(s), _width(width)),
    "zfill": lambda s, width, *_: max(size_of(s), _width(width)),
    "expandtabs": lambda s, tabsize, *_: (size_of(s) + 1) * (1 + _width(tabsize)),
    "replace": lambda s, old, new, *_: _replace_size(s, old, new),
    "join": lambda s, items, *_: size_of(items) + _count(items) * size_of(s),
    "translate": lambda s, table, *_: _translate_size(s, table),
    "to_bytes": lambda n, length, *_: _width(length),
}


def check_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise SecurityError(f"an integer of about {bits:,} bits is too large (limit {MAX_INT_BITS:,})")

