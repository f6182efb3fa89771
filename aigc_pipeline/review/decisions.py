"""Review decisions and takes, in the run store's SQLite file (`run.sqlite` of the output folder).

Three tables, created on first use (a store written before them opens unchanged; nothing else in
it moves, so its schema version stays):

    reviews(row, output, take, decision, note, at)   one decision per row ('' = the whole row)
                                                     or per output of a row, for one take
    takes(row, take, stages, outputs, at)             every take of a row: the stages it re-seeded
                                                     and the outputs it produced (results.jsonl form)
    review_meta(name, value)                          how rows are keyed (row_keys.py)

`row` is the row's identity (results.jsonl `id`), so a decision stays with its row when the sheet
is reordered; a row may also be named by its number (row_keys.py).

A row's review status: `approved` when a take of it was approved (the approved take is what
`aigc export --approved` exports), else `rejected` when the row or one of its outputs was rejected
in its current (latest) take, else `pending`. A retake makes a rejected row pending again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ReviewError
from ..store import STORE_FILE
from .row_keys import keyed_by_position, mark_keyed_by_identity, resolve_row

APPROVED, REJECTED, PENDING = "approved", "rejected", "pending"
DECISIONS = (APPROVED, REJECTED, PENDING)
WHOLE_ROW = ""  # the `output` of a decision about the whole row

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reviews(row TEXT NOT NULL, output TEXT NOT NULL, take INTEGER NOT NULL,
    decision TEXT NOT NULL, note TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY(row, output)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS takes(row TEXT NOT NULL, take INTEGER NOT NULL, stages TEXT NOT NULL,
    outputs TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY(row, take)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS review_meta(name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Decision:
    decision: str
    take: int
    note: str


@dataclass
class RowReview:
    """Everything decided about one row: its decisions by output ('' = whole row) and its takes."""

    decisions: dict[str, Decision]
    current_take: int = 0

    @property
    def status(self) -> str:
        whole = self.decisions.get(WHOLE_ROW)
        if whole is not None and whole.decision == APPROVED:
            return APPROVED
        if any(d.decision == REJECTED and d.take == self.current_take for d in self.decisions.values()):
            return REJECTED
        return PENDING

    @property
    def approved_take(self) -> int | None:
        whole = self.decisions.get(WHOLE_ROW)
        return whole.take if whole is not None and whole.decision == APPROVED else None

    def rejected_outputs(self, all_outputs: list[str]) -> list[str]:
        """The outputs a retake must produce again (all of them when the whole row was rejected)."""
        if self.status != REJECTED:
            return []
        current = {name: d for name, d in self.decisions.items()
                   if d.decision == REJECTED and d.take == self.current_take}
        return list(all_outputs) if WHOLE_ROW in current else [n for n in all_outputs if n in current]


class ReviewStore:
    """The review tables of one output folder's run store. Open with `ReviewStore.open`."""

    def __init__(self, db: sqlite3.Connection, out_dir: Path) -> None:
        self._db = db
        self.out_dir = out_dir
        # An older version's store, keyed by row number until a run writes results with ids (row_keys.py).
        self.by_position = keyed_by_position(db, out_dir)

    @classmethod
    def open(cls, out_dir: Path) -> ReviewStore:
        path = out_dir / STORE_FILE
        if not path.is_file():
            raise ReviewError(f"{out_dir} holds no run store ({STORE_FILE}); give the --out folder of a run")
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=60)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)
        return cls(db, out_dir)

    def close(self) -> None:
        self._db.close()

    def row_key(self, row: str) -> str:
        """How the tables key the row `row` names (its identity, or its number: see row_keys.py)."""
        return row if self.by_position else resolve_row(self.out_dir, row)

    def decide(self, row: str, decision: str, output: str = WHOLE_ROW, note: str = "", take: int | None = None) -> str:
        """Record a decision (`pending` clears it); returns the row's key. Approving a row settles its
        per-output decisions; rejecting one output withdraws the row's approval."""
        if decision not in DECISIONS:
            raise ReviewError(f"unknown decision {decision!r}: choose {', '.join(DECISIONS)}")
        row = self.row_key(row)
        take = self.current_take(row) if take is None else take
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if not self.by_position:
                mark_keyed_by_identity(db)
            if decision == PENDING:
                db.execute("DELETE FROM reviews WHERE row = ? AND output = ?", (row, output))
            else:
                if output == WHOLE_ROW and decision == APPROVED:
                    db.execute("DELETE FROM reviews WHERE row = ? AND output != ''", (row,))
                elif output != WHOLE_ROW:
                    db.execute("DELETE FROM reviews WHERE row = ? AND output = '' AND decision = ?", (row, APPROVED))
                db.execute("INSERT OR REPLACE INTO reviews VALUES (?, ?, ?, ?, ?, ?)",
                           (row, output, take, decision, note, time.time()))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return row

    def reviews(self) -> dict[str, RowReview]:
        """Every row with a decision or a take, by row identity."""
        found: dict[str, RowReview] = {}
        for row, output, take, decision, note in self._db.execute(
                "SELECT row, output, take, decision, note FROM reviews"):
            found.setdefault(row, RowReview({})).decisions[output] = Decision(decision, take, note)
        for row, take in self._db.execute("SELECT row, MAX(take) FROM takes GROUP BY row"):
            found.setdefault(row, RowReview({})).current_take = take
        return found

    def any(self) -> bool:
        return self._db.execute("SELECT 1 FROM reviews UNION ALL SELECT 1 FROM takes LIMIT 1").fetchone() is not None

    def current_take(self, row: str) -> int:
        found = self._db.execute("SELECT MAX(take) FROM takes WHERE row = ?", (self.row_key(row),)).fetchone()
        return int(found[0]) if found and found[0] is not None else 0

    def takes(self, row: str) -> list[tuple[int, list[str], dict[str, Any]]]:
        """(take, stages it re-seeded, outputs) of every stored take of a row, oldest first."""
        rows = self._db.execute("SELECT take, stages, outputs FROM takes WHERE row = ? ORDER BY take",
                                (self.row_key(row),))
        return [(take, json.loads(stages), json.loads(outputs)) for take, stages, outputs in rows]

    def stage_takes(self) -> dict[str, dict[str, int]]:
        """For each row with takes: the take each re-seeded stage is at (the latest take that re-seeded it)."""
        found: dict[str, dict[str, int]] = {}
        for row, take, stages in self._db.execute("SELECT row, take, stages FROM takes ORDER BY take"):
            for stage in json.loads(stages):
                found.setdefault(row, {})[stage] = take
        return found

    def record_take(self, row: str, take: int, stages: list[str], outputs: dict[str, Any]) -> None:
        if not self.by_position:
            mark_keyed_by_identity(self._db)
        self._db.execute("INSERT OR REPLACE INTO takes VALUES (?, ?, ?, ?, ?)", (self.row_key(row), take,
                         json.dumps(stages), json.dumps(outputs, ensure_ascii=False), time.time()))
