"""Results a run store holds back to commit together (see `RunStore.record`)."""

from __future__ import annotations

import time
from typing import Any

FLUSH_SECONDS = 0.2  # results of quick micro-batches are committed together, at most this late
FLUSH_ROWS = 8192


class PendingResults:
    """Results finished since the last commit."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.keys: list[str] = []  # in-flight markers to clear
        self.results: dict[str, tuple[Any, ...]] = {}  # key -> row, for lookups before the commit

    def add(self, rows: list[tuple[Any, ...]], keys: list[str]) -> None:
        self.rows.extend(rows)
        self.keys.extend(keys)
        self.results.update((row[0], row) for row in rows)

    def due(self, last_commit: float) -> bool:
        """Commit now: the last commit is FLUSH_SECONDS old (so a slow stage commits every batch,
        and the first batch at once), or FLUSH_ROWS results wait."""
        return len(self.rows) >= FLUSH_ROWS or time.monotonic() - last_commit >= FLUSH_SECONDS
