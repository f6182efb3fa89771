"""Which row a review decision names: its identity (results.jsonl `id`), never its position.

Decisions and takes are keyed by the row's identity (row_identity.py), so sorting, inserting or
deleting rows of the sheet between a review and `--retake` keeps every decision with its row. A
caller may still name a row by its number (results.jsonl `row`, as older versions did):
`resolve_row` looks that row's identity up in results.jsonl.

A store reviewed by an older aigc-pipeline keyed its decisions by row number, and says nothing
about it (no `keys` entry in `review_meta`). While results.jsonl carries no `id` (that older
version wrote it), row numbers keep naming rows as they did then. Once a run writes results with
ids, `rekey` moves each decision and take to the identity of the row that has its number in
that results.jsonl, and marks the store: from then on, positions no longer matter.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..gallery import row_id
from ..report_scan import read_records
from ..row_identity import IDENTITY_DIGEST_BYTES
from ..sinks import RESULTS_FILE

KEYED_BY_IDENTITY = ("keys", "identity")  # the `review_meta` entry of a store keyed by row identity


def resolve_row(out_dir: Path, row: str) -> str:
    """The identity of the row `row` names: `row` itself, or for a row number the `id` results.jsonl
    gives that row (the number itself when the results carry no ids, or have no such row)."""
    if not (row.isdigit() and len(row) < 2 * IDENTITY_DIGEST_BYTES):  # an identity (20 hex digits)
        return row
    number = int(row)
    for record in read_records(out_dir / RESULTS_FILE):
        if record.get("row") == number:
            return row_id(record)
    return row


def keyed_by_position(db: sqlite3.Connection, out_dir: Path) -> bool:
    """True while the store's decisions are keyed by row number (an older version reviewed it and
    results.jsonl has no ids yet); re-keys them by identity first when it can."""
    marked = db.execute("SELECT value FROM review_meta WHERE name = ?", KEYED_BY_IDENTITY[:1]).fetchone()
    if marked is not None:
        return False
    if db.execute("SELECT 1 FROM reviews UNION ALL SELECT 1 FROM takes LIMIT 1").fetchone() is None:
        return False  # nothing reviewed yet: the first decision marks it (`mark_keyed_by_identity`)
    return not rekey(db, out_dir)


def mark_keyed_by_identity(db: sqlite3.Connection) -> None:
    db.execute("INSERT OR IGNORE INTO review_meta VALUES (?, ?)", KEYED_BY_IDENTITY)


def rekey(db: sqlite3.Connection, out_dir: Path) -> bool:
    """Move decisions and takes keyed by row number to the identities results.jsonl gives those
    rows; False (nothing changed) when its results carry no ids. A number no row has keeps its key."""
    numbers = {row for (row,) in db.execute("SELECT row FROM reviews UNION SELECT row FROM takes")}
    identities: dict[str, str] = {}
    any_record = False
    for record in read_records(out_dir / RESULTS_FILE):
        if "id" not in record:
            return False
        any_record = True
        if (number := str(record.get("row"))) in numbers:
            identities[number] = row_id(record)
    if not any_record:
        return False
    db.execute("BEGIN IMMEDIATE")
    try:
        for number, identity in identities.items():
            db.execute("UPDATE reviews SET row = ? WHERE row = ?", (identity, number))
            db.execute("UPDATE takes SET row = ? WHERE row = ?", (identity, number))
        mark_keyed_by_identity(db)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return True
