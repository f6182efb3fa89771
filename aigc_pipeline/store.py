"""The run store: every stage result of every row, in `run.sqlite` in the output folder.

Re-running the same command over the same output folder reuses every finished result and runs
only what is missing. A result is found again by its cache key (cache_keys.py: stage, params,
model, the row's seed and the inputs the stage consumed).

What is stored: outputs (JSON; artifacts as relative path + sha256 + size, checked to still be
there before reuse: stored_outputs.py) of items that passed the stage (also of rows another branch ended: see
branches.py), the verdict of items it filtered out (deterministic quality gates), and of items it
failed by its own verdict (`item.fail(reason)`: the prompt is too long, the text is empty), which
are final. A failure from an exception is not stored: it is often transient (out of memory, a
flaky program), so the next run tries it again. So a re-run of a finished run loads no model.

Crash safety: before a micro-batch runs, one "in-flight" marker per item is committed; the
item's result (after its artifacts are fsynced and renamed) and the removal of its marker are
committed together afterwards. A store opened with markers left over means the last run died
(kill -9, OOM killer, a segfault in model code): each of those items counts a crash and runs
alone next time, so a second crash pins the culprit; an item that crashed the process twice is
quarantined (failed, "quarantined: crashed the process twice") instead of crashing a third run.
`--fresh` (or a change of its inputs, params or model) gives it another chance.

One writer connection behind a lock serves every stage thread (Ray workers attach their own,
see `attach`); WAL mode with synchronous=NORMAL
survives a killed process (only a power loss can drop the last commits, which then re-run).
A lock file keeps two runs out of one folder.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

from .cache_keys import canonical_json, item_key, stage_prefix
from .errors import RunStoreError
from .signals import SIGNALLED_FILE
from .sinks import remove_stale_temp_files
from .store_commits import BackgroundCommits
from .store_files import STORE_FILE, check_integrity, connect, damaged, lock_folder, store_failure, unlock
from .store_pending import PendingResults
from .stored_outputs import decode_outputs, encode_outputs

# Re-exported: keys, stored outputs and the store's files were defined here before they had modules of their own.
__all__ = ["STORE_FILE", "NewResult", "RunStore", "canonical_json", "check_integrity", "damaged",
           "decode_outputs", "encode_outputs", "item_key", "stage_prefix", "store_failure"]

SCHEMA_VERSION = "2"  # 2: keys and seeds from row identity (1 keyed rows by position)
QUARANTINE_AFTER = 2  # crashes of the process with the item in flight
QUARANTINED = "quarantined: crashed the process twice"
CACHE_KIB = 32 * 1024  # SQLite's page cache (2 MiB by default): the pages random keys keep touching
# Pages the WAL may hold before they are copied into the database (1000 by default): random keys
# dirty the same pages again and again, and a checkpoint writes (and fsyncs) each page once.
CHECKPOINT_PAGES = 16384
_SQL_VARS = 500  # keys per SELECT ... IN (...)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results(key TEXT PRIMARY KEY, stage TEXT NOT NULL, item INTEGER NOT NULL,
    verdict TEXT NOT NULL, reason TEXT, outputs TEXT NOT NULL, flags TEXT NOT NULL, at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inflight(key TEXT PRIMARY KEY, stage TEXT NOT NULL, item INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS suspects(key TEXT PRIMARY KEY, stage TEXT NOT NULL, item INTEGER NOT NULL,
    crashes INTEGER NOT NULL) WITHOUT ROWID;
"""


@dataclass
class NewResult:
    key: str
    item: int
    verdict: str
    reason: str | None
    outputs: str  # encoded with encode_outputs
    flags: list[str]


class RunStore:
    """The SQLite store of one output folder. Thread-safe; open with `RunStore.open`."""

    def __init__(self, out_dir: Path, connection: sqlite3.Connection, lock_fd: int | None) -> None:
        self.out_dir = out_dir
        self._db = connection
        self._lock = threading.Lock()  # what is pending; taken before _db_lock, never after
        self._db_lock = threading.Lock()  # the connection: stage threads and the commit thread share it
        self._lock_fd = lock_fd
        self.crashed_items = 0  # items in flight when the previous run died
        self.stopped_items = 0  # items in flight when the previous run was stopped by a signal
        self._closed = False
        self._suspects: dict[str, int] = {}
        self._pending = PendingResults()  # finished, not committed yet (see finish)
        self.batched = True  # commit quick batches' results together (see finish)
        self._last_commit = 0.0  # time.monotonic() of the last commit of results
        self._commits = BackgroundCommits(self._commit)  # batched results: committed on their own thread
        # False: the store held no result when this run opened it (--fresh, a first run). A stage
        # then looks nothing up (stage_runner.py): only this run's results could be found, and a
        # stage's key comes up once per run (keys derive from row identities, unique in a run).
        # A worker's view (`attach`, worker_store.py) always looks.
        self.stored_before = True

    @classmethod
    def open(cls, out_dir: Path, identity: dict[str, Any], fresh: bool = False,
             retry_quarantined: bool = False) -> RunStore:
        """Open (or create) the store of `out_dir` for a pipeline with `identity` (name, inputs).

        Raises RunStoreError when the folder holds another pipeline's results, another run is
        using it, or the file is damaged. `fresh` discards what the store holds;
        `retry_quarantined` gives quarantined items one more chance (they run alone).
        """
        out_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = lock_folder(out_dir)
        try:
            if fresh:
                for suffix in ("", "-wal", "-shm"):
                    (out_dir / (STORE_FILE + suffix)).unlink(missing_ok=True)
            db = connect(out_dir)
            store = cls(out_dir, db, lock_fd)
            store._setup(identity, retry_quarantined)
        except sqlite3.DatabaseError as exc:
            unlock(lock_fd)
            raise RunStoreError(store_failure(out_dir, exc)) from None
        except BaseException:
            unlock(lock_fd)
            raise
        remove_stale_temp_files(out_dir)
        return store

    @classmethod
    def attach(cls, out_dir: Path) -> RunStore:
        """Another process's connection to the store a run has open (`open`): Ray workers look up
        and record results through it. It takes no folder lock (the run holds it) and leaves the
        crash counts alone (the run counted them when it opened the store)."""
        db = connect(out_dir)
        store = cls(out_dir, db, None)
        store.batched = False  # a worker's batch is committed when it is done: no flush at the end of the run
        db.execute("PRAGMA synchronous=NORMAL")
        store._suspects = dict(db.execute("SELECT key, crashes FROM suspects").fetchall())
        return store

    def _setup(self, identity: dict[str, Any], retry_quarantined: bool = False) -> None:
        db = self._db
        check_integrity(db)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        db.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
        db.executescript(_SCHEMA)
        wanted = canonical_json({"schema": SCHEMA_VERSION, **identity})
        row = db.execute("SELECT value FROM meta WHERE name = 'identity'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES ('identity', ?)", (wanted,))
        elif row[0] != wanted:
            raise RunStoreError(_mismatch(self.out_dir, json.loads(row[0]), json.loads(wanted)))
        self._count_crashes(retry_quarantined)
        self.stored_before = db.execute("SELECT 1 FROM results LIMIT 1").fetchone() is not None

    def _count_crashes(self, retry_quarantined: bool = False) -> None:
        """Count a crash against each item left in flight, unless the last run was stopped by a
        signal (signals.SIGNALLED_FILE): an outside stop is no evidence against the items."""
        db = self._db
        signalled = self.out_dir / SIGNALLED_FILE
        db.execute("BEGIN IMMEDIATE")
        crashed = db.execute("SELECT key, stage, item FROM inflight").fetchall()
        if signalled.exists():
            self.stopped_items, crashed = len(crashed), []
        db.executemany(
            "INSERT INTO suspects VALUES (?, ?, ?, 1) ON CONFLICT(key) DO UPDATE SET crashes = crashes + 1", crashed
        )
        if retry_quarantined:  # one crash left on the count: they run alone, and one more crash quarantines
            db.execute("UPDATE suspects SET crashes = 1 WHERE crashes >= ?", (QUARANTINE_AFTER,))
        db.execute("DELETE FROM inflight")
        db.execute("COMMIT")
        signalled.unlink(missing_ok=True)
        self.crashed_items = len(crashed)
        self._suspects = dict(db.execute("SELECT key, crashes FROM suspects").fetchall())

    def crashes(self, key: str) -> int:
        """How many times the process died with this item in flight (0 for almost every item)."""
        return self._suspects.get(key, 0) if self._suspects else 0

    def quarantined(self) -> list[tuple[str, int]]:
        """(stage, item) of every quarantined item."""
        with self._lock, self._db_lock:
            rows = self._db.execute("SELECT stage, item FROM suspects WHERE crashes >= ?", (QUARANTINE_AFTER,))
            return [(stage, item) for stage, item in rows]

    def lookup(self, keys: list[str]) -> dict[str, tuple[str, str | None, str, str]]:
        """Stored rows (verdict, reason, outputs JSON, flags JSON) by key, for the keys that have one."""
        found: dict[str, tuple[str, str | None, str, str]] = {}
        with self._lock:
            for batch in (*self._commits.in_flight(), self._pending):  # recorded in this run, not committed yet
                pending = batch.results
                for key in keys if pending else ():
                    if key in pending:
                        row = pending[key]
                        found[key] = (row[3], row[4], row[5], row[6])
            self._look_up_stored(keys, found)
        return found

    def _look_up_stored(self, keys: list[str], found: dict[str, tuple[str, str | None, str, str]]) -> None:
        with self._db_lock:
            for start in range(0, len(keys), _SQL_VARS):
                part = keys[start : start + _SQL_VARS]
                marks = ",".join("?" * len(part))
                query = f"SELECT key, verdict, reason, outputs, flags FROM results WHERE key IN ({marks})"
                try:
                    for key, verdict, reason, outputs, flags in self._db.execute(query, part):
                        found[key] = (verdict, reason, outputs, flags)
                except sqlite3.Error as exc:
                    raise RunStoreError(store_failure(self.out_dir, exc)) from exc

    def begin(self, stage_id: str, entries: list[tuple[str, int]]) -> None:
        """Mark (key, item) entries in flight: committed before the stage runs them."""
        with self._lock:
            if self._closed:  # a batch abandoned after a stop signal: the run has ended
                return
            with self._db_lock, self._writing() as db:
                db.executemany("INSERT OR REPLACE INTO inflight VALUES (?, ?, ?)",
                               [(key, stage_id, item) for key, item in entries])

    def finish(self, stage_id: str, results: list[NewResult], keys: list[str]) -> None:
        """Record results and clear the in-flight markers (and crash counts) of `keys`, committed at once."""
        self._record(stage_id, results, keys, batched=False)

    def record(self, stage_id: str, results: list[NewResult]) -> None:
        """Record results of a crash-proof stage (no in-flight markers), committed together with
        others (`pending`): at most one commit per FLUSH_SECONDS (or FLUSH_ROWS), not one per
        micro-batch; each commit rewrites every page its random keys touch, and the template
        stages of product_copy spent more time committing than rendering. The commit itself runs on
        a thread of its own (store_commits.py). A kill loses at most FLUSH_SECONDS (and the batches
        waiting for that thread) of such cheap work, which the next run redoes."""
        self._record(stage_id, results, [], batched=True)

    def _record(self, stage_id: str, results: list[NewResult], keys: list[str], batched: bool) -> None:
        now = time.time()
        rows = [(r.key, stage_id, r.item, r.verdict, r.reason, r.outputs,
                 json.dumps(r.flags, ensure_ascii=False) if r.flags else "[]", now) for r in results]
        with self._lock:
            if self._closed:
                return
            self._pending.add(rows, keys)
            if not (batched and self.batched):
                self._flush()
            elif self._pending.due(self._last_commit):
                self._hand_over()

    def flush(self) -> None:
        """Commit every pending result now."""
        with self._lock:
            if not self._closed:
                self._flush()

    def _hand_over(self) -> None:
        """Give the pending results to the commit thread (with the lock held)."""
        pending, self._pending = self._pending, PendingResults()
        self._last_commit = time.monotonic()
        self._commits.submit(pending)

    def _flush(self) -> None:
        """Commit every pending result now, after those handed over (with the lock held)."""
        self._commits.drain()
        pending, self._pending = self._pending, PendingResults()
        if not pending.rows and not pending.keys:
            return
        self._last_commit = time.monotonic()
        self._commit(pending)

    def _commit(self, pending: PendingResults) -> None:
        # In key order (stable: of two results for one key the later wins, as before): each insert
        # lands next to the previous one in the B-tree (10.8 against 16.0 us a result, 65k at a time).
        pending.rows.sort(key=itemgetter(0))
        with self._db_lock, self._writing() as db:
            db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?)", pending.rows)
            params = [(key,) for key in pending.keys]
            db.executemany("DELETE FROM inflight WHERE key = ?", params)
            if self._suspects:
                db.executemany("DELETE FROM suspects WHERE key = ?", params)

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (with the lock held). A failure rolls it back, so the connection
        stays usable, and is a RunStoreError that says what to do (a full disk, a damaged file)."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise RunStoreError(store_failure(self.out_dir, exc)) from exc

    def counts(self) -> dict[str, int]:
        """Stored results per stage (for tests and the manifest)."""
        with self._lock:
            self._flush()
            with self._db_lock:
                return dict(self._db.execute("SELECT stage, COUNT(*) FROM results GROUP BY stage").fetchall())

    def release_in_flight(self) -> None:
        """After a run stopped by a signal: the in-flight markers left belong to batches abandoned
        after the grace period, no crash; they go, with the signal's note (signals.SIGNALLED_FILE)."""
        with self._lock:
            try:
                self._flush()  # the finished results first: the note goes only once they are in
                with self._db_lock:
                    self._db.execute("DELETE FROM inflight")
                (self.out_dir / SIGNALLED_FILE).unlink(missing_ok=True)
            except (sqlite3.Error, OSError, RunStoreError):
                pass  # a full disk or a damaged file: the note stays, and the next run discards them

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                with suppress(RunStoreError):  # a full disk: those results run again next time
                    self._flush()
                self._commits.stop()
                # Fold the WAL into run.sqlite now: a read-only reader (history) may close last, and
                # it cannot; run.sqlite alone then lacked every result (copying it lost them).
                with suppress(sqlite3.Error):
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._closed = True  # an abandoned batch's late begin/finish finds the run over
            self._db.close()
        unlock(self._lock_fd)
        self._lock_fd = None


def _mismatch(out_dir: Path, stored: dict[str, Any], wanted: dict[str, Any]) -> str:
    if stored.get("schema") == "1":
        what = "results keyed by row position (an older aigc-pipeline; now rows are keyed by identity)"
    elif stored.get("schema") != wanted.get("schema"):
        what = f"a run store of another format (version {stored.get('schema')}, this engine writes {SCHEMA_VERSION})"
    elif stored.get("pipeline") != wanted.get("pipeline"):
        what = f"results of pipeline '{stored.get('pipeline')}', not '{wanted.get('pipeline')}'"
    else:
        what = (f"results of pipeline '{wanted.get('pipeline')}' with other input columns "
                f"({_columns(stored)}; now {_columns(wanted)})")
    return (f"{out_dir / STORE_FILE} holds {what}; they cannot be reused. Run with --fresh to discard them, "
            "or give this run another --out")


def _columns(identity: dict[str, Any]) -> str:
    return ", ".join(f"{name}: {kind}" for name, kind in (identity.get("inputs") or {}).items()) or "none"
