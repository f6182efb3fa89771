"""A Ray worker's view of the run store: it reads, the driver writes.

On a cluster `--out` lies on network storage, where SQLite's locking and WAL mode do not work
(SQLite's own documentation): several processes writing `run.sqlite` there risk a corrupt store.
So a worker opens the store read-only (`mode=ro`) for its lookups, and keeps what it would have
recorded (`finish`) to send back with its batch; the driver, the store's only writer, commits it
(`commit_to`) when the batch comes back. Artifacts are still written by the workers, into the
output folder, before their records travel: a recorded artifact is always complete.

In-flight markers (`begin`) are the driver's concern only: a worker that dies is Ray's to retry.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .store import STORE_FILE, NewResult, RunStore

Records = list[tuple[str, list[NewResult], list[str]]]  # (stage, results, keys) per micro-batch


class WorkerStore(RunStore):
    """Lookups through a read-only connection; writes kept for the driver (`take`)."""

    pending: Records

    @classmethod
    def attach(cls, out_dir: Path) -> WorkerStore:
        uri = f"{(out_dir / STORE_FILE).resolve().as_uri()}?mode=ro"
        db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None, timeout=60)
        store = cls(out_dir, db, None)
        store.pending = []
        store._suspects = dict(db.execute("SELECT key, crashes FROM suspects").fetchall())
        return store

    def begin(self, stage_id: str, entries: list[tuple[str, int]]) -> None:
        """No marker from a worker (see the module's docstring)."""

    def finish(self, stage_id: str, results: list[NewResult], keys: list[str]) -> None:
        self.pending.append((stage_id, results, keys))

    def record(self, stage_id: str, results: list[NewResult]) -> None:
        self.pending.append((stage_id, results, []))

    def take(self) -> Records:
        """What this worker would have recorded since the last call, for the driver."""
        taken, self.pending = self.pending, []
        return taken


def commit_to(store: RunStore | None, records: Records) -> None:
    """The driver's side: record what a worker sent back, one commit per micro-batch as locally."""
    if store is None:
        return
    for stage_id, results, keys in records:
        store.finish(stage_id, results, keys)
