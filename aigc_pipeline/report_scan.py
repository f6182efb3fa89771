"""Which rows a report shows, chosen while reading `results.jsonl` once, line by line.

A report of a million-row run must stay small and quick to open, and building it must not hold
the run in memory. So the scan keeps counts of everything, every row that needs looking at
(failed, filtered, rejected, flagged, rejected by a reviewer) up to a limit, and a uniform sample
(reservoir sampling, seeded: the same run gives the same sample) of the rows that simply passed.
What it leaves out is counted per status, so the page can say so and name the command that
shows more (`aigc report OUT --rows N|all`). Runs of at most `SHOW_ALL_UP_TO` rows show every row.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SHOW_ALL_UP_TO = 3000  # rows; a run this small shows every row
DEFAULT_ROWS = 1000  # otherwise: up to this many rows that need a look, and a sample of this many done rows
STATUS_ORDER = ("done", "filtered", "failed", "rejected", "not_run")


@dataclass
class Scan:
    """What one pass over results.jsonl found: counts, and the rows to show (in row order)."""

    total: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUS_ORDER, 0))
    flagged: int = 0
    reviews: dict[str, int] = field(default_factory=dict)  # approved / rejected / pending, when reviewed
    shown: list[dict[str, Any]] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=dict)  # status -> rows not shown
    limit: int | None = None  # None: every row is shown

    @property
    def complete(self) -> bool:
        return not self.left_out


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Each JSON object of a JSONL file, streamed; lines that are not objects are skipped."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError:
        return
    with handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


def scan_results(path: Path, rows: int | None = DEFAULT_ROWS) -> Scan:
    """Read results.jsonl once. `rows`: the limit per kind (needing a look, done); None shows all."""
    scanner = ResultsScanner(rows)
    for record in read_records(path):
        scanner.add(record)
    return scanner.finish()


class ResultsScanner:
    """The same scan, fed one result at a time: a run hands it every line it writes to
    results.jsonl, so its report needs no second pass over the file (that pass, re-parsing every
    line, cost as much as writing them). Rows kept for the page are kept as their JSON text and
    parsed at the end: what the page shows is exactly what the file holds."""

    def __init__(self, rows: int | None = DEFAULT_ROWS) -> None:
        self.scan = Scan(limit=rows)
        self.rows = rows
        self.everything: list[dict[str, Any] | str] = []  # every row, while the run is small enough to show whole
        self.trouble: list[dict[str, Any] | str] = []
        self.sample = _Reservoir(rows or 0, random.Random(0))

    def add(self, record: dict[str, Any], line: str | None = None) -> None:
        """Count one row; `line`: its JSON text, kept instead of `record` if the row is shown.
        Rows that need a look come first: anything but a plain, unflagged, not rejected success."""
        scan, rows = self.scan, self.rows
        scan.total += 1
        status, flags, review = record.get("status"), record.get("flags"), record.get("review")
        status = status if type(status) is str else str(status)
        scan.counts[status] = scan.counts.get(status, 0) + 1
        if flags:
            scan.flagged += 1
        if isinstance(review, str):
            scan.reviews[review] = scan.reviews.get(review, 0) + 1
        kept = record if line is None else line
        if rows is None or scan.total <= SHOW_ALL_UP_TO:
            self.everything.append(kept)
        elif self.everything:  # too many to show whole: only the chosen rows are kept
            self.everything = []
        if rows is not None:
            if status == "done" and not flags and review != "rejected":
                self.sample.offer(kept)
            elif len(self.trouble) < rows:
                self.trouble.append(kept)

    def finish(self) -> Scan:
        scan = self.scan
        if self.rows is None or scan.total <= SHOW_ALL_UP_TO:
            scan.shown, scan.limit = _parsed(self.everything), None
            return scan
        scan.shown = sorted(_parsed(self.trouble + self.sample.items), key=lambda r: r.get("row", 0))
        shown_counts: dict[str, int] = {}
        for record in scan.shown:
            status = str(record.get("status"))
            shown_counts[status] = shown_counts.get(status, 0) + 1
        scan.left_out = {s: n - shown_counts.get(s, 0) for s, n in scan.counts.items() if n > shown_counts.get(s, 0)}
        return scan


def _parsed(kept: list[dict[str, Any] | str]) -> list[dict[str, Any]]:
    return [json.loads(item) if isinstance(item, str) else item for item in kept]


class _Reservoir:
    """A uniform sample of at most `size` of the items offered, in bounded memory. Algorithm L
    (Li, 1994): it draws how many items to skip before the next one it takes, so a million-row run
    costs a few thousand random draws, not one per row (Algorithm R's)."""

    def __init__(self, size: int, rng: random.Random) -> None:
        self.size, self.rng, self.seen = size, rng, 0
        self.items: list[Any] = []
        self.weight = 1.0
        self.next = 0  # the number (1-based) of the next item taken once the sample is full

    def offer(self, item: Any) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
            if len(self.items) == self.size:
                self._skip()
        elif self.seen == self.next:
            self.items[self.rng.randrange(self.size)] = item
            self._skip()

    def _skip(self) -> None:
        rng = self.rng
        self.weight *= math.exp(math.log(1.0 - rng.random()) / self.size)
        gap = math.floor(math.log(1.0 - rng.random()) / math.log1p(-self.weight)) if self.weight < 1.0 else 0
        self.next = self.seen + gap + 1
