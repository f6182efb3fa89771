"""Row identity: what names a row across runs, whatever its position in the input file.

A pipeline may declare `key: [column, ...]`, the columns that identify a row (a SKU, an article
id). Without it, a row's identity is a hash of its declared input values plus its occurrence
number among identical rows, so exact duplicates stay distinct (the second copy of a row is
"occurrence 1"). Seeds (`seeding.item_seed`), run-store keys and artifact names derive from the
identity, never from the row's position: sorting, inserting or deleting rows in a weekly sheet
keeps every other row's outputs and stored results.

With `key:`, two rows with the same key values are ambiguous: the later one is rejected, its
reason naming both lines; the first one runs. Rows rejected for other reasons get no identity.
Identities are computed while the rows stream past: memory grows with the number of distinct
rows (one short hash each), not with their contents.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

from .sources import InputRow

IDENTITY_DIGEST_BYTES = 10  # 20 hex digits: no collision in any realistic sheet


def identify_rows(rows: Iterable[InputRow], key: list[str] | None) -> Iterator[InputRow]:
    """The rows, in order, each with its `identity` set (or rejected as a duplicate key)."""
    first_line: dict[str, int] = {}  # keyed: identity -> the line that holds it
    seen: dict[str, int] = {}  # unkeyed: value hash -> how many rows had it so far
    for row in rows:
        if row.values is None:
            yield row
            continue
        if key:
            identity = row_identity(row.values, key)
            earlier = first_line.setdefault(identity, row.line)
            if earlier != row.line:
                shown = ", ".join(f"{column}={row.values[column]!r}" for column in key)
                yield replace(row, values=None, error=f"line {row.line}: duplicate key ({shown}): "
                              f"line {earlier} has the same; rows of a keyed input need distinct keys")
                continue
        else:
            values = _digest(row.values)
            occurrence = seen.get(values, 0)
            seen[values] = occurrence + 1
            identity = values if occurrence == 0 else row_identity(row.values, None, occurrence)
        yield replace(row, identity=identity)


def row_identity(values: dict[str, Any], key: list[str] | None = None, occurrence: int = 0) -> str:
    """The identity of a row with these declared input values (`key`: the pipeline's `key:` columns;
    `occurrence`: how many identical rows came before it in an unkeyed input)."""
    if key:
        return _digest({column: values[column] for column in key})
    digest = _digest(values)
    return digest if occurrence == 0 else _digest({"row": digest, "occurrence": occurrence})


def group_identity(stage_id: str, key: str) -> str:
    """The identity of a group a reducing stage made: from its key (any text), as a safe name."""
    return "g" + _digest({"stage": stage_id, "group": key})


def _digest(values: dict[str, Any]) -> str:
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.blake2b(text.encode(), digest_size=IDENTITY_DIGEST_BYTES).hexdigest()
