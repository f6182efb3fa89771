"""The files of a run store: `run.sqlite` and the lock that keeps two runs out of one folder, how
a connection to it is made, and what to tell the user when the file is damaged or the disk fails."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from .errors import RunStoreError

STORE_FILE = "run.sqlite"
LOCK_FILE = ".run.lock"


def check_integrity(db: sqlite3.Connection) -> None:
    """Raise sqlite3.DatabaseError when the store file is damaged (a truncated or garbled file reads
    as a store until a lookup hits the damage, half-way through a run)."""
    problems = [row[0] for row in db.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        raise sqlite3.DatabaseError("; ".join(problems[:3]))


def damaged(out_dir: Path, exc: sqlite3.Error) -> str:
    return (f"the run store {out_dir / STORE_FILE} is damaged ({exc}); its results cannot be trusted. "
            "Run again with --fresh to discard it (every row runs again), or give this run another --out")


def store_failure(out_dir: Path, exc: sqlite3.Error) -> str:
    """What to do when the store fails during a run: free space, or start it over."""
    text = str(exc)
    if "full" in text or "disk I/O" in text:  # SQLite says "disk I/O error" when the WAL index cannot grow
        return (f"the run store {out_dir / STORE_FILE} failed: {text}; free space there (or check the disk) and run "
                "the same command again (what was recorded is kept)")
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return damaged(out_dir, exc)
    return f"the run store {out_dir / STORE_FILE} failed: {text}"


def connect(out_dir: Path) -> sqlite3.Connection:
    """A connection that waits up to a minute for another writer: a run's Ray workers each have one.
    Transactions start with BEGIN IMMEDIATE, so a busy store makes a writer wait, never fail at
    the upgrade from reading to writing."""
    return sqlite3.connect(out_dir / STORE_FILE, check_same_thread=False, isolation_level=None, timeout=60)


def lock_folder(out_dir: Path) -> int | None:
    try:
        import fcntl
    except ImportError:  # not on POSIX: no guard against two runs in one folder
        return None
    fd = os.open(out_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise RunStoreError(f"another aigc run is using the output folder {out_dir}; wait for it, "
                            "or give this run another --out") from None
    return fd


def unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock

