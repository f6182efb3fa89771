"""JSON text encoders built once, for the per-row paths (row identity, results.jsonl, cache keys).

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
