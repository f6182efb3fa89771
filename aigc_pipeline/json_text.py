"""JSON for the per-row paths: encoders built once (row identity, results.jsonl, cache keys), JSONL lines read.

`json.JSONEncoder.encode` builds a new C encoder (and a float-formatting closure) on every call:
about a microsecond a row, on paths that run once per row or per item-stage (benchmarks/overhead.py).
`compact_encoder` builds the C encoder once and gives the same text. It keeps no record of the
containers it is inside (so it is safe to share between threads); a value that contains itself
then exhausts the recursion limit, and is encoded again the standard way, which says so
(ValueError: Circular reference detected), as any value the fast path refuses is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

# None on an interpreter without the C accelerator: the standard encoder, as it is.
_c_make_encoder: Callable[..., Any] | None = getattr(json.encoder, "c_make_encoder", None)


def compact_encoder(
    *, sort_keys: bool = False, separators: tuple[str, str] = (", ", ": "), ensure_ascii: bool = False,
    default: Callable[[Any], Any] | None = None,
) -> Callable[[Any], str]:
    """A function giving `json.JSONEncoder(...).encode(value)`'s text for these options."""
    encoder = json.JSONEncoder(sort_keys=sort_keys, separators=separators, ensure_ascii=ensure_ascii,
                               default=default)
    standard = encoder.encode
    if _c_make_encoder is None:
        return standard
    item_separator, key_separator = separators
    quote = json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring
    fast = _c_make_encoder(None, encoder.default, quote, None, key_separator,
                           item_separator, sort_keys, False, True)

    def encode(value: Any) -> str:
        if type(value) is not dict:  # (a bare string is quoted by encode() itself)
            return standard(value)
        try:
            return "".join(fast(value, 0))
        except (RecursionError, ValueError):  # a cycle, or a value the C encoder refuses: say it the usual way
            return standard(value)

    return encode


# The C scanner where there is one (an attribute typeshed leaves out): (value, end) or StopIteration.
_SCAN: Callable[[str, int], tuple[Any, int]] = vars(json.JSONDecoder())["scan_once"]


def loads_line(text: str) -> Any:
    """`json.loads(text)` for one line of a JSONL file, the scanner called directly: most lines start
    with their value and end after it (a newline aside). Any other line goes through `json.loads`,
    which parses it again and says what is wrong (JSONDecodeError) exactly as it always does."""
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:  # leading space, or no value at all
        return json.loads(text)
    if end == len(text) or text[end:].isspace():
        return value
    return json.loads(text)  # extra data after the value: its error
