"""Row identity: what names a row across runs, whatever its position in the input file.

A pipeline may declare `key: [column, ...]`, the columns that identify a row (a SKU, an article
id). Without it, a row's identity is a hash of its declared input values plus its occurrence
number among identical rows, so exact duplicates stay distinct (the second copy of a row is
"occurrence 1"). Seeds (`seeding.item_seed`), run-store keys and artifact names derive from the
identity, never from the row's position: sorting, inserting or deleting rows in a weekly sheet
keeps every other row's outputs and stored results.

With `key:`, two rows with the same key values are ambiguous: the later one is rejected, its
reason naming both lines; the first one runs. Rows rejected for other reasons get no identity.

Identities are computed while the rows stream past, a window of rows at a time. What must be
remembered of every row (its digest, with the first line of a key or the number of copies of a
row so far) is kept in memory for the last `SPILL_ROWS` rows and goes to a private temporary
SQLite file beyond that (`SeenDigests`), looked up once per window: memory stays flat however
many rows the input has (a dict of 10 million digests would hold about 1.5 GB); the file (about
17 bytes a row, in the system temp folder) is deleted when the run ends, a kill included.
"""

from __future__ import annotations

import hashlib
import mmap
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import replace
from itertools import islice
from typing import Any

from .json_text import compact_encoder
from .sources import InputRow

IDENTITY_DIGEST_BYTES = 10  # 20 hex digits: no collision in any realistic sheet
WINDOW_ROWS = 4096  # rows identified per lookup in the digests seen so far
CACHE_KIB = 8192  # SQLite page cache of those digests: the memory they may take
# Digests kept in memory (about 12 MB) before they go to SQLite at once, sorted: an input of up to
# this many rows never opens the file, and a larger one inserts in long runs of neighbouring keys.
SPILL_ROWS = 1 << 17
FILTER_BITS = 1 << 27  # 16 MiB: a digest whose bit is clear was never seen (no lookup); 7% false hits at 10M rows

# The identity text of a row: sorted keys, no spaces, unicode kept, str() of anything else. Built
# once (json_text.py): `json.dumps` with these options builds a new encoder per call.
_encode = compact_encoder(sort_keys=True, separators=(",", ":"), default=str)


class IdentifiedRows:
    """`identify_rows(rows, key)`, iterable (once per iteration), keeping what it was made of: a
    backend that reads the input itself (executors/ray_input.py) reads `rows`' file with `key`."""

    def __init__(self, rows: Iterable[InputRow], key: list[str] | None) -> None:
        self.rows, self.key = rows, key

    def __iter__(self) -> Iterator[InputRow]:
        return identify_rows(self.rows, self.key)


def identify_rows(rows: Iterable[InputRow], key: list[str] | None) -> Iterator[InputRow]:
    """The rows, in order, each with its `identity` set (or rejected as a duplicate key).

    Rows are read a window ahead; an input that turns out unreadable half-way (the source raises)
    still yields every row read before the error, then raises it."""
    seen = SeenDigests()
    try:
        source = iter(rows)
        while True:
            window: list[InputRow] = []
            try:
                window.extend(islice(source, WINDOW_ROWS))  # keeps the rows read before an error
            except BaseException as exc:
                yield from _identify(window, key, seen)
                raise exc
            yield from _identify(window, key, seen)
            if len(window) < WINDOW_ROWS:
                return
    finally:
        seen.close()


def _identify(window: list[InputRow], key: list[str] | None, seen: SeenDigests) -> Iterator[InputRow]:
    """One window of rows with their identities; `seen` learns their digests once all are yielded."""
    digests = [None if row.values is None else _digest(_named(row.values, key)) for row in window]
    known = seen.lookup([digest for digest in digests if digest is not None])
    changed: dict[bytes, int] = {}
    for row, digest in zip(window, digests, strict=True):
        if digest is None:
            yield row
        elif key:
            earlier = known.setdefault(digest, row.line)
            if earlier != row.line:
                yield _duplicate_key(row, key, earlier)
                continue
            changed[digest] = row.line
            row.identity = digest.hex()
            yield row
        else:
            occurrence = changed[digest] = known[digest] = known.get(digest, 0) + 1
            row.identity = digest.hex() if occurrence == 1 else row_identity(row.values or {}, None, occurrence - 1)
            yield row
    seen.store(changed)


def _duplicate_key(row: InputRow, key: list[str], earlier: int) -> InputRow:
    shown = ", ".join(f"{column}={(row.values or {})[column]!r}" for column in key)
    return replace(row, values=None, error=f"line {row.line}: duplicate key ({shown}): "
                   f"line {earlier} has the same; rows of a keyed input need distinct keys")


def _named(values: dict[str, Any], key: list[str] | None) -> dict[str, Any]:
    """What names a row: its key columns, or all its declared values."""
    return {column: values[column] for column in key} if key else values


class SeenDigests:
    """Row digests seen so far in a run, each with a number (keyed input: the line of its first row;
    unkeyed: how many rows had it): the latest `SPILL_ROWS` in memory, the others in a private
    temporary SQLite file (opened at the first spill): flat memory at any size.

    A one-hash Bloom filter (a bit per digest, fixed size) spares the lookup of the digests never
    seen, i.e. nearly every row of an input without duplicates.

    SQLite deletes the file when the connection closes, or at once on POSIX (it is unlinked when
    opened), so a killed run leaves nothing behind. The stage thread that reads rows may change
    during a run (streaming.ChunkFeed reads under a lock), hence `check_same_thread=False`."""

    def __init__(self) -> None:
        self._db: sqlite3.Connection | None = None
        self._recent: dict[bytes, int] = {}  # stored since the last spill
        # Anonymous memory: zero pages the system maps as bits are set (a bytearray is written whole
        # at once: 16 MiB of memory and a few milliseconds for every run, a run of 8 rows too).
        self._filter = mmap.mmap(-1, FILTER_BITS // 8)

    def lookup(self, digests: list[bytes]) -> dict[bytes, int]:
        """The numbers of those of `digests` seen before (in an earlier `store` or earlier in this list)."""
        digests = self._maybe_seen(digests)
        if not digests:
            return {}
        recent = self._recent
        found = {digest: recent[digest] for digest in digests if digest in recent}
        older = [digest for digest in digests if digest not in found]
        if older and self._db is not None:
            marks = ",".join("?" * len(older))
            query = f"SELECT digest, number FROM seen WHERE digest IN ({marks})"  # noqa: S608 (only ? marks)
            found.update(self._db.execute(query, older).fetchall())
        return found

    def _maybe_seen(self, digests: list[bytes]) -> list[bytes]:
        """Those of `digests` whose bit was set already (they may have been seen); sets the bits of all."""
        bits, last, maybe = self._filter, FILTER_BITS - 1, []
        for digest in digests:
            bit = int.from_bytes(digest[:4], "little") & last
            byte, mask = bit >> 3, 1 << (bit & 7)
            was = bits[byte]
            if was & mask:
                maybe.append(digest)
            else:
                bits[byte] = was | mask
        return maybe

    def store(self, numbers: dict[bytes, int]) -> None:
        """Remember (or renumber) these digests."""
        self._recent.update(numbers)
        if len(self._recent) >= SPILL_ROWS:
            self._spill()

    def _spill(self) -> None:
        if self._db is None:
            self._db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
            for pragma in ("journal_mode=OFF", "synchronous=OFF", f"cache_size=-{CACHE_KIB}"):
                self._db.execute(f"PRAGMA {pragma}")
            self._db.execute("CREATE TABLE seen (digest BLOB PRIMARY KEY, number INTEGER NOT NULL) WITHOUT ROWID")
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR REPLACE INTO seen VALUES (?, ?)", sorted(self._recent.items()))
        self._db.execute("COMMIT")
        self._recent = {}

    def close(self) -> None:
        self._filter.close()
        if self._db is not None:
            self._db.close()


def row_identity(values: dict[str, Any], key: list[str] | None = None, occurrence: int = 0) -> str:
    """The identity of a row with these declared input values (`key`: the pipeline's `key:` columns;
    `occurrence`: how many identical rows came before it in an unkeyed input)."""
    digest = _digest(_named(values, key)).hex()
    return digest if key or occurrence == 0 else _digest({"row": digest, "occurrence": occurrence}).hex()


def group_identity(stage_id: str, key: str) -> str:
    """The identity of a group a reducing stage made: from its key (any text), as a safe name."""
    return "g" + _digest({"stage": stage_id, "group": key}).hex()


def _digest(values: dict[str, Any]) -> bytes:
    return hashlib.blake2b(_encode(values).encode(), digest_size=IDENTITY_DIGEST_BYTES).digest()
