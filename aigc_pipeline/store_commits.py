"""Commits of a run store's batched results, on a thread of their own (see `RunStore.record`).

A commit is SQLite work (inserting a few thousand results into the B-tree, writing the WAL), and
SQLite lets go of the GIL while it does it. Done by the stage thread whose micro-batch made the
batch due, it stalled that stage (product_copy's two template stages spent about as long
committing as rendering); done here, it overlaps the stages' Python work on another core.

Batches are committed one at a time, in the order they were handed over, so of two results for one
key the later still wins. A batch stays visible to lookups (`in_flight`) until its commit is done.
At most `most_waiting` batches wait: a producer faster than the disk waits too, so memory stays
bounded. A failed commit (a full disk) is kept and raised to the next caller that hands a batch
over or waits for the commits (`drain`), so the run stops with the store's own message.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from .errors import RunStoreError
from .store_pending import PendingResults


class BackgroundCommits:
    """A thread that commits the batches handed to it with `commit`, in order."""

    def __init__(self, commit: Callable[[PendingResults], None], most_waiting: int = 2) -> None:
        self._commit = commit
        self._most_waiting = most_waiting
        self._batches: deque[PendingResults] = deque()  # handed over, not committed yet (the first: committing)
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.failure: RunStoreError | None = None

    def submit(self, batch: PendingResults) -> None:
        """Hand a batch over; waits while `most_waiting` batches wait. Raises an earlier failure."""
        with self._condition:
            self._raise()
            while len(self._batches) >= self._most_waiting:
                self._condition.wait()
                self._raise()
            self._batches.append(batch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="aigc-store-commits", daemon=True)
                self._thread.start()
            self._condition.notify_all()

    def in_flight(self) -> list[PendingResults]:
        """The batches handed over and not committed yet, oldest first."""
        with self._condition:
            return list(self._batches)

    def drain(self) -> None:
        """Wait until every batch handed over is committed; raise the first failure, if any."""
        with self._condition:
            while self._batches:
                self._condition.wait()
            self._raise()

    def stop(self) -> None:
        """Commit what was handed over, then end the thread (failures are kept, not raised)."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _raise(self) -> None:
        if self.failure is not None:
            raise RunStoreError(str(self.failure)) from self.failure

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._batches and not self._stopping:
                    self._condition.wait()
                if not self._batches:
                    return
                batch = self._batches[0]
            try:
                self._commit(batch)
            except RunStoreError as exc:
                with self._condition:
                    self.failure = self.failure or exc
            except Exception as exc:  # the engine's own error: still the run's to see, never a silent loss
                with self._condition:
                    self.failure = self.failure or RunStoreError(f"the run store failed: {type(exc).__name__}: {exc}")
            finally:
                with self._condition:
                    self._batches.popleft()
                    self._condition.notify_all()
